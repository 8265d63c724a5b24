"""Back-pressure: bounded resources handed out in arrival order, and each request's waiting-time budget.

Weaviate's module client never retries and ignores ``Retry-After``: a 503 is an object that fails to import. So a
busy server *holds* a request until there is room (queue items, buffered-body bytes) rather than refusing it, for as
long as the request's waiting budget (``max_queue_wait_s``, below Weaviate's 50 s client timeout) leaves. Only the
time a request spends waiting for others counts against that budget; its own upload and decoding do not.

:class:`Capacity` is awaited from the event loop and released from any thread (the batch worker answers requests
from its own thread). Waiters are served strictly first come, first served: a large request at the head is not
overtaken by smaller ones behind it, so none waits forever.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass

__all__ = ["Capacity", "Overloaded", "ShuttingDown", "WaitBudget"]


class Overloaded(Exception):
    """A request waited its whole budget for room and was not computed (HTTP 503)."""


class ShuttingDown(Exception):
    """The server is closing and accepts no new work (HTTP 503)."""


@dataclass(eq=False)
class _Waiter:
    amount: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    granted: bool = False


class Capacity:
    """``total`` units (items, bytes) shared by all requests; :meth:`acquire` waits in arrival order."""

    def __init__(self, total: int, unit: str) -> None:
        self.total = total
        self.unit = unit
        self._used = 0
        self._closed = False
        self._lock = threading.Lock()
        self._waiters: collections.deque[_Waiter] = collections.deque()

    @property
    def used(self) -> int:
        with self._lock:
            return self._used

    @property
    def waiting(self) -> int:
        """Requests waiting for room."""
        with self._lock:
            return len(self._waiters)

    def try_acquire(self, amount: int) -> bool:
        """Take ``amount`` now if it fits and nobody is waiting before us; never blocks."""
        with self._lock:
            if self._closed:
                raise ShuttingDown("server is shutting down")
            if self._waiters or self._used + amount > self.total:
                return False
            self._used += amount
            return True

    async def acquire(self, amount: int, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds, in arrival order) for ``amount`` units.

        Raises :class:`asyncio.TimeoutError` when the time is up, :class:`ShuttingDown` when the server closes meanwhile.
        """
        if amount > self.total:
            raise ValueError(f"{amount} {self.unit} can never fit in {self.total}")
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise ShuttingDown("server is shutting down")
            if not self._waiters and self._used + amount <= self.total:
                self._used += amount
                return
            waiter = _Waiter(amount, loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), timeout=max(timeout, 0.0))
        except BaseException:  # timed out, cancelled (client gone) or shutting down
            with self._lock:
                queued = waiter in self._waiters
                if queued:
                    self._waiters.remove(waiter)
            if waiter.granted:
                self.release(amount)  # granted while we were timing out: give it back
            elif queued:
                self._wake()  # we may have been the head that blocked the others
            raise

    def release(self, amount: int) -> None:
        """Give ``amount`` back (from any thread) and hand room to the waiters that now fit, oldest first."""
        with self._lock:
            self._used -= amount
        self._wake()

    def close(self) -> None:
        """Refuse new acquisitions; waiters get :class:`ShuttingDown`."""
        with self._lock:
            self._closed = True
            waiters, self._waiters = list(self._waiters), collections.deque()
        for waiter in waiters:
            waiter.loop.call_soon_threadsafe(_settle, waiter.future, ShuttingDown("server is shutting down"))

    def _wake(self) -> None:
        granted = []
        with self._lock:
            while self._waiters and self._used + self._waiters[0].amount <= self.total:
                waiter = self._waiters.popleft()
                waiter.granted = True
                self._used += waiter.amount
                granted.append(waiter)
        for waiter in granted:
            waiter.loop.call_soon_threadsafe(_settle, waiter.future, None)


def _settle(future: asyncio.Future, exception: BaseException | None) -> None:
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(None)


@dataclass
class WaitBudget:
    """How long one request may still wait for others (``limit_s`` in all), and how long it has waited so far."""

    limit_s: float
    waited_s: float = 0.0

    @property
    def remaining_s(self) -> float:
        return self.limit_s - self.waited_s

    async def acquire(self, capacity: Capacity, amount: int, what: str) -> None:
        """Wait for ``amount`` of ``capacity``; the time spent counts against the budget.

        Raises :class:`Overloaded` (naming ``what`` it waited for) when the budget runs out first.
        """
        started = time.monotonic()
        try:
            await capacity.acquire(amount, self.remaining_s)
        except asyncio.TimeoutError:
            self.waited_s += time.monotonic() - started
            raise Overloaded(
                f"server busy: the request waited {self.waited_s:.1f}s for {what}, over the server's limit of "
                f"{self.limit_s:g}s; not computed (retry later)"
            ) from None
        self.waited_s += time.monotonic() - started
