"""Continuous batching in one process: a ragged batch (each row its own sequence and position) gives each
sequence exactly the tokens it gets alone, for Llama and DeepSeek (MLA's absorbed decode), greedy and
seeded sampling with penalties, with sequences joining and leaving mid-run."""

import os

import mlx.core as mx
import numpy as np
import pytest

from mlx_tandem.batch import LocalBackend, Scheduler, Sequence
from mlx_tandem.checkpoint import load_model
from mlx_tandem.generate import token_steps
from mlx_tandem.sampling import SamplingParams
from pipeline_helpers.tiny_llama import tiny_llama

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
CHUNK = 4  # prefill chunk: both paths must chunk alike (chunking changes rounding)
PARAMS = {
    "greedy": SamplingParams(),
    "sampled": SamplingParams(temperature=0.9, top_p=0.9, top_k=20, min_p=0.02, seed=5),
    "penalized": SamplingParams(temperature=0.7, presence_penalty=0.8, frequency_penalty=0.5, seed=9),
}


@pytest.fixture(scope="module", params=["llama", "deepseek_v3"])
def model(request, tmp_path_factory):
    if request.param == "llama":
        path = tiny_llama(tmp_path_factory.mktemp("llama"))
    else:
        path = os.path.join(GOLDEN, "deepseek_v3")
    m, config = load_model(path, dtype="float32")
    return m, config["vocab_size"]


def alone(model, prompt, params, n):
    out = []
    for s in token_steps(model, mx.array(prompt, mx.int32), params, prefill_step=CHUNK):
        out.append(int(s.tokens[0]))
        if len(out) == n:
            return out


def prompts(vocab, lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(1, vocab, n)] for n in lengths]


@pytest.mark.parametrize("kind", list(PARAMS))
def test_ragged_batch_equals_each_sequence_alone(model, kind):
    m, vocab = model
    params = PARAMS[kind]
    ps = prompts(vocab, [3, 9, 1, 6, 12])
    want = [alone(m, p, params, 7) for p in ps]
    sched = Scheduler(LocalBackend(m), prefill_chunk=CHUNK)
    seqs = [Sequence(p, params, 7, ignore_eos=True) for p in ps]
    got = {s.id: [] for s in seqs}
    for ev in sched.run(seqs):
        got[ev.seq.id].append(ev.token)
    assert [got[s.id] for s in seqs] == want
    assert max(sched.decode_rows) > 1  # rows really shared decode steps


def test_sequences_join_and_leave_mid_run(model):
    m, vocab = model
    ps = prompts(vocab, [5, 2, 8, 4], seed=1)
    want = [alone(m, p, PARAMS["sampled"], 6) for p in ps]
    sched = Scheduler(LocalBackend(m), prefill_chunk=CHUNK)
    seqs = [Sequence(p, PARAMS["sampled"], 6, ignore_eos=True) for p in ps]
    victim = Sequence(prompts(vocab, [7], seed=2)[0], PARAMS["greedy"], 100, ignore_eos=True)
    got = {s.id: [] for s in seqs + [victim]}
    sched.add(seqs[0])
    sched.add(victim)
    steps = 0
    while not sched.idle or steps == 0:
        for ev in sched.step():
            got[ev.seq.id].append(ev.token)
        steps += 1
        if steps in (2, 5, 9):  # late arrivals join the running batch
            sched.add(seqs[(2, 5, 9).index(steps) + 1])
        if len(got[victim.id]) == 3:
            sched.cancel(victim)
            assert victim.state is None and victim.finish_reason == "cancelled"  # caches freed at once
    assert [got[s.id] for s in seqs] == want
    assert len(got[victim.id]) == 3


def test_eos_and_max_tokens_end_a_sequence(model):
    m, vocab = model
    p = prompts(vocab, [4], seed=3)[0]
    first = alone(m, p, PARAMS["greedy"], 3)
    sched = Scheduler(LocalBackend(m), eos_token_ids=[first[1]], prefill_chunk=CHUNK)
    evs = list(sched.run([Sequence(p, PARAMS["greedy"], 10)]))
    assert [e.token for e in evs] == first[:2] and evs[-1].finish_reason == "stop"
    evs = list(Scheduler(LocalBackend(m), prefill_chunk=CHUNK).run([Sequence(p, PARAMS["greedy"], 3)]))
    assert [e.token for e in evs] == first and evs[-1].finish_reason == "length"
