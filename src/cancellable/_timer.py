"""The one thread that fires every deadline of every source.

Deadlines sit in a heap ordered by due time. The thread sleeps on a condition
until the earliest one is due, so 10,000 sources with timeouts cost one thread
and no polling. Disarmed entries are dropped lazily and the heap is rebuilt
when they outnumber the live ones, so arming and disarming stay O(log n).

All times come from `now()`, whose clock tests replace with `set_clock()` and
then drive with `run_due()`, so deadline tests are exact and need no sleeping.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable

__all__ = ["TIMER", "Entry", "now", "set_clock"]

_log = logging.getLogger("cancellable")

_clock: Callable[[], float] = time.monotonic
_manual = False


def now() -> float:
    """Return the current time of the deadline clock, in seconds."""
    return _clock()


def set_clock(clock: Callable[[], float]) -> Callable[[], float]:
    """Replace the deadline clock and return the previous one (for tests).

    While the clock is not `time.monotonic`, the timer thread fires nothing:
    the test drives deadlines with `TIMER.run_due()` on its own thread, so
    which thread fires them is never a race.
    """
    global _clock, _manual
    # The timer thread reads both under its lock: switch them together.
    with TIMER._lock:
        previous, _clock = _clock, clock
        _manual = clock is not time.monotonic
        TIMER._cond.notify()
    return previous


# A heap entry is a list [due, seq, callback]; seq breaks ties so callbacks are
# never compared, and a None callback marks a disarmed or fired entry.
Entry = list[object]

# Rebuild the heap once this many disarmed entries make up over half of it.
_COMPACT_AT = 64


class _Timer:
    __slots__ = ("_cond", "_dead", "_heap", "_lock", "_seq", "_thread")

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._heap: list[Entry] = []
        self._dead = 0
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, due: float, callback: Callable[[], object]) -> Entry:
        """Schedule ``callback()`` on the timer thread at clock time ``due``."""
        entry: Entry = [due, next(self._seq), callback]
        with self._lock:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._start()
            elif self._heap[0] is entry:
                self._cond.notify()
        return entry

    def disarm(self, entry: Entry) -> bool:
        """Cancel a scheduled entry; return False if it already fired."""
        with self._lock:
            if entry[2] is None:
                return False
            entry[2] = None
            self._dead += 1
            heap = self._heap
            if self._dead >= _COMPACT_AT and self._dead * 2 > len(heap):
                heap[:] = [e for e in heap if e[2] is not None]
                heapq.heapify(heap)
                self._dead = 0
            return True

    def wakeup(self) -> None:
        """Make the timer thread look at the clock again (after the clock changed)."""
        with self._lock:
            self._cond.notify()

    def run_due(self) -> int:
        """Fire, on the calling thread, every entry that is due now; return how many."""
        fired = 0
        while True:
            with self._lock:
                callback = self._pop_due()
            if callback is None:
                return fired
            _fire(callback)
            fired += 1

    def pending(self) -> int:
        """Return how many armed entries are waiting (for tests and stats)."""
        with self._lock:
            return len(self._heap) - self._dead

    def _pop_due(self) -> Callable[[], object] | None:
        # Called with the lock held: drop dead entries at the top, pop a due one.
        heap = self._heap
        while heap:
            top = heap[0]
            callback = top[2]
            if callback is None:
                heapq.heappop(heap)
                self._dead -= 1
                continue
            if top[0] > _clock():  # type: ignore[operator]
                return None
            heapq.heappop(heap)
            top[2] = None
            return callback  # type: ignore[return-value]
        return None

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name="cancellable-timer", daemon=True)
        self._thread = thread
        thread.start()

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                callback = None if _manual else self._pop_due()
                while callback is None:
                    if _manual:
                        cond.wait()
                        continue
                    # _pop_due left either an empty heap or a live entry not yet due.
                    heap = self._heap
                    if heap:
                        # Clamped: a longer wait (a 1e10 s deadline) raises
                        # OverflowError and would kill this thread.
                        delay = max(heap[0][0] - _clock(), 0.0)  # type: ignore[operator]
                        cond.wait(min(delay, threading.TIMEOUT_MAX))
                    else:
                        cond.wait()
                    callback = None if _manual else self._pop_due()
            _fire(callback)

    def _after_fork_in_child(self) -> None:
        # The parent's timer thread does not exist here and its lock may be held
        # by a thread that is gone: start over with the same entries.
        entries = [e for e in self._heap if e[2] is not None]
        self._reset()
        if entries:
            heapq.heapify(entries)
            self._heap = entries
            self._start()


def _fire(callback: Callable[[], object]) -> None:
    try:
        callback()
    except BaseException:
        _log.exception("error in a deadline callback")


TIMER = _Timer()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=TIMER._after_fork_in_child)
