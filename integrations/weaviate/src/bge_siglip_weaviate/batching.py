"""Cross-request dynamic batching: many small ``/vectorize`` requests -> few forward passes.

Weaviate sends one request per object with many in flight; the reference container serialises them under a lock,
so the model runs with batch size 1-2 however busy the server is. Here every request becomes a :class:`_Job`
(validated texts and already patchified images, :class:`~bge_siglip_vectorizer.preprocess.PatchedImage`: never
full-size decoded images) in one FIFO queue. A single worker thread takes the oldest job, waits at most
``max_wait_s`` for more, packs whole jobs until ``max_batch_size`` items, encodes all their texts in one core call
and all their images in another, and hands each job its own slice back, in order.

Memory is bounded: :meth:`DynamicBatcher.admit` refuses work (:class:`Overloaded`, answered 503) once
``max_queue_items`` items are admitted and not yet answered. A job the worker reaches more than ``max_queue_wait_s``
after its admission is answered :class:`QueueTimeout` (HTTP 503) without being computed: Weaviate has given up on it
by then (``MODULES_CLIENT_TIMEOUT``, 50 s by default). Because items are validated before they are queued, a job in a
batch cannot carry bad input; should a batch still fail, every job in it is retried on its own so that one request's
failure never becomes another's.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bge_siglip_vectorizer import PatchedImage, Vectorizer

from .settings import ServerSettings

__all__ = ["DynamicBatcher", "Overloaded", "ShuttingDown", "QueueTimeout", "Ticket", "BatcherStats", "BatchResult"]

logger = logging.getLogger("bge_siglip_weaviate.batching")

BatchResult = tuple[np.ndarray, np.ndarray]  # (text vectors, image vectors) of one job


class Overloaded(Exception):
    """The queue holds ``max_queue_items`` unanswered items; the caller should retry later (HTTP 503)."""


class ShuttingDown(Exception):
    """The batcher is closing and accepts no new work (HTTP 503)."""


class QueueTimeout(Exception):
    """The job waited longer than ``max_queue_wait_s`` for the worker; it was not computed (HTTP 503)."""


@dataclass
class BatcherStats:
    """Counters exposed in ``/meta``: compare ``worker_batches`` with ``requests`` to see batching at work."""

    requests: int = 0
    items: int = 0
    worker_batches: int = 0  # times the worker took jobs off the queue
    largest_batch_requests: int = 0  # most jobs packed into one worker batch
    rejected_overloaded: int = 0
    expired: int = 0  # jobs answered QueueTimeout instead of being computed
    failed: int = 0


@dataclass
class _Job:
    texts: list[str]
    images: list[PatchedImage]
    admitted_at: float  # time.monotonic() at admission: the queue-wait limit counts from there
    future: Future = field(default_factory=Future)
    released: bool = False  # admission given back (done just before answering, so capacity is free on reply)

    @property
    def size(self) -> int:
        return len(self.texts) + len(self.images)


class Ticket:
    """Admission for ``size`` items. Call :meth:`submit` once the items are decoded, or :meth:`cancel`.

    Admission happens before decoding so an overloaded server refuses a request before spending CPU on it;
    the admitted items count against the bound until the worker has answered them.
    """

    def __init__(self, batcher: "DynamicBatcher", size: int) -> None:
        self._batcher = batcher
        self.size = size
        self.admitted_at = time.monotonic()
        self._open = True

    def submit(self, texts: list[str], images: list[PatchedImage]) -> Future:
        """Queue validated texts and prepared images; the future resolves to ``(text_vectors, image_vectors)``."""
        if not self._open:
            raise RuntimeError("ticket already used")
        if len(texts) + len(images) != self.size:
            raise ValueError(f"ticket admitted {self.size} items, got {len(texts) + len(images)}")
        self._open = False  # from here on the worker owns the admission and releases it
        return self._batcher._enqueue(_Job(list(texts), list(images), self.admitted_at))

    def cancel(self) -> None:
        """Give the admission back (decoding failed). A no-op after :meth:`submit`."""
        if self._open:
            self._open = False
            self._batcher._release(self.size)


class DynamicBatcher:
    """A queue plus one worker thread that encodes the items of concurrent requests together.

    ``batching=False`` (or ``max_batch_size=1``) takes one request per forward round: the serialised behaviour of
    the reference container, kept for benchmarks and debugging.
    """

    def __init__(self, vectorizer: Vectorizer, settings: ServerSettings) -> None:
        self.vectorizer = vectorizer
        self.settings = settings  # validated once, where they are declared
        self.max_batch_size = settings.max_batch_size
        self.max_wait_s = settings.max_wait_ms / 1000.0
        self.max_queue_items = settings.max_queue_items
        self.max_queue_wait_s = settings.max_queue_wait_s
        self.batching = settings.batching
        self.stats = BatcherStats()
        self._queue: collections.deque[_Job] = collections.deque()
        self._admitted = 0  # items admitted and not yet answered (queued, decoding or being encoded)
        self._holds = 0
        self._closed = False
        self._stopped = False
        self._cond = threading.Condition()
        self._worker = threading.Thread(target=self._run, name="bge-siglip-batcher", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------------------------------- admission
    def admit(self, size: int) -> Ticket:
        """Reserve room for ``size`` items or raise :class:`Overloaded` / :class:`ShuttingDown`."""
        with self._cond:
            if self._closed:
                raise ShuttingDown("server is shutting down")
            if self._admitted + size > self.max_queue_items:
                self.stats.rejected_overloaded += 1
                raise Overloaded(
                    f"server overloaded: {self._admitted} items queued, limit {self.max_queue_items}; retry later"
                )
            self._admitted += size
            return Ticket(self, size)

    def check_capacity(self) -> None:
        """Raise :class:`Overloaded` / :class:`ShuttingDown` if not even one more item could be admitted.

        Called before a request body is read, so an overloaded server does not buffer bodies it will refuse.
        """
        with self._cond:
            if self._closed:
                raise ShuttingDown("server is shutting down")
            if self._admitted >= self.max_queue_items:
                self.stats.rejected_overloaded += 1
                raise Overloaded(
                    f"server overloaded: {self._admitted} items queued, limit {self.max_queue_items}; retry later"
                )

    def _release(self, size: int) -> None:
        with self._cond:
            self._admitted -= size

    def _enqueue(self, job: _Job) -> Future:
        with self._cond:
            if self._stopped:  # the worker has drained and exited: nobody would ever answer this job
                self._admitted -= job.size
                raise ShuttingDown("server is shutting down")
            self._queue.append(job)
            self.stats.requests += 1
            self.stats.items += job.size
            self._cond.notify_all()
        return job.future

    @property
    def pending_items(self) -> int:
        """Items admitted and not yet answered."""
        with self._cond:
            return self._admitted

    @property
    def queued_requests(self) -> int:
        """Requests waiting in the queue (not yet taken by the worker)."""
        with self._cond:
            return len(self._queue)

    # ------------------------------------------------------------------------------------------- control
    def hold(self) -> "_Hold":
        """Context manager: while held, the worker starts no new batch (requests queue up to the bound).

        For maintenance and for tests that need a deterministic queue state (overload, batch packing).
        """
        return _Hold(self)

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop accepting work, finish every queued job (holds are lifted), then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout)
        if self._worker.is_alive():
            logger.warning("batcher worker still busy after %.0fs; abandoning it", timeout or 0)

    def describe(self) -> dict[str, Any]:
        """Settings and counters for ``/meta``."""
        with self._cond:
            return {
                "batching": self.batching and self.max_batch_size > 1,
                "max_batch_size": self.max_batch_size,
                "max_wait_ms": self.max_wait_s * 1000.0,
                "max_queue_items": self.max_queue_items,
                "max_queue_wait_s": self.max_queue_wait_s,
                "pending_items": self._admitted,
                "queued_requests": len(self._queue),
                **asdict(self.stats),
            }

    # ------------------------------------------------------------------------------------------- worker
    def _run(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            self.stats.worker_batches += 1
            self.stats.largest_batch_requests = max(self.stats.largest_batch_requests, len(jobs))
            try:
                self._process(jobs)
            except BaseException as exc:  # noqa: BLE001 - the worker must survive anything, or every later request hangs
                logger.exception("batcher worker error")
                for job in jobs:  # no request may wait forever for an answer that will not come
                    if not job.future.done():
                        self._answer(job, exception=RuntimeError(f"internal batching error: {exc!r}"))
            finally:
                self._release(sum(job.size for job in jobs if not job.released))

    def _take(self) -> list[_Job] | None:
        """Block for the next batch: the oldest job plus whatever fits within ``max_wait_s`` and the size bound."""
        with self._cond:
            while not self._queue or (self._holds and not self._closed):
                if self._closed and not self._queue:
                    self._stopped = True
                    return None
                self._cond.wait()
            jobs = [self._queue.popleft()]
            size = jobs[0].size
            if not self.batching:
                return jobs
            deadline = time.monotonic() + self.max_wait_s
            while size < self.max_batch_size:
                if self._queue:
                    # Whole jobs only, and never past the bound: a job that does not fit starts the next batch.
                    if size + self._queue[0].size > self.max_batch_size:
                        break
                    job = self._queue.popleft()
                    jobs.append(job)
                    size += job.size
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            return jobs

    def _process(self, jobs: list[_Job]) -> None:
        # A request whose client went away (its future cancelled) is not worth encoding ...
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        # ... nor one the caller has most likely given up on (Weaviate's own timeout is 50 s by default).
        now = time.monotonic()
        fresh = []
        for job in jobs:
            waited = now - job.admitted_at
            if waited > self.max_queue_wait_s:
                self.stats.expired += 1
                self._answer(job, exception=QueueTimeout(
                    f"request waited {waited:.1f}s in the queue, over the server's limit of "
                    f"{self.max_queue_wait_s:g}s; not computed (server overloaded, retry later)"
                ))
            else:
                fresh.append(job)
        jobs = fresh
        if not jobs:
            return
        try:
            texts, images = self._encode([t for job in jobs for t in job.texts], [i for job in jobs for i in job.images])
        except Exception as exc:  # noqa: BLE001 - isolate below, or report to the one caller
            if len(jobs) > 1:
                logger.warning("batch of %d requests failed (%s); retrying them one by one", len(jobs), exc)
                for job in jobs:
                    self._process_alone(job)
                return
            self.stats.failed += 1
            self._answer(jobs[0], exception=exc)
            return
        t = i = 0
        for job in jobs:
            result = (texts[t : t + len(job.texts)], images[i : i + len(job.images)])
            t += len(job.texts)
            i += len(job.images)
            self._answer(job, result=result)

    def _process_alone(self, job: _Job) -> None:
        try:
            result = self._encode(job.texts, job.images)
        except Exception as exc:  # noqa: BLE001
            self.stats.failed += 1
            self._answer(job, exception=exc)
        else:
            self._answer(job, result=result)

    def _answer(self, job: _Job, *, result: Any = None, exception: BaseException | None = None) -> None:
        # Capacity first: a client that got its answer and sends the next request must find room for it.
        if not job.released:
            job.released = True
            self._release(job.size)
        _settle(job.future, result=result, exception=exception)

    def _encode(self, texts: list[str], images: list[PatchedImage]) -> BatchResult:
        # One core call per modality: the core sorts by size, de-duplicates identical items (bit-identical vectors,
        # also across requests) and splits into forward batches of at most max_batch_size. Texts may be "" or
        # blank: Weaviate sends empty text fields too, and the reference container embeds them.
        dim = self.vectorizer.dim
        batch = max(self.max_batch_size, 1)
        text_vectors = (
            self.vectorizer.encode_texts(texts, batch_size=batch, show_progress=False, allow_empty=True)
            if texts
            else np.empty((0, dim), np.float32)
        )
        image_vectors = (
            self.vectorizer.encode_prepared(images, batch_size=batch)
            if images
            else np.empty((0, dim), np.float32)
        )
        return text_vectors, image_vectors


class _Hold:
    def __init__(self, batcher: DynamicBatcher) -> None:
        self._batcher = batcher

    def __enter__(self) -> DynamicBatcher:
        with self._batcher._cond:
            self._batcher._holds += 1
        return self._batcher

    def __exit__(self, *exc: object) -> None:
        with self._batcher._cond:
            self._batcher._holds -= 1
            self._batcher._cond.notify_all()


def _settle(future: Future, *, result: Any = None, exception: BaseException | None = None) -> None:
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:  # cancelled in the meantime: nobody is waiting
        pass
