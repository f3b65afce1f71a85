"""The media work slots: decoding, models and search run at most `max_workers` at once.

gRPC gives every admitted call a thread, and a crawler's open MatchStream holds one while idle: sharing one small
pool let 8 idle streams starve Match (bench/locustfile.py found it), while more threads doing inference at once
would only oversubscribe the cores. So calls wait here for a slot, no longer than their deadline.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from jiwoom.api.errors import DeadlineExceeded, InferenceUnavailable

log = logging.getLogger(__name__)


class WorkSlots:
    def __init__(self, size: int) -> None:
        self.size = size
        self._slots = threading.BoundedSemaphore(size)
        self._busy = 0  # slots held by calls (not by close()): the metrics' media work in flight
        self._busy_lock = threading.Lock()
        self.stopping = threading.Event()  # set by close(): new work is refused from then on

    @contextlib.contextmanager
    def hold(self, deadline: float | None) -> Iterator[None]:
        """One slot for the block, waited for no longer than the call's deadline. The wait wakes every second to
        see whether close() began: close() takes every slot, and a waiter without a deadline would otherwise keep
        its thread, and the process, alive for ever."""
        while True:
            if self.stopping.is_set():
                raise InferenceUnavailable("the service is stopping")
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if wait <= 0:
                raise DeadlineExceeded(f"deadline passed while all {self.size} media workers were busy")
            if self._slots.acquire(timeout=wait):
                break
        if self.stopping.is_set():  # close() won the race for the slot's release
            self._slots.release()
            raise InferenceUnavailable("the service is stopping")
        with self._busy_lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._busy_lock:
                self._busy -= 1
            self._slots.release()

    @property
    def busy(self) -> int:
        """Media calls holding a slot now."""
        return self._busy

    def close(self, drain_s: float) -> None:
        """Refuse new work (UNAVAILABLE: the caller retries elsewhere) and let work in flight finish, before the
        models and the database pool close under it: a stream item still matching after gRPC's grace would
        otherwise fail half-recorded. Bounded by `drain_s`: a stuck call is logged."""
        self.stopping.set()
        until = time.monotonic() + drain_s
        held = 0
        while held < self.size and self._slots.acquire(timeout=max(0.0, until - time.monotonic())):
            held += 1
        if held < self.size:
            log.warning("stopping with %d media calls still running after %.0f s", self.size - held, drain_s)
