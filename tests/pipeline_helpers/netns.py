"""Two network namespaces joined by a veth pair: two "hosts" on one machine (needs root and iproute2).

The root namespace is never touched: both ends of the veth live in the namespaces, addressed from a
private /24 picked per run. `tbf` shapes a slow link (the kernel here has no netem); latency comes from
relay.py, a delaying TCP relay.
"""

import os
import random
import shutil
import subprocess


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def unavailable_reason():
    """None if namespaces can be made here, else why not (the tests skip with it)."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"tdmprobe{os.getpid()}"
    r = _ip("netns", "add", name, check=False)
    if r.returncode != 0:
        return f"ip netns add is not permitted here: {r.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


class TwoHosts:
    def __init__(self):
        tag = f"{os.getpid() % 10000}{random.randint(0, 99)}"
        self.ns = (f"tdmA{tag}", f"tdmB{tag}")
        self.dev = (f"vA{tag}", f"vB{tag}")
        net = random.randint(16, 250)
        self.addr = (f"10.213.{net}.1", f"10.213.{net}.2")
        try:
            for ns in self.ns:
                _ip("netns", "add", ns)
                self.exec_ok(ns, "ip", "link", "set", "lo", "up")
            _ip("link", "add", self.dev[0], "netns", self.ns[0], "type", "veth", "peer", "name", self.dev[1],
                "netns", self.ns[1])
            for ns, dev, addr in zip(self.ns, self.dev, self.addr):
                self.exec_ok(ns, "ip", "addr", "add", f"{addr}/24", "dev", dev)
                self.exec_ok(ns, "ip", "link", "set", dev, "up")
        except BaseException:
            self.close()
            raise

    def cmd(self, host, *argv):
        """argv run inside host 0 or 1."""
        return ["ip", "netns", "exec", self.ns[host], *argv]

    def exec_ok(self, ns, *argv):
        subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True)

    def shape(self, rate="1gbit"):
        """A slow link: both directions limited to `rate` with a token bucket."""
        for ns, dev in zip(self.ns, self.dev):
            self.exec_ok(ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "256kb",
                         "latency", "100ms")

    def link(self, up: bool):
        self.exec_ok(self.ns[1], "ip", "link", "set", self.dev[1], "up" if up else "down")

    def close(self):
        for ns in self.ns:  # deleting a namespace deletes its end of the veth, and so the pair
            _ip("netns", "del", ns, check=False)
