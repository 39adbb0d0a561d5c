"""Sampling against numpy, and the KV cache."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mlx_tandem.generate import sample
from mlx_tandem.models import KVCache


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@given(seed=st.integers(0, 2**31 - 1), V=st.sampled_from([2, 7, 50]), temp=st.sampled_from([0.5, 1.0, 2.0]),
       top_k=st.sampled_from([0, 1, 3]), top_p=st.sampled_from([1.0, 0.9, 0.3]))
def test_samples_stay_in_the_top_k_and_nucleus(seed, V, temp, top_k, top_p):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((1, V)).astype(np.float32) * 3
    tokens = np.array(sample(mx.array(np.repeat(logits, 64, 0)), temp, top_p, top_k, mx.random.key(seed)))
    order = np.argsort(-logits[0], kind="stable")
    allowed = set(order[:top_k] if top_k else order)
    p = softmax(logits[0] / temp)[order]
    nucleus = set(order[:int(np.searchsorted(np.cumsum(p), top_p)) + 1])
    assert set(tokens.tolist()) <= allowed & nucleus | {order[0]}


def test_temperature_zero_is_argmax_and_bad_arguments_raise():
    logits = mx.array(np.random.default_rng(0).standard_normal((3, 11)).astype(np.float32))
    assert np.array_equal(np.array(sample(logits)), np.argmax(np.array(logits), -1))
    for kw in ({"temperature": -1}, {"temperature": 1, "top_p": 0}, {"temperature": 1, "top_k": -2}):
        with pytest.raises(ValueError, match="sampl"):
            sample(logits, **kw)
    with pytest.raises(ValueError, match="sampl"):
        sample(logits[0])


def test_sampling_frequencies_follow_softmax():
    logits = np.array([[2.0, 1.0, 0.0, -1.0, 0.5]], np.float32)
    n = 20000
    tokens = np.array(sample(mx.array(np.repeat(logits, n, 0)), 0.7, key=mx.random.key(1)))
    freq = np.bincount(tokens, minlength=5) / n
    np.testing.assert_allclose(freq, softmax(logits[0] / 0.7), atol=0.015)
    # and top_p renormalises over the nucleus (here the top two tokens)
    tokens = np.array(sample(mx.array(np.repeat(logits, n, 0)), 1.0, top_p=0.7, key=mx.random.key(2)))
    freq = np.bincount(tokens, minlength=5) / n
    p = softmax(logits[0])[:2]
    np.testing.assert_allclose(freq, np.r_[p / p.sum(), 0, 0, 0], atol=0.015)


@settings(max_examples=20)
@given(chunks=st.lists(st.integers(1, 9), min_size=1, max_size=6), step=st.sampled_from([1, 4, 256]))
def test_kv_cache_returns_all_positions_written(chunks, step):
    rng = np.random.default_rng(len(chunks))
    cache, ks, vs = KVCache(step=step), [], []
    for n in chunks:
        k = rng.standard_normal((2, 3, n, 8)).astype(np.float32)
        v = rng.standard_normal((2, 3, n, 5)).astype(np.float32)
        ks.append(k)
        vs.append(v)
        K, V = cache.update_and_fetch(mx.array(k), mx.array(v))
        np.testing.assert_array_equal(np.array(K), np.concatenate(ks, 2))
        np.testing.assert_array_equal(np.array(V), np.concatenate(vs, 2))
    assert cache.offset == sum(chunks) and cache.keys.shape[2] % step == 0
    assert cache.keys.shape[2] - cache.offset < step  # grown in steps, not per token


def test_kv_cache_rejects_mismatched_shapes():
    cache = KVCache()
    cache.update_and_fetch(mx.zeros((1, 2, 3, 4)), mx.zeros((1, 2, 3, 4)))
    with pytest.raises(ValueError, match="KVCache"):
        cache.update_and_fetch(mx.zeros((1, 3, 1, 4)), mx.zeros((1, 3, 1, 4)))
    with pytest.raises(ValueError, match="KVCache"):
        cache.update_and_fetch(mx.zeros((1, 2, 1, 4)), mx.zeros((1, 2, 2, 4)))


def test_tokenizer_dir_with_jinja_template_and_eos_list(tmp_path):
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers

    from mlx_tandem.tokenizer import TokenizerWrapper
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<eot>", "hello", "world", "!"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<s>", "</s>", "<eot>"])
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": {"content": "<s>"}, "eos_token": "</s>", "add_bos_token": True}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 3]}))
    (tmp_path / "chat_template.jinja").write_text(
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'bad' %}{{ raise_exception('no bad roles') }}"
        "{% endif %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}<eot>{% endif %}")
    t = TokenizerWrapper.from_dir(str(tmp_path))
    assert t.encode("hello world") == [1, 4, 5] and t.encode("hello", add_special_tokens=False) == [4]
    assert t.eos_token_ids == {2, 3}
    assert t.apply_chat_template([{"role": "user", "content": "hello world"}], tokenize=True) == [1, 4, 5, 3]
    with pytest.raises(Exception, match="no bad roles"):
        t.apply_chat_template([{"role": "bad", "content": "x"}])
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        TokenizerWrapper.from_dir(str(tmp_path / "missing"))
