"""Rank 1 as a real process against a Listener on an ephemeral loopback port.

MLX streams are per thread (arrays made in one thread cannot be evaluated in another), so rank 1 never
runs as a thread of the test process: it is always a separate process, as in real use.
"""

import os
import subprocess
import sys

import mlx.core as mx

from mlx_tandem.pipeline import auth
from mlx_tandem.pipeline.pipeline import Pipeline

from .rank1 import toy_description
from .toy import CONFIG, ToyModel

RANK1 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rank1.py")
SECRET = b"correct horse battery staple"
TIMEOUT = 1.5  # the peer deadline used throughout the tests


def make_listener(secret=SECRET, split=3, timeout=TIMEOUT):
    creds = auth.Credentials(secret, toy_description(split))
    return auth.Listener("127.0.0.1", 0, creds, timeout=timeout, handshake_timeout=timeout)


def spawn_rank1(port, *args, secret=SECRET, split=3, dtype="float32"):
    cmd = [sys.executable, RANK1, str(port), "--timeout", str(TIMEOUT), "--split", str(split), "--dtype", dtype, *args]
    if secret:
        cmd += ["--secret", secret.decode()]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc):
    if proc.poll() is None:
        proc.kill()
    return proc.communicate(timeout=10)


def rank0(listener, split=3, dtype=mx.float32, deadline=20, **kwargs):
    conn = listener.accept(deadline)
    return Pipeline(ToyModel(CONFIG, (0, split), dtype), conn, **kwargs)


class Ranks:
    """A listener plus a rank-1 process that redials after every session (`tandem launch` behaviour),
    so a test module pays the process start once per (split, dtype)."""

    def __init__(self, split=3, dtype="float32"):
        self.split, self.dtype = split, dtype
        self.listener = make_listener(split=split)
        self.proc = spawn_rank1(self.listener.address[1], "--serve-forever", split=split, dtype=dtype)

    def pipeline(self, **kwargs):
        return rank0(self.listener, self.split, getattr(mx, self.dtype), **kwargs)

    def close(self):
        out = stop(self.proc)
        self.listener.close()
        return out
