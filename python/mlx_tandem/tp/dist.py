"""Starting MLX's distributed backend from `tandem launch` flags (no separate mlx.launch).

ring (TCP; every platform): MLX reads MLX_RANK and MLX_HOSTFILE, a JSON file listing each rank's
"ip:port" (a list per rank), and rank i connects to its ring neighbours. We write that file from
--hostfile (MLX's own format, passed through) or from --hosts ADDR0,ADDR1 (default: --master-addr
for every rank, i.e. one machine) with ports --master-port + rank.
jaccl (RDMA over Thunderbolt 5, macOS): MLX reads MLX_RANK, MLX_JACCL_COORDINATOR (rank 0's
--master-addr:--master-port) and MLX_IBV_DEVICES, a JSON file of the RDMA device each rank uses to
reach each other rank (null on the diagonal), given with --ibv-devices.
any: jaccl where it is available and configured, else ring.

Neither backend authenticates its peers, so they are allowed only on loopback or on a private link
the user names (--private-link CIDR); the authenticated TCP pipeline (--mode pp) is for anything else.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile

import mlx.core as mx

BACKENDS = ("ring", "jaccl", "any")


def ring_hosts(hostfile: str | None, hosts: str | None, master_addr: str, master_port: int, world: int):
    """[[ "ip:port", ...] per rank] from MLX's hostfile or --hosts / --master-addr."""
    if hostfile:
        with open(hostfile) as f:
            try:
                table = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"tensor parallel: {hostfile} is not JSON: {e}") from None
        if not (isinstance(table, list) and all(isinstance(r, list) and r and all(isinstance(a, str) for a in r)
                                                 for r in table)):
            raise ValueError(f"tensor parallel: {hostfile} must be MLX's ring hostfile: a JSON list with one "
                             f'list of "ip:port" strings per rank')
        if len(table) != world:
            raise ValueError(f"tensor parallel: {hostfile} lists {len(table)} ranks, --nnodes is {world}")
        return table
    addrs = hosts.split(",") if hosts else [master_addr] * world
    if len(addrs) != world:
        raise ValueError(f"tensor parallel: --hosts names {len(addrs)} addresses for {world} ranks")
    return [[f"{a.strip()}:{master_port + r}"] for r, a in enumerate(addrs)]


def check_private(addresses: list[str], private_link: str | None) -> None:
    """The backends are unauthenticated: every address must be loopback or inside `private_link`."""
    net = None
    if private_link:
        try:
            net = ipaddress.ip_network(private_link, strict=False)
        except ValueError as e:
            raise ValueError(f"tensor parallel: --private-link {private_link!r}: {e}") from None
    for a in addresses:
        host = a.rsplit(":", 1)[0].strip("[]")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"tensor parallel: {host!r} is not an IP address (MLX's backends take IPs)") from None
        if ip.is_loopback or (net is not None and ip in net):
            continue
        raise ValueError(
            f"tensor parallel: {host} is neither loopback nor inside --private-link "
            f"{private_link or '(not given)'}. MLX's ring and JACCL backends do not authenticate their peers: "
            f"run them only on a private link you name with --private-link CIDR (e.g. a Thunderbolt "
            f"bridge's subnet), or use --mode pp, whose TCP pipeline authenticates both ends")


def _write_temp(content: str, prefix: str) -> str:
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(content)
    return path


def init(backend: str, rank: int, world: int, *, hostfile=None, hosts=None, master_addr="127.0.0.1",
         master_port=29500, ibv_devices=None, private_link=None):
    """(group, backend name, {peer rank: address}). Sets the environment MLX's backend reads, then
    mx.distributed.init(strict=True), so a backend that cannot start is an error, not a group of one."""
    if backend not in BACKENDS:
        raise ValueError(f"tensor parallel: --backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not 0 <= rank < world:
        raise ValueError(f"tensor parallel: --node-rank {rank} is outside 0..{world - 1}")
    order = ["jaccl", "ring"] if backend == "any" else [backend]
    tried = []
    for name in order:
        if not mx.distributed.is_available(name):
            tried.append(f"{name}: not in this MLX build")
            continue
        if name == "jaccl" and not ibv_devices:
            tried.append("jaccl: needs --ibv-devices")
            continue
        os.environ["MLX_RANK"] = str(rank)
        if name == "ring":
            table = ring_hosts(hostfile, hosts, master_addr, master_port, world)
            check_private([a for r in table for a in r], private_link)
            os.environ["MLX_HOSTFILE"] = _write_temp(json.dumps(table), "tandem-ring-")
            peers = {r: ",".join(a) for r, a in enumerate(table)}
        else:
            check_private([master_addr], private_link)
            os.environ["MLX_JACCL_COORDINATOR"] = f"{master_addr}:{master_port}"
            os.environ["MLX_IBV_DEVICES"] = ibv_devices if os.path.isfile(ibv_devices) else \
                _write_temp(ibv_devices, "tandem-ibv-")
            peers = {0: f"coordinator {master_addr}:{master_port}"}
        try:
            group = mx.distributed.init(strict=True, backend=name)
        except RuntimeError as e:
            raise ValueError(f"tensor parallel: the MLX {name} backend did not start: {e}") from None
        if group.size() != world or group.rank() != rank:
            raise ValueError(f"tensor parallel: the {name} backend made rank {group.rank()} of {group.size()}, "
                             f"expected rank {rank} of {world}")
        return group, name, peers
    raise ValueError(f"tensor parallel: no backend available for --backend {backend} ({'; '.join(tried)})")
