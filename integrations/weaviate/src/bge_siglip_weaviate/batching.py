"""Cross-request dynamic batching: many small requests -> few forward passes, each no bigger than pays.

Weaviate sends one request per object with many in flight; the reference container serialises them under a lock,
so the model runs with batch size 1-2 however busy the server is. Here every request (``/vectorize`` and
``/v1/embeddings`` alike) becomes a :class:`_Job` (validated texts and already patchified images,
:class:`~bge_siglip_vectorizer.PatchedImage`: never full-size decoded images) in one FIFO queue. A single worker
thread takes the oldest job and packs the following ones, whole and in arrival order, while they fit the forward
batch caps (:class:`~.batch_sizes.BatchSizes`: measured at start-up from what batching gains on this hardware and
refined from the forwards it serves, or pinned); it waits at most ``max_wait_s`` for more unless the batch is
already full. It encodes all their texts in one core call and all their images in another, times each call for
the refinement, and hands each job its own slice back, in order. A request that does not fit waits for the next
forward.

Admission (back-pressure, :mod:`.admission`): a request is held, not refused, until its body may be buffered
(``max_pending_body_bytes``) and its items fit in the queue (``max_queue_items``), in arrival order. A request whose
waiting (for room and for the worker; its own decoding not counted) passes ``max_queue_wait_s`` is answered 503
without being computed: Weaviate gives up after ``MODULES_CLIENT_TIMEOUT`` (50 s by default). Items are validated
before they are queued, so a batch cannot carry bad input; should a batch still fail, it is split in halves and
each retried, so one request's failure never becomes another's and costs O(log n) extra forwards, not n.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from bge_siglip_vectorizer import PatchedImage, Vectorizer

from .admission import Capacity, Overloaded, ShuttingDown, WaitBudget
from .batch_sizes import BatchSizes, measure_batch_sizes
from .settings import ServerSettings

__all__ = ["DynamicBatcher", "Overloaded", "ShuttingDown", "QueueTimeout", "Ticket", "BatcherStats", "BatchResult"]

logger = logging.getLogger("bge_siglip_weaviate.batching")

BatchResult = tuple[np.ndarray, np.ndarray]  # (text vectors, image vectors) of one job


class QueueTimeout(Exception):
    """The job waited longer than ``max_queue_wait_s`` in all; it was not computed (HTTP 503)."""


@dataclass
class BatcherStats:
    """Counters exposed in ``/meta``: compare ``worker_batches`` with ``requests`` to see batching at work."""

    requests: int = 0
    items: int = 0
    worker_batches: int = 0  # times the worker took jobs off the queue
    largest_batch_requests: int = 0  # most jobs packed into one worker batch
    held_for_room: int = 0  # requests that waited for room in the queue instead of being admitted at once
    rejected_overloaded: int = 0  # requests whose waiting budget ran out before there was room
    expired: int = 0  # jobs answered QueueTimeout instead of being computed
    failed: int = 0


@dataclass
class _Job:
    texts: list[str]
    images: list[PatchedImage]
    longest_text: int  # tokens of its longest text (0 without texts): which text batch cap applies
    waited_s: float  # time spent waiting for room before it was queued
    queued_at: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)
    released: bool = False  # admission given back (done just before answering, so capacity is free on reply)

    @property
    def size(self) -> int:
        return len(self.texts) + len(self.images)


class Ticket:
    """Admission for ``size`` items. Call :meth:`submit` once the items are decoded, or :meth:`cancel`.

    Admission happens before decoding so a busy server holds a request before spending CPU on it; the admitted
    items count against the bound until the worker has answered them.
    """

    def __init__(self, batcher: "DynamicBatcher", size: int, budget: WaitBudget) -> None:
        self._batcher = batcher
        self.size = size
        self.budget = budget
        self._open = True

    def submit(self, texts: list[str], images: list[PatchedImage], token_counts: Sequence[int] = ()) -> Future:
        """Queue validated texts and prepared images; the future resolves to ``(text_vectors, image_vectors)``.

        ``token_counts``: each text's token count (:meth:`Vectorizer.count_tokens`), for the text batch cap.
        """
        if not self._open:
            raise RuntimeError("ticket already used")
        if len(texts) + len(images) != self.size:
            raise ValueError(f"ticket admitted {self.size} items, got {len(texts) + len(images)}")
        self._open = False  # from here on the worker owns the admission and releases it
        longest = max(token_counts, default=0)
        return self._batcher._enqueue(_Job(list(texts), list(images), longest, self.budget.waited_s))

    def cancel(self) -> None:
        """Give the admission back (decoding failed). A no-op after :meth:`submit`."""
        if self._open:
            self._open = False
            self._batcher.items.release(self.size)


class DynamicBatcher:
    """A queue plus one worker thread that encodes the items of concurrent requests together.

    ``sizes``: the forward batch caps; by default measured (or pinned) from ``settings``
    (:func:`~.batch_sizes.measure_batch_sizes`). ``batching=False`` takes one request per forward round: the
    serialised behaviour of the reference container, kept for benchmarks and debugging.
    """

    def __init__(self, vectorizer: Vectorizer, settings: ServerSettings, sizes: BatchSizes | None = None) -> None:
        self.vectorizer = vectorizer
        self.settings = settings  # validated once, where they are declared
        self.sizes = sizes if sizes is not None else measure_batch_sizes(vectorizer, settings)
        # /meta counts served work only, not the measurement's forwards.
        self._stats_baseline = dataclasses.replace(vectorizer.stats)
        self.max_wait_s = settings.max_wait_ms / 1000.0
        self.max_queue_wait_s = settings.max_queue_wait_s
        self.batching = settings.batching
        self.items = Capacity(settings.max_queue_items, "items")
        self.bodies = Capacity(settings.max_pending_body_bytes, "bytes")
        self.stats = BatcherStats()
        self._queue: collections.deque[_Job] = collections.deque()
        self._holds = 0
        self._closed = False
        self._stopped = False
        self._cond = threading.Condition()
        self._worker = threading.Thread(target=self._run, name="bge-siglip-batcher", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------------------------------- admission
    async def admit(self, size: int, budget: WaitBudget) -> Ticket:
        """Reserve room for ``size`` items, waiting in arrival order while the budget lasts.

        Raises :class:`Overloaded` when it runs out first, :class:`ShuttingDown` when the server closes.
        """
        if not self.items.try_acquire(size):
            self.stats.held_for_room += 1
            try:
                await budget.acquire(self.items, size, "room in the queue")
            except Overloaded:
                self.stats.rejected_overloaded += 1
                raise
        return Ticket(self, size, budget)

    def try_admit(self, size: int, budget: WaitBudget | None = None) -> Ticket:
        """Reserve room for ``size`` items now or raise :class:`Overloaded` (for callers outside an event loop)."""
        if not self.items.try_acquire(size):
            self.stats.rejected_overloaded += 1
            raise Overloaded(f"server busy: {self.items.used} items queued, limit {self.items.total}")
        return Ticket(self, size, budget or WaitBudget(self.max_queue_wait_s))

    async def reserve_body(self, nbytes: int, budget: WaitBudget) -> None:
        """Wait (in arrival order, within the budget) until a body of ``nbytes`` may be buffered."""
        try:
            await budget.acquire(self.bodies, nbytes, "its turn to send its body")
        except Overloaded:
            self.stats.rejected_overloaded += 1
            raise

    def release_body(self, nbytes: int) -> None:
        self.bodies.release(nbytes)

    def _enqueue(self, job: _Job) -> Future:
        with self._cond:
            if self._stopped:  # the worker has drained and exited: nobody would ever answer this job
                self.items.release(job.size)
                raise ShuttingDown("server is shutting down")
            self._queue.append(job)
            self.stats.requests += 1
            self.stats.items += job.size
            self._cond.notify_all()
        return job.future

    @property
    def pending_items(self) -> int:
        """Items admitted and not yet answered."""
        return self.items.used

    @property
    def queued_requests(self) -> int:
        """Requests waiting in the queue (not yet taken by the worker)."""
        with self._cond:
            return len(self._queue)

    @property
    def waiting_requests(self) -> int:
        """Requests held before admission (waiting for room for their items or their body)."""
        return self.items.waiting + self.bodies.waiting

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
        self.items.close()
        self.bodies.close()
        self._worker.join(timeout)
        if self._worker.is_alive():
            logger.warning("batcher worker still busy after %.0fs; abandoning it", timeout or 0)

    def encode_stats(self) -> dict[str, int]:
        """The vectorizer's counters of served work (the start-up measurement left out)."""
        now, base = asdict(self.vectorizer.stats), asdict(self._stats_baseline)
        return {key: now[key] - base.get(key, 0) for key in now}

    def describe(self) -> dict[str, Any]:
        """Settings, chosen batch sizes and counters for ``/meta``."""
        with self._cond:
            queued = len(self._queue)
        return {
            "batching": self.batching,
            "batch_sizes": self.sizes.describe(),
            "max_wait_ms": self.max_wait_s * 1000.0,
            "max_queue_items": self.items.total,
            "max_queue_wait_s": self.max_queue_wait_s,
            "pending_items": self.items.used,
            "queued_requests": queued,
            "waiting_requests": self.waiting_requests,
            **asdict(self.stats),
            # Forward passes the model actually ran: fewer than requests means cross-request batching worked.
            "encode_stats": self.encode_stats(),
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
                for job in jobs:
                    self._release(job)

    def _take(self) -> list[_Job] | None:
        """Block for the next batch: the oldest job plus the following ones that fit the caps, in order."""
        with self._cond:
            while not self._queue or (self._holds and not self._closed):
                if self._closed and not self._queue:
                    self._stopped = True
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            jobs = [first]
            if not self.batching:
                return jobs
            pack = _Pack(self.sizes, first)
            deadline = time.monotonic() + self.max_wait_s
            while not pack.full:
                if self._queue:
                    # Whole jobs only, in arrival order: one that does not fit starts the next batch.
                    if not pack.fits(self._queue[0]):
                        break
                    job = self._queue.popleft()
                    pack.add(job)
                    jobs.append(job)
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
            waited = job.waited_s + (now - job.queued_at)
            if waited > self.max_queue_wait_s:
                self.stats.expired += 1
                self._answer(job, exception=QueueTimeout(
                    f"request waited {waited:.1f}s for the batch worker, over the server's limit of "
                    f"{self.max_queue_wait_s:g}s; not computed (server overloaded, retry later)"
                ))
            else:
                fresh.append(job)
        if fresh:
            self._encode_isolated(fresh)

    def _encode_isolated(self, jobs: list[_Job]) -> None:
        """Encode ``jobs`` together; if that fails, halve and retry, so only the failing request gets the error."""
        try:
            texts, images = self._encode(jobs)
        except Exception as exc:  # noqa: BLE001 - isolate below, or report to the one caller
            if len(jobs) == 1:
                self.stats.failed += 1
                self._answer(jobs[0], exception=exc)
                return
            logger.warning("batch of %d requests failed (%s); retrying it in halves", len(jobs), exc)
            middle = len(jobs) // 2
            self._encode_isolated(jobs[:middle])
            self._encode_isolated(jobs[middle:])
            return
        t = i = 0
        for job in jobs:
            result = (texts[t : t + len(job.texts)], images[i : i + len(job.images)])
            t += len(job.texts)
            i += len(job.images)
            self._answer(job, result=result)

    def _release(self, job: _Job) -> None:
        if not job.released:
            job.released = True
            self.items.release(job.size)

    def _answer(self, job: _Job, *, result: Any = None, exception: BaseException | None = None) -> None:
        # Capacity first: a client that got its answer and sends the next request must find room for it.
        self._release(job)
        _settle(job.future, result=result, exception=exception)

    def _encode(self, jobs: list[_Job]) -> BatchResult:
        # One core call per modality: the core sorts by size, de-duplicates identical items (bit-identical vectors,
        # also across requests) and splits into forward batches of at most the cap. Texts may be "" or blank:
        # Weaviate sends empty text fields too, and the reference container embeds them.
        dim = self.vectorizer.dim
        texts = [t for job in jobs for t in job.texts]
        images = [i for job in jobs for i in job.images]
        longest = max(job.longest_text for job in jobs)
        sizes = self.sizes
        text_vectors = (
            self._timed("texts", len(texts), lambda: self.vectorizer.encode_texts(
                texts, batch_size=sizes.text_cap(longest), show_progress=False, allow_empty=True),
                lambda seconds: sizes.observe_texts(len(texts), longest, seconds),
                lambda: sizes.texts_failed(longest))
            if texts
            else np.empty((0, dim), np.float32)
        )
        longest_image = max((image.num_patches for image in images), default=0)
        image_vectors = (
            self._timed("images", len(images), lambda: self.vectorizer.encode_prepared(
                images, batch_size=sizes.image_cap), lambda seconds: sizes.observe_images(
                len(images), longest_image, seconds), sizes.images_failed)
            if images
            else np.empty((0, dim), np.float32)
        )
        return text_vectors, image_vectors

    def _timed(self, kind: str, count: int, encode: Callable[[], np.ndarray], observe: Callable[[float], None],
               failed: Callable[[], None]) -> np.ndarray:
        """Run one core call; if it ran as exactly one forward of all ``count`` items (none de-duplicated), its
        wall time is a timing for the online refinement of the batch sizes. A failure is reported to it too."""
        stats = self.vectorizer.stats
        batches = f"{kind[:-1]}_batches"
        before = getattr(stats, batches), getattr(stats, kind)
        started = time.perf_counter()
        try:
            vectors = encode()
        except Exception:
            failed()
            raise
        seconds = time.perf_counter() - started
        if (getattr(stats, batches) - before[0], getattr(stats, kind) - before[1]) == (1, count):
            observe(seconds)
        return vectors


class _Pack:
    """The items of one worker batch, against the forward caps."""

    def __init__(self, sizes: BatchSizes, first: _Job) -> None:
        self.sizes = sizes
        self.texts = self.images = self.longest = 0
        self.add(first)

    def add(self, job: _Job) -> None:
        self.texts += len(job.texts)
        self.images += len(job.images)
        self.longest = max(self.longest, job.longest_text)

    def fits(self, job: _Job) -> bool:
        longest = max(self.longest, job.longest_text)
        images_fit = not job.images or self.images + len(job.images) <= self.sizes.image_cap
        texts_fit = not job.texts or self.texts + len(job.texts) <= self.sizes.text_cap(longest)
        return images_fit and texts_fit

    @property
    def full(self) -> bool:
        return (self.images >= self.sizes.image_cap) or (self.texts >= self.sizes.text_cap(self.longest))


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
