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


def _launch(rank, port, model, *extra):
    cmd = [sys.executable, "-m", "mlx_tandem", "launch", "--mode", "tp", "--backend", "ring", "--node-rank", str(rank),
           "--master-port", str(port), "--model", model, "--max-tokens", "8", "--timeout", "10", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_launch_tp_prints_single_process_text(models):
    """`tandem launch --mode tp` starts the ring backend itself, says which backend it got, and rank 0's
    text equals `tandem generate` (the checkpoint's bf16 activations: greedy tokens still agree here)."""
    want = subprocess.run([sys.executable, "-m", "mlx_tandem", "generate", "--model", models["llama"], "--prompt",
                           "w3 w4 w5", "--max-tokens", "8"], capture_output=True, text=True, check=True).stdout
    port = free_port_pair()
    procs = [_launch(0, port, models["llama"], "--prompt", "w3 w4 w5"), _launch(1, port, models["llama"])]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "MLX distributed backend 'ring'" in err and "collectives/token" in err
    assert outs[0][0] == want and outs[1][0] == ""


def test_launch_refuses_ring_off_loopback_without_private_link(models):
    p = _launch(0, 29500, models["llama"], "--prompt", "w1", "--hosts", "192.168.7.1,192.168.7.2")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1 and "do not authenticate" in err and "--private-link" in err


def test_private_link_admits_only_its_network():
    from mlx_tandem.tp import dist

    dist.check_private(["127.0.0.1:1", "10.9.0.1:2", "10.9.0.2:3"], "10.9.0.0/30")
    with pytest.raises(ValueError, match="10.9.0.9 is neither loopback nor inside --private-link 10.9.0.0/30"):
        dist.check_private(["10.9.0.1:2", "10.9.0.9:3"], "10.9.0.0/30")


@pytest.mark.parametrize("config, message", [
    (llama_config(num_attention_heads=3, num_key_value_heads=1, head_dim=128),
     "num_attention_heads = 3 does not divide evenly over 2 ranks"),
    (llama_config(num_key_value_heads=1), "num_key_value_heads = 1 does not divide evenly over 2 ranks"),
    (llama_config(head_dim=64, num_key_value_heads=2),
     "num_key_value_heads = 2 over 2 ranks gives 1 per rank = 64 k_proj / v_proj rows per rank, not a multiple "
     "of the FP8 scale block 128"),
    (llama_config(intermediate_size=384), "intermediate_size = 384 over 2 ranks gives 192 per rank"),
    (deepseek_config(num_attention_heads=2, qk_nope_head_dim=32, qk_rope_head_dim=16),
     "num_attention_heads = 2 over 2 ranks gives 1 per rank = 48 q_b_proj rows per rank"),
    (deepseek_config(moe_intermediate_size=128), "moe_intermediate_size = 128 over 2 ranks gives 64 per rank"),
])
def test_uneven_shards_refused_before_loading(config, message):
    from mlx_tandem.tp import ShardError, ShardPlan

    with pytest.raises(ShardError, match=message.replace("(", r"\(")):
        ShardPlan.build(config, 0, 2)


def test_uneven_heads_refused_by_launch_before_reading_weights(tmp_path):
    path = write_llama(tmp_path / "m", llama_config(num_attention_heads=3, num_key_value_heads=1))
    os.remove(os.path.join(path, "model.safetensors"))  # nothing may be read: the plan fails first
    port = free_port_pair()
    procs = [_launch(0, port, path, "--prompt", "w1"), _launch(1, port, path)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 1 and "num_attention_heads = 3 does not divide evenly over 2 ranks" in err


@pytest.mark.parametrize("axis", [0, 1])
def test_slice_reads_only_the_shard(tmp_path, axis):
    from mlx_tandem import safetensors_io

    a = np.arange(6 * 10, dtype=np.float32).reshape(6, 10)
    safetensors_io.save(str(tmp_path / "t.safetensors"), {"w": a})
    f = safetensors_io.SafetensorsFile(str(tmp_path / "t.safetensors"))
    got = np.array(f.get_slice("w", axis, 2, 3))
    np.testing.assert_array_equal(got, a[2:5] if axis == 0 else a[:, 2:5])
    with pytest.raises(ValueError, match="cannot read"):
        f.get_slice("w", axis, 5, 3 + (6 if axis else 2))


def test_memory_per_rank_is_about_half(tmp_path):
    """Resident memory gained over loading a 128 MB model: each rank about half the single process."""
    cfg = llama_config(hidden_size=1024, num_hidden_layers=8, intermediate_size=4096, num_attention_heads=8,
                       num_key_value_heads=8)
    path = write_llama(tmp_path / "m", cfg)
    single = result(spawn(-1, 0, path, 2))["rss_growth"]
    ranks = [r["rss_growth"] for r in run_ranks(path, 2)]
    for r in ranks:
        assert 0.4 < r / single < 0.62, (ranks, single)
