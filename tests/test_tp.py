"""Tensor parallelism over MLX's ring backend: two ranks as two processes on 127.0.0.1."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from mlx_tandem.tp import EXIT_COLLECTIVE_FAILED, EXIT_COLLECTIVE_TIMEOUT
from tp_helpers.ckpt import deepseek_config, llama_config, write_deepseek, write_llama

WORKER = os.path.join(os.path.dirname(__file__), "tp_helpers", "worker.py")


def free_port_pair():
    """A port p with p and p + 1 free (the ranks listen on master_port + rank)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port pair")


def spawn(rank, port, model, n, env=None):
    return subprocess.Popen([sys.executable, WORKER, str(rank), str(port), model, str(n)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def result(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def run_ranks(model, n):
    port = free_port_pair()
    procs = [spawn(r, port, model, n) for r in (0, 1)]
    return [result(p) for p in procs]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("tp")
    return {"llama": write_llama(d / "llama", llama_config()),
            "llama-tied": write_llama(d / "llama-tied", llama_config(tie_word_embeddings=True), seed=1),
            "deepseek": write_deepseek(d / "deepseek", deepseek_config())}


@pytest.mark.parametrize("name", ["llama", "llama-tied", "deepseek"])
def test_greedy_tokens_equal_single_process(models, name):
    """float32 activations: the same greedy tokens, logits equal up to the all_sum's float32 rounding."""
    single = result(spawn(-1, 0, models[name], 10))
    ranks = run_ranks(models[name], 10)
    for r in ranks:
        assert r["backend"] == "ring"
        assert r["tokens"] == single["tokens"]
        np.testing.assert_allclose(r["logits"], single["logits"], rtol=1e-4, atol=1e-4 * np.abs(single["logits"]).max())
        assert r["collectives"] > 0
    assert ranks[0]["logits"] == ranks[1]["logits"]  # every rank samples from the same logits


def _wait_tokens(proc, n):
    for _ in range(n):
        line = proc.stdout.readline()
        assert line, proc.stderr.read()


@pytest.mark.parametrize("how, code", [("kill", EXIT_COLLECTIVE_FAILED), ("stop", EXIT_COLLECTIVE_TIMEOUT)])
def test_lost_peer_is_a_clear_error_within_the_deadline(models, how, code):
    """Rank 1 killed (its sockets close: MLX raises) or stopped (silent: only the watchdog can tell)
    mid-generation: rank 0 exits with its own code and a message naming the peer, no hang."""
    port = free_port_pair()
    env = {"TP_TEST_TIMEOUT": "3"}
    r0, r1 = (spawn(r, port, models["llama"], 100000, env) for r in (0, 1))
    try:
        _wait_tokens(r0, 3)
        t = time.monotonic()
        r1.send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        _, err = r0.communicate(timeout=20)
        elapsed = time.monotonic() - t
    finally:
        for p in (r0, r1):
            if p.poll() is None:
                p.kill()
            p.wait()
    assert r0.returncode == code, err
    assert "peer rank 1 (127.0.0.1:" in err
    assert ("CollectiveFailed" if how == "kill" else "CollectiveTimeout") in err
    assert elapsed < 3 + 5
