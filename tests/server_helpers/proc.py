"""`tandem serve` as a real process on an ephemeral loopback port, and an openai client for it."""

import os
import re
import subprocess
import sys
import time

import httpx
from openai import OpenAI


class Server:
    def __init__(self, *args, env=None, ready_timeout=180):
        cmd = [sys.executable, "-m", "mlx_tandem", "serve", "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.log = []
        end = time.monotonic() + ready_timeout
        while time.monotonic() < end:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError(f"tandem serve exited ({self.proc.wait()}):\n{''.join(self.log)}")
            self.log.append(line)
            m = re.search(r"on http://([\d.]+):(\d+)/v1", line)
            if m:
                self.url = f"http://{m.group(1)}:{m.group(2)}"
                break
        else:
            raise RuntimeError("tandem serve did not start:\n" + "".join(self.log))
        # keep draining stderr so the server never blocks on a full pipe
        import threading
        threading.Thread(target=lambda: [self.log.append(l) for l in self.proc.stderr], daemon=True).start()

    def client(self, api_key="anything", **kw) -> OpenAI:
        return OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=120, **kw)

    def http(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kw)

    def metric(self, name: str, labels: str = "", api_key=None) -> float:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        text = httpx.get(self.url + "/metrics", headers=headers, timeout=30).text
        m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def wait_metric(self, name, labels, want, timeout=20.0) -> float:
        end = time.monotonic() + timeout
        while True:
            v = self.metric(name, labels)
            if want(v) or time.monotonic() > end:
                return v
            time.sleep(0.1)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return "".join(self.log)
