"""Collectives over an mx.distributed group, each under a deadline.

MLX's ring backend has no timeout of its own (a collective whose peer stops answering blocks
forever: mlx issue #4475). Every collective here is evaluated right away (collectives are lazy:
the deadline must cover the mx.eval that runs them) while a watchdog thread holds its deadline;
if the deadline passes, the watchdog prints which collective and which peer, and ends the process
with EXIT_COLLECTIVE_TIMEOUT (the blocked thread is inside MLX and cannot be interrupted). A peer
that closes its connection makes MLX raise, which becomes CollectiveFailed.

The input of each collective is evaluated first, outside the deadline, so the deadline (and the
time recorded per collective) covers only the exchange and the wait for the slower rank.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import mlx.core as mx

from .errors import EXIT_COLLECTIVE_TIMEOUT, CollectiveFailed, CollectiveTimeout


class Watchdog:
    """One daemon thread; arm(what) before a blocking call, disarm() after it."""

    def __init__(self, timeout: float, describe, exit_code: int = EXIT_COLLECTIVE_TIMEOUT):
        if not timeout > 0:
            raise ValueError(f"tensor parallel: the collective timeout must be positive, got {timeout}")
        self.timeout, self._describe, self._exit_code = float(timeout), describe, exit_code
        self._cv = threading.Condition()
        self._armed = None  # (deadline, what, timeout)
        threading.Thread(target=self._run, name="tandem-tp-watchdog", daemon=True).start()

    def arm(self, what: str, timeout: float | None = None) -> None:
        t = self.timeout if timeout is None else timeout
        with self._cv:
            self._armed = (time.monotonic() + t, what, t)
            self._cv.notify()

    def disarm(self) -> None:
        with self._cv:
            self._armed = None

    def _run(self):
        with self._cv:
            while True:
                if self._armed is None:
                    self._cv.wait()
                    continue
                deadline, what, t = self._armed
                left = deadline - time.monotonic()
                if left > 0:
                    self._cv.wait(left)
                    continue
                err = CollectiveTimeout(f"{what} did not complete within {t:g} s: {self._describe()} "
                                        f"stopped answering or the link is down; exiting")
                print(f"tandem tp: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
                os._exit(self._exit_code)


class Collectives:
    """all_sum / all_gather for the sharded layers, with counts, times and bytes sent per rank.

    Bytes on the link are what this rank sends under MLX's ring algorithm: 2 (n-1)/n of the array
    for all_sum (reduce-scatter, then all-gather) and (n-1) times its own part for all_gather."""

    def __init__(self, group, timeout: float = 30.0, peers: dict[int, str] | None = None):
        self.group, self.rank, self.size = group, group.rank(), group.size()
        self.peers = peers or {}
        self.watchdog = Watchdog(timeout, self.describe_peers)
        self.reset_stats()

    def describe_peers(self) -> str:
        others = [r for r in range(self.size) if r != self.rank]
        return ", ".join(f"peer rank {r}" + (f" ({self.peers[r]})" if r in self.peers else "") for r in others)

    def reset_stats(self):
        self.count, self.seconds, self.bytes_sent = 0, [], 0

    def all_sum(self, x: mx.array) -> mx.array:
        mx.eval(x)
        y = mx.distributed.all_sum(x, group=self.group)
        return self._run(y, "all_sum", 2 * (self.size - 1) * x.nbytes // self.size)

    def all_gather(self, x: mx.array, axis: int = -1) -> mx.array:
        """The ranks' x concatenated along `axis` in rank order (MLX gathers along axis 0)."""
        axis %= x.ndim
        mx.eval(x)
        moved = mx.moveaxis(x, axis, 0) if axis else x
        y = mx.distributed.all_gather(moved, group=self.group)
        y = self._run(y, "all_gather", (self.size - 1) * x.nbytes)
        return mx.moveaxis(y, 0, axis) if axis else y

    def broadcast_ints(self, values: list[int] | None, length: int, timeout: float | None = None) -> list[int]:
        """Rank 0's `length` int32 values on every rank (others pass None): an all_sum of zeros."""
        a = mx.array(values if self.rank == 0 else [0] * length, mx.int32)
        if a.size != length:
            raise ValueError(f"broadcast: rank 0 gave {a.size} values, expected {length}")
        y = self._run(mx.distributed.all_sum(a, group=self.group), "broadcast", a.nbytes, timeout, stats=False)
        return y.tolist()

    def _run(self, y, what, nbytes, timeout=None, stats=True):
        label = f"rank {self.rank}: {what} #{self.count + 1}"
        t = time.perf_counter()
        self.watchdog.arm(label, timeout)
        try:
            mx.eval(y)
        except RuntimeError as e:
            raise CollectiveFailed(f"{label} failed ({e}): {self.describe_peers()} closed the connection "
                                   f"(exited or was killed)") from None
        finally:
            self.watchdog.disarm()
        if stats:
            self.seconds.append(time.perf_counter() - t)
            self.count += 1
            self.bytes_sent += nbytes
        return y
