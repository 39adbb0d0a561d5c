"""FORWARD / RESULT / RELEASE: round trips, and every malformed field a ProtocolError naming it; rank 1's
slot table (caches and sampled tokens per slot) under FORWARD and RELEASE, in this process."""

import ml_dtypes
import mlx.core as mx
import numpy as np
import pytest

from mlx_tandem.pipeline.errors import ProtocolError
from mlx_tandem.pipeline.messages import MAX_SLOTS, Forward, Release, Result, Want
from mlx_tandem.pipeline.stage import StageServer
from mlx_tandem.pipeline.tensors import to_numpy
from mlx_tandem.pipeline.wire import MsgType, decode_frame, encode_frame
from mlx_tandem.sampling import SamplingParams
from pipeline_helpers.toy import CONFIG, ToyModel

ROW_PARAMS = [SamplingParams(temperature=0.1, top_p=0.3, top_k=7, min_p=1 / 3, presence_penalty=-0.7,
                             frequency_penalty=1.9),
              SamplingParams()]


def forward(want=Want.LOGPROBS, n=2, slots=(4, 250), offsets=(0, 17), seeds=(2**62 - 1, 0), B=2):
    h = np.arange(B * 3 * 8, dtype=np.float32).reshape(B, 3, 8).astype(ml_dtypes.bfloat16)
    return Forward(want, h, list(slots), list(offsets), ROW_PARAMS[:B], list(seeds), n)


def frame(msg_type, tensors):
    return decode_frame(encode_frame(msg_type, 0, 42, tensors))


def test_forward_round_trip_is_exact():
    f = Forward.parse(frame(MsgType.FORWARD, forward().tensors()))
    assert (f.want, f.top_logprobs, f.slots, f.offsets, f.key_seeds) == (Want.LOGPROBS, 2, [4, 250], [0, 17],
                                                                         [2**62 - 1, 0])
    for got, sent in zip(f.params, ROW_PARAMS):  # float64 on the wire: the very values, not float32 roundings
        assert got == SamplingParams(**{**sent.__dict__, "logprobs": True, "top_logprobs": 2})
    assert f.hidden.tobytes() == forward().hidden.tobytes() and f.hidden.dtype == ml_dtypes.bfloat16


def _set(i, index, value):
    def mutate(t):
        t[i] = t[i].copy()
        t[i][index] = value
    return mutate


def _replace(i, value):
    def mutate(t):
        t[i] = value
    return mutate


@pytest.mark.parametrize("mutate, match", [
    (lambda t: t.pop(), "FORWARD with 4 tensors"),
    (_replace(0, np.array([1, 0], "<i4")), "FORWARD request must be int64"),
    (_replace(0, np.array([1, 0, 0], "<i8")), r"FORWARD request must be int64 \(2,\)"),
    (_set(0, 0, 7), "want 7"),
    (_set(0, 1, 21), "top_logprobs 21"),
    (_set(0, 1, -1), "top_logprobs -1"),
    (_replace(0, np.array([Want.TOKENS, 2], "<i8")), "top_logprobs 2 .* unless want >= LOGPROBS"),
    (_replace(1, np.zeros((1, 4), "<i8")), r"FORWARD rows must be int64 \(2, 4\)"),
    (_replace(1, np.zeros((2, 4), "<f8")), "FORWARD rows must be int64"),
    (_replace(2, np.zeros((2, 5), "<f4")), "FORWARD params must be float64"),
    (_replace(2, np.zeros((2, 4), "<f8")), r"FORWARD params must be float64 \(2, 5\)"),
    (_set(1, (0, 0), -1), "slot -1 out of range"),
    (_set(1, (1, 0), MAX_SLOTS), f"slot {MAX_SLOTS} out of range"),
    (_set(1, (1, 0), 4), r"slots \[4, 4\] are not unique"),
    (_set(1, (1, 1), -3), "offset -3 is negative"),
    (_set(1, (0, 2), -1), "seed -1 is negative"),
    (_set(1, (1, 3), -1), "row 1 .*top_k must be"),
    (_set(2, (0, 0), np.nan), "row 0 .*temperature must be"),
    (_set(2, (0, 0), np.inf), "row 0 .*temperature must be"),
    (_set(2, (0, 0), -0.5), "row 0 .*temperature must be"),
    (_set(2, (1, 1), 0.0), "row 1 .*top_p must be"),
    (_set(2, (1, 1), np.nan), "row 1 .*top_p must be"),
    (_set(2, (1, 2), 1.5), "row 1 .*min_p must be"),
    (_set(2, (0, 3), np.nan), "row 0 .*presence_penalty must be"),
    (_set(2, (0, 4), 2.5), "row 0 .*frequency_penalty must be"),
    (_replace(3, np.zeros((2, 3, 8), "<i4")), "FORWARD hidden must be"),
    (_replace(3, np.zeros((2, 8), "<f4")), "FORWARD hidden must be"),
    (_replace(3, np.zeros((2, 0, 8), "<f4")), "FORWARD hidden must be"),
    (_replace(3, np.zeros((3, 1, 8), "<f4")), r"FORWARD rows must be int64 \(3, 4\)"),  # B from hidden
])
def test_malformed_forward(mutate, match):
    t = forward().tensors()
    mutate(t)
    with pytest.raises(ProtocolError, match=match):
        Forward.parse(frame(MsgType.FORWARD, t))


