"""DeepSeek-V3 through two ranks: greedy tokens equal single-process ones, from the Python API and from
`tandem generate` / `tandem launch` (the tiny transformers golden, with a word tokenizer added)."""

import os
import shutil
import subprocess
import sys

import mlx.core as mx
import pytest

from mlx_tandem.checkpoint import Checkpoint, load_model, read_config
from mlx_tandem.generate import generate_step
from mlx_tandem.pipeline import auth, partition
from mlx_tandem.pipeline.pipeline import Pipeline
from pipeline_helpers.tiny_llama import word_tokenizer
from test_pipeline_launch import SECRET_ENV, free_port, launch

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "deepseek_v3")
PROMPT = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    path = tmp_path_factory.mktemp("ds") / "deepseek_v3"
    shutil.copytree(GOLDEN, path)
    word_tokenizer(read_config(str(path))["vocab_size"]).save(str(path / "tokenizer.json"))
    return str(path)


@pytest.mark.parametrize("split, chunk", [(1, 4), (2, 512)])
def test_greedy_tokens_equal_single_process(ds, split, chunk):
    full, _ = load_model(ds)
    ref = generate_step(full, mx.array(PROMPT), prefill_step=chunk)
    want = [next(ref) for _ in range(12)]
    ref.close()
    desc = partition.describe(read_config(ds), partition.tensor_bytes(Checkpoint(ds)), split)
    listener = auth.Listener("127.0.0.1", 0, auth.Credentials(b"launch-test-secret", desc), timeout=5)
    rank1 = launch(1, listener.address[1], ds, "--split", str(split))
    try:
        first, _ = load_model(ds, layer_range=(0, split))
        with Pipeline(first, listener.accept(20), prefill_chunk=chunk) as pipe:
            got = pipe.generate_batch([PROMPT, PROMPT[:3]], 12)
        assert got[0] == want
        short = generate_step(full, mx.array(PROMPT[:3]), prefill_step=chunk)
        assert got[1] == [next(short) for _ in range(12)]
        _, err = rank1.communicate(timeout=30)
        assert rank1.returncode == 0, err
    finally:
        if rank1.poll() is None:
            rank1.kill()
        listener.close()


def test_launch_prints_the_single_process_text(ds):
    prompt = " ".join(f"w{t}" for t in PROMPT)
    single = subprocess.run([sys.executable, "-m", "mlx_tandem", "generate", "--model", ds, "--prompt", prompt,
                             "--max-tokens", "10"], capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr
    port = free_port()
    r1 = launch(1, port, ds)
    r0 = launch(0, port, ds, "--prompt", prompt, "--max-tokens", "10")
    (out0, err0), (_, err1) = r0.communicate(timeout=120), r1.communicate(timeout=120)
    assert (r0.returncode, r1.returncode) == (0, 0), (err0, err1)
    assert out0 == single.stdout and len(out0.split()) >= 5
