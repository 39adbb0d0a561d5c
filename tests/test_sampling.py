"""The sampler (sampling.sample_rows) against numpy: filters keep exactly the reference sets, greedy is the
argmax, penalties subtract what they should, logprobs are the model's log-softmax, and a row's draw
depends only on its own logits, parameters and key (not on the rest of the batch)."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from mlx_tandem import _ext
from mlx_tandem.sampling import SamplingParams, SeedStream, sample_rows

params_st = st.builds(
    SamplingParams,
    temperature=st.sampled_from([0.0, 0.5, 1.0, 1.7]),
    top_p=st.sampled_from([1.0, 0.9, 0.5, 0.05]),
    top_k=st.sampled_from([0, 1, 3, 10]),
    min_p=st.sampled_from([0.0, 0.05, 0.3]),
    presence_penalty=st.sampled_from([0.0, 1.0, -0.5]),
    frequency_penalty=st.sampled_from([0.0, 0.7]),
    top_logprobs=st.sampled_from([0, 2, 5]),
)


def allowed(logits, counts, p: SamplingParams):
    """numpy reference: the set of tokens the filters keep for one row."""
    V = logits.size
    n = np.bincount(counts, minlength=V)[:V].astype(np.float64) if counts is not None else np.zeros(V)
    x = logits.astype(np.float64) - p.presence_penalty * (n > 0) - p.frequency_penalty * n
    if p.temperature == 0:
        return {int(np.argmax(x))}
    x = x / p.temperature
    keep = np.ones(V, bool)
    if 0 < p.top_k < V:
        keep &= x >= np.sort(x)[::-1][p.top_k - 1]
    if p.top_p < 1:
        order = np.argsort(-x, kind="stable")
        probs = np.exp(x[order] - x.max())
        probs /= probs.sum()
        before = np.cumsum(probs) - probs
        keep_sorted = np.zeros(V, bool)
        keep_sorted[order] = before < p.top_p
        keep &= keep_sorted | (x >= x.max())
    if p.min_p > 0:
        keep &= x >= x.max() + np.log(p.min_p)
    return set(np.flatnonzero(keep).tolist())


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(params_st, min_size=1, max_size=5), V=st.integers(2, 70), seed=st.integers(0, 2**20))
def test_rows_sample_from_the_reference_sets(rows, V, seed):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((len(rows), V)) * 3).astype(np.float32)
    counts = [rng.integers(0, V, rng.integers(0, 6)) for _ in rows]
    keys = [int(k) for k in rng.integers(0, 1 << 62, len(rows))]
    out = sample_rows(mx.array(logits), rows, keys, counts)
    lsm = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    for i, p in enumerate(rows):
        tok = int(out.tokens[i])
        ok = allowed(logits[i], counts[i], p)
        # ties at the cut-off may fall either way in float32: accept a token within 1e-5 of the boundary
        assert tok in ok or tok in allowed(logits[i] + 1e-5 * (np.arange(V) == tok), counts[i], p)
        alone = sample_rows(mx.array(logits[i:i + 1]), [p], [keys[i]], [counts[i]])
        assert int(alone.tokens[0]) == tok  # independent of the other rows
        if p.top_logprobs:
            np.testing.assert_allclose(out.logprobs[i], lsm[i, tok], atol=1e-5)
            np.testing.assert_array_equal(np.sort(out.top_ids[i, :p.top_logprobs]),
                                          np.sort(np.argsort(-lsm[i], kind="stable")[:p.top_logprobs]))


@settings(max_examples=80, deadline=None)
@given(p=params_st, V=st.sampled_from([2, 31, 33, 100, 1000, 5000]), spread=st.sampled_from([0.3, 3.0, 12.0]),
       ties=st.booleans(), seed=st.integers(0, 2**20))
def test_kernel_keeps_exactly_the_reference_set(p, V, spread, ties, seed):
    """The native filters (sample_tokens) keep exactly the sequential reference set, on rows long enough
    for the nucleus' quickselect and with many equal logits (bf16 logits tie a lot)."""
    logits = (np.random.default_rng(seed).standard_normal(V) * spread).astype(np.float32)
    if ties:
        logits = np.round(logits * 4) / 4
    got = _ext.sample_kept(logits.tolist(), p.temperature, p.top_k, p.top_p, p.min_p)
    assert got == ref.sample_kept(logits, p.temperature, p.top_k, p.top_p, p.min_p)


def test_sample_tokens_bad_input_is_value_error():
    ok = dict(temperature=[1.0], top_k=[0], top_p=[1.0], min_p=[0.0], key_seeds=[1])
    for kw, match in [(dict(temperature=[-1.0]), "temperature"), (dict(top_p=[0.0]), "top_p"),
                      (dict(top_k=[-2]), "top_k"), (dict(min_p=[2.0]), "min_p"), (dict(key_seeds=[1, 2]), "per row")]:
        with pytest.raises(ValueError, match=match):
            _ext.sample_tokens(mx.zeros((1, 8)), **{**ok, **kw})
    with pytest.raises(ValueError, match="logits"):
        _ext.sample_tokens(mx.zeros((8,)), **ok)


def test_sampling_follows_the_distribution():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
    stream = SeedStream(0)
    draws = [int(sample_rows(mx.array(logits), [SamplingParams(temperature=1.0)], [stream.next()]).tokens[0])
             for _ in range(3000)]
    freq = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.03)


def test_seed_stream_is_a_pure_function_of_the_seed():
    a, b = SeedStream(7), SeedStream(7)
    assert [a.next() for _ in range(5)] == [b.next() for _ in range(5)]
    assert SeedStream(8).next() != SeedStream(7).next()


@pytest.mark.parametrize("kw", [dict(temperature=-0.1), dict(temperature=float("nan")), dict(top_p=0.0),
                                dict(top_k=-1), dict(min_p=1.5), dict(presence_penalty=3),
                                dict(frequency_penalty=-2.5), dict(top_logprobs=21), dict(seed="x")])
def test_bad_parameters_are_value_errors(kw):
    with pytest.raises(ValueError, match="sampling"):
        SamplingParams(**kw)


def test_mismatched_rows_are_value_errors():
    with pytest.raises(ValueError, match="one row per"):
        sample_rows(mx.zeros((2, 5)), [SamplingParams()], [0])
