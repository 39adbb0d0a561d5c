"""Continuous batching through two ranks (rank 1 a `tandem launch` process): ragged batches of sequences
at their own positions give the tokens of one process (Scheduler + LocalBackend) and of each sequence
alone (generate_step), greedy and seeded; sequences join and leave mid-run and RELEASE frees rank 1's
slot; Llama and DeepSeek."""

import contextlib
import os
import shutil

import ml_dtypes
import mlx.core as mx
import numpy as np
import pytest

from mlx_tandem.batch import LocalBackend, Scheduler, Sequence
from mlx_tandem.checkpoint import Checkpoint, load_model, read_config
from mlx_tandem.generate import generate_step
from mlx_tandem.pipeline import auth, partition
from mlx_tandem.pipeline.errors import RemoteError
from mlx_tandem.pipeline.messages import MAX_SLOTS, Forward, Want
from mlx_tandem.pipeline.pipeline import Pipeline
from mlx_tandem.pipeline.wire import MsgType
from mlx_tandem.sampling import SamplingParams
from pipeline_helpers.tiny_llama import tiny_llama, word_tokenizer
from test_pipeline_launch import launch

CHUNK = 4  # prompts of 1..18 tokens: up to 5 chunks, interleaved with the others' decode steps
PROMPTS = [[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3], [7], [2, 7, 1, 8, 2, 8, 1],
           [4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4], [9, 8, 7]]
MAX_TOKENS = [8, 10, 6, 9, 7]
SAMPLED = [  # one row of each kind in one batch: per-row params, keys and penalty counts
    SamplingParams(temperature=0.9, top_p=0.9, presence_penalty=0.6, seed=101, logprobs=True, top_logprobs=3),
    SamplingParams(temperature=1.2, top_k=12, min_p=0.05, frequency_penalty=0.5, seed=102),
    SamplingParams(temperature=0.7, min_p=0.1, seed=103, top_logprobs=2),
    SamplingParams(frequency_penalty=2.0, presence_penalty=1.0),  # greedy with penalties (its greedy text repeats)
    SamplingParams(temperature=1.0, top_p=0.5, top_k=5, seed=105, frequency_penalty=0.2),
]
PARAMS = {"greedy": [SamplingParams()] * len(PROMPTS), "sampled": SAMPLED}


@contextlib.contextmanager
def two_ranks(path, split, **kwargs):
    """A Pipeline in this process (rank 0) with rank 1 a `tandem launch` process on the same checkpoint."""
    desc = partition.describe(read_config(path), partition.tensor_bytes(Checkpoint(path)), split)
    listener = auth.Listener("127.0.0.1", 0, auth.Credentials(b"launch-test-secret", desc), timeout=5)
    rank1 = launch(1, listener.address[1], path, "--split", str(split))
    try:
        first, _ = load_model(path, layer_range=(0, split))
        with Pipeline(first, listener.accept(30), **kwargs) as pipe:
            yield pipe
            failed = pipe.conn.closed  # then rank 1 redials: nothing more to check
        if failed:
            rank1.kill()
        _, err = rank1.communicate(timeout=30)
        assert failed or rank1.returncode == 0, err
    finally:
        if rank1.poll() is None:
            rank1.kill()
        listener.close()


@pytest.fixture(scope="module")
def llama_path(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("batch") / "llama")


@pytest.fixture(scope="module")
def llama(llama_path):
    with two_ranks(llama_path, 3, prefill_chunk=CHUNK) as pipe:
        yield load_model(llama_path)[0], pipe


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory):
    path = tmp_path_factory.mktemp("batch") / "deepseek_v3"
    shutil.copytree(os.path.join(os.path.dirname(__file__), "golden", "deepseek_v3"), path)
    word_tokenizer(read_config(str(path))["vocab_size"]).save(str(path / "tokenizer.json"))
    with two_ranks(str(path), 2, prefill_chunk=CHUNK) as pipe:
        yield load_model(str(path))[0], pipe


def run(backend, params, rows=None):
    """Every sequence's events through one Scheduler: [(token, logprob, top)] per prompt; `rows` (a dict)
    gets the scheduler's decode batch sizes."""
    seqs = [Sequence(p, q, m) for p, q, m in zip(PROMPTS, params, MAX_TOKENS)]
    out = {s: [] for s in seqs}
    sched = Scheduler(backend, prefill_chunk=CHUNK)
    for ev in sched.run(seqs):
        out[ev.seq].append((ev.token, ev.logprob, ev.top_logprobs))
    if rows is not None:
        rows.update(sched.decode_rows)
    return [out[s] for s in seqs]


def alone(model, prompt, params, n):
    gen = generate_step(model, mx.array(prompt), params=params, prefill_step=CHUNK)
    toks = [next(gen) for _ in range(n)]
    gen.close()
    return toks


def tokens(events):
    return [[t for t, _, _ in seq] for seq in events]


def assert_same_events(got, want):
    assert tokens(got) == tokens(want)
    for g, w in zip(got, want):
        for (_, lp, top), (_, lp_w, top_w) in zip(g, w):
            assert (lp is None) == (lp_w is None) and (top is None) == (top_w is None)
            if lp is not None:
                assert lp == pytest.approx(lp_w, abs=1e-5)
            if top is not None:
                assert [i for i, _ in top] == [i for i, _ in top_w]


