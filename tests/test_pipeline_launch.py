"""The real model through two ranks: `tandem launch` processes, exact greedy tokens, fingerprints, policy."""

import os
import socket
import subprocess
import sys

import mlx.core as mx
import pytest

from mlx_tandem.checkpoint import Checkpoint, load_model, read_config
from mlx_tandem.generate import generate_step
from mlx_tandem.pipeline import auth, partition
from mlx_tandem.pipeline.pipeline import Pipeline
from pipeline_helpers.tiny_llama import LAYERS, tiny_llama

SECRET_ENV = {**os.environ, auth.SECRET_ENV: "launch-test-secret"}
PROMPT = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(rank, port, model, *extra, env=SECRET_ENV):
    cmd = [sys.executable, "-m", "mlx_tandem", "launch", "--node-rank", str(rank), "--master-port", str(port),
           "--model", model, "--timeout", "5", "--connect-timeout", "20", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.mark.parametrize("split, chunk", [(1, 4), (3, 512), (5, 6)])
def test_greedy_tokens_equal_single_process(tiny, split, chunk):
    """Rank 1 is a `tandem launch` process; rank 0 is the Pipeline API in this process."""
    full, _ = load_model(tiny, dtype="float32")
    ref = generate_step(full, mx.array(PROMPT), prefill_step=chunk)
    want = [next(ref) for _ in range(10)]
    ref.close()

    config = read_config(tiny)
    desc = partition.describe(config, partition.tensor_bytes(Checkpoint(tiny)), split)
    listener = auth.Listener("127.0.0.1", 0, auth.Credentials(b"launch-test-secret", desc), timeout=5)
    rank1 = launch(1, listener.address[1], tiny, "--split", str(split), "--dtype", "float32")
    try:
        first, _ = load_model(tiny, layer_range=(0, split), dtype="float32")
        with Pipeline(first, listener.accept(20), prefill_chunk=chunk) as pipe:
            got = pipe.generate_batch([PROMPT, PROMPT[:4]], 10)
            assert got[0] == want
            alone, _ = load_model(tiny, dtype="float32")
            ref2 = generate_step(alone, mx.array(PROMPT[:4]), prefill_step=chunk)
            assert got[1] == [next(ref2) for _ in range(10)]
        out, err = rank1.communicate(timeout=20)
        assert rank1.returncode == 0, err
        assert f"layers [{split}, {LAYERS})" in err
    finally:
        if rank1.poll() is None:
            rank1.kill()
        listener.close()


def test_mismatched_split_is_refused_on_both_ranks(tiny):
    port = free_port()
    r0 = launch(0, port, tiny, "--split", "2", "--prompt", "x")
    r1 = launch(1, port, tiny, "--split", "4")
    (_, err0), (_, err1) = r0.communicate(timeout=30), r1.communicate(timeout=30)
    assert (r0.returncode, r1.returncode) == (1, 1), (err0, err1)
    for err in (err0, err1):
        assert "fingerprint mismatch" in err and "split=2" in err and "split=4" in err


def test_public_address_without_secret_is_refused(tiny):
    env = {k: v for k, v in os.environ.items() if k != auth.SECRET_ENV}
    p = launch(0, free_port(), tiny, "--master-addr", "0.0.0.0", "--prompt", "x", env=env)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 1 and "--insecure-no-auth" in err


@pytest.fixture(scope="module")
def demo_path():
    from mlx_tandem import demo_model

    try:
        demo_model.demo_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return demo_model.demo_model_path(progress=False)


def test_launch_prints_exactly_the_single_process_text(demo_path):
    single = subprocess.run([sys.executable, "-m", "mlx_tandem", "generate", "--model", demo_path, "--prompt",
                             "The capital of France is", "--max-tokens", "12"], capture_output=True, text=True,
                            timeout=120)
    assert single.returncode == 0, single.stderr
    port = free_port()
    r1 = launch(1, port, demo_path)
    r0 = launch(0, port, demo_path, "--prompt", "The capital of France is", "--max-tokens", "12")
    (out0, err0), (_, err1) = r0.communicate(timeout=120), r1.communicate(timeout=120)
    assert (r0.returncode, r1.returncode) == (0, 0), (err0, err1)
    assert out0 == single.stdout and "Paris" in out0  # rank 0's stdout holds only the generated text
    assert "peak RSS" in err0 and "peak RSS" in err1


def test_interactive_rank0_answers_each_line(tiny):
    port = free_port()
    r1 = launch(1, port, tiny)
    r0 = subprocess.Popen([sys.executable, "-m", "mlx_tandem", "launch", "--node-rank", "0", "--master-port", str(port),
                           "--model", tiny, "--interactive", "--max-tokens", "3", "--timeout", "5"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=SECRET_ENV)
    out0, err0 = r0.communicate("w1 w2 w3\n\nw4 w5\n", timeout=60)
    _, err1 = r1.communicate(timeout=30)
    assert (r0.returncode, r1.returncode) == (0, 0), (err0, err1)
    assert len(out0.splitlines()) == 2 and err0.count("generation: 3 tokens") == 2  # the empty line is skipped
    assert "after 6 requests" in err1
