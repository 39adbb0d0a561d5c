"""The serving loop: one thread owns the Scheduler (and so the model and the link to rank 1); HTTP
handlers submit and cancel sequences through a lock and receive their events through a callback.

Admission: at most `max_concurrency` sequences run; up to `max_queue` more wait; past that `submit`
raises QueueFull (the server answers 429). With a peer (the pipeline), a fault ends every running
sequence with an error event naming the cause, marks the engine unhealthy, and the loop waits for
rank 1 to reconnect while requests keep queueing; then it resumes.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Protocol

from ..batch import Event, Scheduler, Sequence
from ..pipeline.errors import PipelineError
from ..sampling import SamplingParams


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the server is at capacity; retry after {retry_after} s")
        self.retry_after = retry_after


class Peer(Protocol):
    """What the engine needs of a second rank (pipeline.PipelineBackend provides it)."""
    def alive(self) -> bool: ...
    def reconnect(self, deadline: float) -> None: ...  # raises PipelineError / OSError on timeout
    def close(self) -> None: ...  # drop the link (rank 1 redials)
    def describe(self) -> str: ...


@dataclass
class Counters:
    requests: int = 0
    finished: collections.Counter = None
    prompt_tokens: int = 0
    generation_tokens: int = 0
    rejected: int = 0
    faults: int = 0

    def __post_init__(self):
        self.finished = collections.Counter()


class Engine:
    def __init__(self, backend, tokenizer, *, context_length: int, max_concurrency: int = 8,
                 max_queue: int = 64, prefill_chunk: int = 512, peer: Peer | None = None,
                 reconnect_poll: float = 2.0):
        if max_concurrency < 1 or max_queue < 0:
            raise ValueError(f"serve: need max_concurrency >= 1 and max_queue >= 0, got {max_concurrency}, {max_queue}")
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.peer = peer
        self.reconnect_poll = reconnect_poll
        self.scheduler = Scheduler(backend, eos_token_ids=tokenizer.eos_token_ids, prefill_chunk=prefill_chunk,
                                   max_batch=max_concurrency)
        self.counters = Counters()
        self._cv = threading.Condition()
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._cancels: list[Sequence] = []
        self._running = 0
        self._stop = False
        self._fault: str | None = None  # why generation does not work right now
        self._recent: collections.deque[float] = collections.deque()  # token times, for tokens/s
        self._decode_rows: dict[int, int] = {}
        self._thread = threading.Thread(target=self._loop, name="tandem-engine", daemon=True)

    # ---- for the HTTP side (any thread) ---------------------------------------------------------
    def start(self) -> "Engine":
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def submit(self, prompt: list[int], params: SamplingParams, max_tokens: int,
               sink: Callable[[Event], None], ignore_eos: bool = False) -> Sequence:
        """Queue a sequence; `sink(event)` is called on the engine thread for each of its events."""
        seq = Sequence(list(prompt), params, max_tokens, user=sink, ignore_eos=ignore_eos)
        with self._cv:
            if self._running + len(self._waiting) >= self.max_concurrency + self.max_queue:
                self.counters.rejected += 1
                raise QueueFull(retry_after=max(1, len(self._waiting) // self.max_concurrency))
            self.counters.requests += 1
            self.counters.prompt_tokens += len(prompt)
            self._waiting.append(seq)
            self._cv.notify_all()
        return seq

    def cancel(self, seq: Sequence) -> None:
        """Free the sequence now (client gone, or its text ended on a stop string)."""
        with self._cv:
            self._cancels.append(seq)
            self._cv.notify_all()

    def health(self) -> tuple[bool, str]:
        if not self._thread.is_alive():
            return False, "the engine thread is not running"
        if self._fault is not None:
            return False, self._fault
        if self.peer is not None and not self.peer.alive():
            return False, f"{self.peer.describe()} is not connected"
        return True, "ok" if self.peer is None else f"{self.peer.describe()} connected"

    def snapshot(self) -> dict:
        """Figures for /metrics."""
        now = time.monotonic()
        with self._cv:
            while self._recent and self._recent[0] < now - 10:
                self._recent.popleft()
            tps = len(self._recent) / 10.0
            return dict(running=self._running, waiting=len(self._waiting), tokens_per_second=tps,
                        requests=self.counters.requests, rejected=self.counters.rejected,
                        finished=dict(self.counters.finished), prompt_tokens=self.counters.prompt_tokens,
                        generation_tokens=self.counters.generation_tokens, faults=self.counters.faults,
                        healthy=self.health()[0], decode_rows=dict(self._decode_rows),
                        peer=None if self.peer is None else int(self.peer.alive()))

    # ---- the engine thread ------------------------------------------------------------------------
    def _sync(self) -> bool:
        """Apply cancels and admit waiting sequences; wait while idle. False when stopping."""
        with self._cv:
            while True:
                for seq in self._cancels:
                    if seq in self._waiting:
                        self._waiting.remove(seq)
                        seq.finish_reason = "cancelled"
                        self._finish(seq)
                    elif not seq.done:
                        self.scheduler.cancel(seq)
                        self._finish(seq)
                self._cancels.clear()
                while self._waiting and len(self.scheduler.active) < self.max_concurrency:
                    self.scheduler.add(self._waiting.popleft())
                self._running = len(self.scheduler.active)
                if self._stop:
                    return False
                if not self.scheduler.idle or self._peer_down():
                    return True
                self._cv.wait(timeout=0.5)

    def _peer_down(self) -> bool:
        return self.peer is not None and not self.peer.alive()

    def _finish(self, seq: Sequence) -> None:
        self.counters.finished[seq.finish_reason] += 1

    def _loop(self) -> None:
        while self._sync():
            if self._peer_down():
                self._recover(f"{self.peer.describe()} disconnected")
                continue
            try:
                events = self.scheduler.step()
            except PipelineError as e:  # the link failed: nothing in flight can finish
                self._recover(f"{type(e).__name__}: {e}")
                continue
            except Exception as e:  # a bug must not hang the clients: fail what runs, keep serving
                traceback.print_exc(file=sys.stderr)
                cause = f"internal error: {type(e).__name__}: {e}"
                if self.peer is not None:  # the two ranks may disagree now: start the link afresh
                    self.peer.close()
                    self._recover(cause)
                    continue
                with self._cv:
                    events = self.scheduler.fail_all(cause)
            self._dispatch(events)

    def _dispatch(self, events: list[Event]) -> None:
        now = time.monotonic()
        with self._cv:
            for ev in events:
                if ev.token is not None:
                    self.counters.generation_tokens += 1
                    self._recent.append(now)
                if ev.finish_reason is not None:
                    self._finish(ev.seq)
            self._decode_rows = dict(self.scheduler.decode_rows)
        for ev in events:
            ev.seq.user(ev)

    def _recover(self, cause: str) -> None:
        with self._cv:
            self.counters.faults += 1
            self._fault = f"generation failed: {cause}; waiting for the peer to reconnect"
            events = self.scheduler.fail_all(cause)
            self._running = 0
        self._dispatch(events)
        while True:
            with self._cv:
                if self._stop:
                    return
            try:
                self.peer.reconnect(self.reconnect_poll)
            except (PipelineError, OSError):
                continue
            with self._cv:
                self._fault = None
            return