@pytest.mark.parametrize("tensors, match", [
    ([], "RELEASE with 1 tensor"),
    ([np.zeros(0, "<i8")], r"RELEASE slots must be int64 \(S,\) with 1 <= S"),
    ([np.array([1], "<i4")], "RELEASE slots must be int64"),
    ([np.array([[1]], "<i8")], "RELEASE slots must be int64"),
    ([np.arange(MAX_SLOTS + 1, dtype="<i8")], "RELEASE slots must be"),
    ([np.array([1, 2, 1], "<i8")], "not unique"),
    ([np.array([MAX_SLOTS], "<i8")], f"slot {MAX_SLOTS} out of range"),
    ([np.array([-1], "<i8")], "slot -1 out of range"),
])
def test_malformed_release(tensors, match):
    with pytest.raises(ProtocolError, match=match):
        Release.parse(frame(MsgType.RELEASE, tensors))
    assert Release.parse(frame(MsgType.RELEASE, [np.array([0, MAX_SLOTS - 1], "<i8")])).slots == [0, MAX_SLOTS - 1]


def result(B=2, n=3, logits=False):
    return Result(np.zeros(B, np.int32), np.zeros(B, np.float32), np.zeros((B, n), np.int32),
                  np.zeros((B, n), np.float32), np.zeros((B, 5) if logits else (0, 0), np.float32))


@pytest.mark.parametrize("res, want, n, match", [
    (result(), Want.LOGPROBS, 2, "RESULT top_ids"),
    (result(B=1), Want.LOGPROBS, 3, "RESULT tokens"),
    (Result.empty(), Want.TOKENS, 0, "RESULT tokens"),
    (result(), Want.LOGITS, 3, "RESULT logits"),
    (result(logits=True), Want.LOGPROBS, 3, "RESULT logits"),
])
def test_rank0_checks_the_result_against_its_request(res, want, n, match):
    with pytest.raises(ProtocolError, match=match):
        Result.parse(frame(MsgType.RESULT, res.tensors()), want, 2, n)


def test_rank1_slot_table_follows_forward_and_release():
    """Rows of one FORWARD are separate sequences (batched == each alone); RELEASE drops a slot's caches
    and sampled tokens, releasing what is not held is refused, and offset 0 starts a slot afresh."""
    first, last = ToyModel(CONFIG, (0, 3)), ToyModel(CONFIG, (3, CONFIG["layers"]))
    prompts = [[5, 17, 3], [90, 4, 4]]
    hidden = [to_numpy(first(mx.array([p]), first.make_cache())) for p in prompts]
    params = [SamplingParams(temperature=1.0, seed=1, frequency_penalty=1.0), SamplingParams()]

    def req(slots, rows):
        return Forward(Want.TOKENS, np.concatenate([hidden[i] for i in rows]), slots, [0] * len(rows),
                       [params[i] for i in rows], [11 + i for i in rows])

    batched, single = StageServer(last, None), StageServer(last, None)
    both = batched.handle(req([7, 3], [0, 1]), 0).tokens.tolist()
    assert both == [single.handle(req([s], [i]), i).tokens[0] for s, i in ((7, 0), (3, 1))]
    assert batched.generated == {7: [both[0]], 3: [both[1]]}
    batched.release(Release([7]), 1)
    assert set(batched.caches) == set(batched.generated) == {3}
    with pytest.raises(ProtocolError, match="releases slot 7, which holds no sequence"):
        batched.release(Release([7]), 2)
    cont = Forward(Want.TOKENS, hidden[0][:, :1], [7], [3], [params[0]], [0])
    with pytest.raises(ProtocolError, match="continues slot 7 at position 3, but this stage holds no sequence"):
        batched.handle(cont, 3)
    batched.handle(req([3], [0]), 4)  # offset 0 on a held slot: a new sequence, its tokens counted afresh
    assert len(batched.generated[3]) == 1 and batched.caches[3][0].offset == 3