@pytest.mark.parametrize("model", ["llama", "deepseek"])
@pytest.mark.parametrize("kind, window", [("greedy", 2), ("sampled", 2), ("greedy", 1)])
def test_ragged_batch_equals_one_process_and_each_alone(request, model, kind, window):
    """window 1: all five rows in one FORWARD; window 2: two micro-batches (one per rank)."""
    full, pipe = request.getfixturevalue(model)
    params = PARAMS[kind]
    pipe.backend.window, rows = window, {}
    try:
        got = run(pipe.backend, params, rows)
    finally:
        pipe.backend.window = 2
    assert max(rows) >= 4 - window  # decode rows really went as batches through both ranks
    assert_same_events(got, run(LocalBackend(full), params))
    assert tokens(got) == [alone(full, p, q, n) for p, q, n in zip(PROMPTS, params, MAX_TOKENS)]
    assert all(len(t) == n for t, n in zip(tokens(got), MAX_TOKENS))
    assert not pipe.backend.slots and len(pipe.backend.free) == MAX_SLOTS and not pipe.backend.sent


def test_sequences_join_and_leave_a_running_batch(llama):
    """One long-lived Scheduler (as the server holds): sequences added while others decode, one cancelled
    mid-decode and one mid-prefill; the others keep their tokens and the cancelled slots are reused."""
    full, pipe = llama
    sched = Scheduler(pipe.backend, prefill_chunk=CHUNK)
    seqs = [Sequence(p, q, m) for p, q, m in zip(PROMPTS, SAMPLED, MAX_TOKENS)]
    got = {s: [] for s in seqs}

    def step():
        for ev in sched.step():
            got[ev.seq].append(ev.token)

    for s in seqs[:3]:
        sched.add(s)
    while len(got[seqs[0]]) < 2:
        step()
    assert seqs[1].history and not seqs[1].done
    sched.cancel(seqs[1])  # mid-decode (possibly with its job in flight)
    released = pipe.backend.free[0]
    for s in seqs[3:]:
        sched.add(s)
    assert pipe.backend.slots[seqs[3]] == released  # a released slot is the first one reused
    step()
    assert not seqs[4].decoding
    sched.cancel(seqs[4])  # mid-prefill
    while not sched.idle:
        step()
    for i, s in enumerate(seqs):
        ref = alone(full, PROMPTS[i], SAMPLED[i], MAX_TOKENS[i])
        if s.finish_reason == "cancelled":
            assert got[s] == ref[:len(got[s])] and len(got[s]) < len(ref)
        else:
            assert (s.finish_reason, got[s]) == ("length", ref)
    assert [s.finish_reason for s in (seqs[1], seqs[4])] == ["cancelled", "cancelled"]
    assert not pipe.backend.slots and not pipe.backend.sent and len(pipe.backend.free) == MAX_SLOTS


@pytest.mark.parametrize("i", [0, 3])
def test_stream_generate_on_a_pipeline_equals_one_process(llama, llama_path, i):
    """stream_generate drives Pipeline.token_steps: the same tokens, log-probabilities and alternatives."""
    from mlx_tandem.generate import stream_generate
    from mlx_tandem.tokenizer import TokenizerWrapper

    full, pipe = llama
    tok = TokenizerWrapper.from_dir(llama_path)
    params = SamplingParams(**{**SAMPLED[i].__dict__, "logprobs": True, "top_logprobs": 4})
    out = [[(r.token, r.logprob, r.top_logprobs, r.text) for r in stream_generate(m, tok, PROMPTS[i], 9, params=params,
                                                                                  prefill_step=CHUNK)]
           for m in (pipe, full)]
    assert [r[0] for r in out[0]] == [r[0] for r in out[1]] and len(out[0]) == 9
    for (_, lp, top, text), (_, lp1, top1, text1) in zip(*out):
        assert lp == pytest.approx(lp1, abs=1e-5) and [t for t, _ in top] == [t for t, _ in top1] and text == text1
        assert [v for _, v in top] == pytest.approx([v for _, v in top1], abs=1e-5)


def _send_raw(pipe, msg_type, tensors):
    pipe.conn.send(msg_type, pipe.next_step(), tensors)
    return pipe.conn.recv(deadline=10)


def _continue_slot(pipe, slot, offset):
    h = np.zeros((1, 1, pipe.model.args.hidden_size), ml_dtypes.bfloat16)
    return Forward(Want.TOKENS, h, [slot], [offset], [SamplingParams()], [0]).tensors()


@pytest.mark.parametrize("case", ["held", "released", "bad-forward", "bad-release"])
def test_rank1_serves_only_held_slots_and_wellformed_frames(llama_path, case):
    """Continuing a slot at its position: served while the sequence is open, refused by rank 1 once its
    RELEASE went out (rank 1 dropped it); a malformed FORWARD or RELEASE comes back as rank 1's error
    naming the field."""
    with two_ranks(llama_path, 3, prefill_chunk=CHUNK) as pipe:
        sched = Scheduler(pipe.backend, prefill_chunk=CHUNK)
        seq = Sequence(PROMPTS[2], max_tokens=50)
        sched.add(seq)
        while len(seq.history) < 3:
            sched.step()
        assert not sched.inflight  # one decoding sequence: each step issues and collects its job
        slot, position = pipe.backend.slots[seq], seq.position  # rank 1's caches hold `position` tokens
        if case != "held":
            sched.cancel(seq)
        tensors, kind = _continue_slot(pipe, slot, position), MsgType.FORWARD
        if case == "held":
            reply = _send_raw(pipe, kind, tensors)
            assert reply.msg_type == MsgType.RESULT and reply.tensors[0].shape == (1,)
            return
        match = f"continues slot {slot} at position {position}, but this stage holds no sequence"
        if case == "bad-forward":
            tensors[2][0, 0] = np.nan
            match = "FORWARD row 0 .*temperature must be"
        elif case == "bad-release":
            tensors, kind, match = [np.array([3, 3], "<i8")], MsgType.RELEASE, "RELEASE slots .* not unique"
        with pytest.raises(RemoteError, match=match):
            _send_raw(pipe, kind, tensors)
