"""Generation through two ranks gives exactly the single-process tokens (toy stage, real sockets)."""

import contextlib

import mlx.core as mx
import numpy as np
import pytest

from pipeline_helpers.procs import Ranks
from pipeline_helpers.toy import CONFIG, ToyModel, greedy_reference

PROMPTS = [[5, 17, 3, 88, 41, 2, 9, 60, 33, 12, 7], [1], [90, 4, 4, 4, 71]]


@pytest.fixture(scope="module")
def ranks():
    """ranks(split, dtype) -> a started Ranks, shared by the tests of this module."""
    made = {}

    def get(split=3, dtype="float32"):
        if (split, dtype) not in made:
            made[split, dtype] = Ranks(split, dtype)
        return made[split, dtype]

    yield get
    for r in made.values():
        r.close()


@contextlib.contextmanager
def session(ranks, split=3, dtype="float32", **kwargs):
    pipe = ranks(split, dtype).pipeline(**kwargs)
    try:
        yield pipe
    finally:
        pipe.close()


@pytest.mark.parametrize("split, dtype, chunk", [(1, "float32", 4), (3, "bfloat16", 3), (5, "float16", 512)])
def test_greedy_matches_single_process(ranks, split, dtype, chunk):
    with session(ranks, split, dtype, prefill_chunk=chunk) as pipe:
        gen = pipe.generate_step(mx.array(PROMPTS[0]), temperature=0.0)
        got = [next(gen) for _ in range(12)]
        gen.close()
        assert got == greedy_reference(PROMPTS[0], 12, dtype=getattr(mx, dtype), chunk=chunk)


def test_generate_step_drives_a_pipeline_like_a_model(ranks):
    from mlx_tandem.generate import generate_step

    with session(ranks, prefill_chunk=4) as pipe:
        gen = generate_step(pipe, mx.array(PROMPTS[0]), temperature=0.0, prefill_step=4)
        got = [next(gen) for _ in range(8)]
        gen.close()
        assert got == greedy_reference(PROMPTS[0], 8, chunk=4)


def test_several_sequences_in_flight_match_each_alone(ranks):
    with session(ranks, prefill_chunk=4) as pipe:
        out = pipe.generate_batch(PROMPTS, max_tokens=9)
        assert out == [greedy_reference(p, 9, chunk=4) for p in PROMPTS]
        assert pipe.stats.tokens == 27
        # and again on the same link: slots are reused, offset 0 resets rank 1's caches
        assert pipe.generate_batch(PROMPTS[::-1], max_tokens=3) == [greedy_reference(p, 3, chunk=4) for p in PROMPTS[::-1]]


def test_eos_stops_a_sequence_early(ranks):
    ref = greedy_reference(PROMPTS[0], 6)
    k = next(i for i in range(1, 6) if ref[i] not in ref[:i])  # the first token that repeats nothing
    with session(ranks) as pipe:
        out = pipe.generate_batch([PROMPTS[0], PROMPTS[2]], max_tokens=6, eos_token_ids=[ref[k]])
        assert out[0] == ref[:k + 1]  # the EOS token itself is yielded, then the sequence ends
        assert len(out[1]) == 6 or out[1][-1] == ref[k]


def test_logits_and_logprobs_come_back_when_asked(ranks):
    full = ToyModel(CONFIG)
    want_logits = np.array(full(mx.array([PROMPTS[2]]))[0, -1])
    with session(ranks) as pipe:
        np.testing.assert_array_equal(pipe.last_logits(PROMPTS[2]), want_logits)
        (i, (tok, lp)), = list(pipe.stream_batch([PROMPTS[2]], 1, logprobs=True))
        ref_lp = want_logits - np.log(np.exp(want_logits - want_logits.max()).sum()) - want_logits.max()
        assert tok == int(want_logits.argmax())
        assert lp == pytest.approx(float(ref_lp[tok]), abs=1e-4)


def test_sampling_is_reproducible_with_a_seed(ranks):
    with session(ranks) as pipe:
        a = pipe.generate_batch(PROMPTS, 8, temperature=1.0, seed=11)
        b = pipe.generate_batch(PROMPTS, 8, temperature=1.0, seed=11)
        c = pipe.generate_batch(PROMPTS, 8, temperature=1.0, seed=12)
        assert a == b and a != c
        assert all(0 <= x < CONFIG["vocab"] for seq in a for x in seq)


def test_stopping_early_keeps_the_link_in_step(ranks):
    with session(ranks, prefill_chunk=2) as pipe:
        gen = pipe.generate_step(mx.array(PROMPTS[0]))
        next(gen)
        gen.close()  # replies still in flight are drained
        assert pipe.generate_batch([PROMPTS[1]], 4) == [greedy_reference(PROMPTS[1], 4, chunk=2)]


def test_bad_prompts_are_value_errors(ranks):
    with session(ranks) as pipe:
        with pytest.raises(ValueError, match="non-empty 1-D"):
            pipe.generate_batch([[]], 2)
        with pytest.raises(ValueError, match="prompts"):
            pipe.generate_batch([], 2)
