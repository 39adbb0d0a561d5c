"""The server runs DeepSeek-V3 (MLA, mixture of experts) too: a tiny random checkpoint in DeepSeek's own FP8
layout (the transformers golden) behind `tandem serve`, with concurrent greedy requests giving the tokens
the same model gives in-process alone."""

import concurrent.futures
import json
import os
import shutil

import mlx.core as mx
import numpy as np

from mlx_tandem.generate import load, token_steps
from mlx_tandem.sampling import SamplingParams
from pipeline_helpers.tiny_llama import word_tokenizer
from server_helpers.proc import Server

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "deepseek_v3")


def test_deepseek_behind_the_server_batched_equals_alone(tmp_path):
    path = tmp_path / "ds"
    shutil.copytree(GOLDEN, path, ignore=shutil.ignore_patterns("logits.npz"))
    vocab = json.load(open(path / "config.json"))["vocab_size"]
    word_tokenizer(vocab).save(str(path / "tokenizer.json"))
    model, _ = load(str(path), dtype="float32")
    rng = np.random.default_rng(0)
    prompts = [[int(t) for t in rng.integers(1, vocab, n)] for n in (3, 7, 5, 9)]

    def alone(p):
        out = []
        for s in token_steps(model, mx.array(p, mx.int32), SamplingParams(), prefill_step=256):
            out.append(f"w{int(s.tokens[0])}")
            if len(out) == 6:
                return " ".join(out)

    want = [alone(p) for p in prompts]
    srv = Server("--model", str(path), "--dtype", "float32", "--max-concurrency", "4")
    try:
        c = srv.client()
        m = c.models.list().data[0].id

        def ask(p):
            r = c.completions.create(model=m, prompt=p, max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
            return r.choices[0].text.strip()

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            got = list(pool.map(ask, prompts))
        assert got == want
    finally:
        srv.close()
