"""The serving engine without HTTP: a failing step ends the running sequences with an error event (never a
hang) and the engine keeps serving; cancelling a queued or running sequence frees it; the queue bound."""

import threading

import mlx.core as mx
import pytest

from mlx_tandem.batch import LocalBackend
from mlx_tandem.checkpoint import load_model
from mlx_tandem.sampling import SamplingParams
from mlx_tandem.server import Engine, QueueFull
from mlx_tandem.tokenizer import TokenizerWrapper
from pipeline_helpers.tiny_llama import tiny_llama


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    path = tiny_llama(tmp_path_factory.mktemp("tiny"))
    model, _ = load_model(path, dtype="float32")
    return model, TokenizerWrapper.from_dir(path)


class Collector:
    def __init__(self):
        self.events, self.done = [], threading.Event()

    def __call__(self, ev):
        self.events.append(ev)
        if ev.finish_reason is not None:
            self.done.set()


def engine(parts, **kw):
    model, tok = parts
    return Engine(LocalBackend(model), tok, context_length=256, **kw).start()


def test_a_failing_step_fails_the_running_sequences_and_serving_goes_on(parts, monkeypatch):
    eng = engine(parts)
    try:
        backend = eng.scheduler.backend
        real, calls = backend.issue, []

        def flaky(job):
            calls.append(job)
            if len(calls) == 1:
                raise RuntimeError("injected")
            return real(job)

        monkeypatch.setattr(backend, "issue", flaky)
        bad = Collector()
        eng.submit([1, 2, 3], SamplingParams(), 5, bad)
        assert bad.done.wait(30)
        assert bad.events[-1].error and "injected" in bad.events[-1].error
        good = Collector()
        eng.submit([1, 2, 3], SamplingParams(), 5, good, ignore_eos=True)
        assert good.done.wait(30) and [e.token is not None for e in good.events] == [True] * 5
        assert eng.health()[0]
    finally:
        eng.stop()


def test_cancel_frees_running_and_queued_sequences(parts):
    eng = engine(parts, max_concurrency=1, max_queue=1)
    try:
        running, queued = Collector(), Collector()
        a = eng.submit([1, 2], SamplingParams(), 200, running, ignore_eos=True)
        b = eng.submit([3, 4], SamplingParams(), 200, queued, ignore_eos=True)
        with pytest.raises(QueueFull):
            eng.submit([5], SamplingParams(), 5, Collector())
        eng.cancel(b)
        eng.cancel(a)
        for _ in range(300):
            snap = eng.snapshot()
            if snap["running"] == 0 and snap["waiting"] == 0 and snap["finished"].get("cancelled") == 2:
                break
            threading.Event().wait(0.05)
        assert snap["finished"].get("cancelled") == 2 and snap["running"] == snap["waiting"] == 0
        assert a.state is None  # its caches were dropped
    finally:
        eng.stop()
