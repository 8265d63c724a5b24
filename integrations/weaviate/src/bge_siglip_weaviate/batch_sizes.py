"""How big a forward batch is worth making, measured on the hardware the server runs on.

Cross-request batching gains only what a bigger forward batch gains. On a GPU that is a lot (one image leaves most
of the chip idle); on a few CPU cores one 256-patch image already keeps the cores busy, so gathering 16-29 requests
into one forward buys ~nothing and makes every request wait for the whole batch. So at start-up, before it reports
ready, the server times a few warm forward passes of synthetic inputs at its own patch budget, doubling the batch
size from 1 while the throughput (items per second) still rises by ``batch_gain_margin`` (5%) over the best so far
(two sizes in a row without gain end it: one noisy timing does not), and caps its batches at the smallest size
within that margin of the best measured. Texts are measured the same way per
token-length bucket (a 512-token text is ~30x the work of a 16-token one, so it gains less from company); a longer
bucket never tries more than the cap of the shorter one. Texts longer than the last bucket (BGE-M3 takes 8192
tokens) are not measured: one forward of 8192 tokens takes ~100 s on 2 CPU cores, and longer texts only gain less
from company. Their batches hold at most the tokens of the last bucket's start-up batch (its cap x its bound), and
at least one text. A time budget per modality bounds the measurement: a size is only timed while the budget allows (the
first forward, a warm-up, predicts the first size's cost); once spent, the best size measured so far is used.

The start-up curve is short and taken on an idle machine: on a slow host its budget ends it after batch 2, and one
noisy timing can put batch 2 under batch 1. So the server goes on measuring from the forwards it serves
(:class:`OnlineRefinement`, on by default): every served forward that ran as one batch is a free timing, and the
next forwards may be allowed a neighbouring size, to learn what it gains. Each text bucket learns from its own
forwards (the start-up rule that a longer bucket tries no more than a shorter one's cap only saves start-up time).

:func:`choose_batch_size` is the policy alone, with the forward pass and the clock injected (tests drive it with a
fake throughput curve); :func:`measure_batch_sizes` applies it to a loaded :class:`~bge_siglip_vectorizer.Vectorizer`.
A pinned ``max_batch_size`` (or ``batching=False``) skips the measurement and the refinement.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from bge_siglip_vectorizer import Vectorizer

from .settings import ServerSettings

__all__ = ["BatchSizes", "Curve", "OnlineRefinement", "Point", "choose_batch_size", "measure_batch_sizes",
           "TEXT_BUCKETS"]

logger = logging.getLogger("bge_siglip_weaviate.batch_sizes")

Clock = Callable[[], float]
#: Token-length buckets texts are measured and batched by (each cut to the text tower's limit); longer texts are
#: batched by the last bucket's token count (:meth:`BatchSizes.text_cap`).
TEXT_BUCKETS = (16, 64, 256, 512)
#: Each size is timed at least _MIN_REPEATS times, and while the runs add up to less than _MIN_TIMED_S, up to
#: _MAX_REPEATS; the best run counts (interference only ever makes a run slower).
_MIN_REPEATS = 2
_MIN_TIMED_S = 0.2
_MAX_REPEATS = 5
#: Doubling stops after this many sizes in a row without gain: on a 2-core machine at 64 patches a single timing
#: dip (batch 4 at 2.57/s between 2.62 and 2.99) otherwise ended the curve at batch 2, ~20% below the best.
_PATIENCE = 2
#: Online refinement: a size's estimate is the median of its timings among the last _ONLINE_WINDOW, counting those
#: from the last _STALE_AFTER served forwards, once it has _ONLINE_SAMPLES of them; older ones are measured again.
_ONLINE_SAMPLES = 2
_ONLINE_WINDOW = 5
_STALE_AFTER = 100
#: Served probes climb one doubling at a time: a probe twice the size of one that gained nothing makes a burst's
#: requests wait for a forward 4x the chosen one (on 2 cores at 256 patches, probing 16 above a chosen 4 moved the
#: p50 of a 32-request burst from 15 to 18 s). The start-up curve, on synthetic inputs, keeps its patience of 2.
_ONLINE_PATIENCE = 1
#: A forward is a timing of the size in force if it held at least this share of it (jobs are packed whole, so 3-item
#: jobs fill 6 of 8); a shorter one ran at what the queue held and says little about that size.
_FULL_SHARE = 0.75
#: A change of the chosen size is logged at INFO at most this often per curve (a GPU runs hundreds of forwards a
#: second); in between at DEBUG, and the size then in force at INFO once the interval is over.
_LOG_EVERY_S = 60.0


class OnlineRefinement:
    """Keeps choosing one curve's batch size from the forwards the server serves.

    A served forward that ran as one batch and held at least ``_FULL_SHARE`` of the size in force is a timing of
    that size: items per second, scaled to full-length items (``scale``: padded length / the curve's length, since
    a forward pads to its longest item). Per size, the estimate is the median of its recent timings (the last
    ``_ONLINE_WINDOW``, from the last ``_STALE_AFTER`` forwards) once it has ``_ONLINE_SAMPLES``. The chosen size
    is, as at start-up, the smallest estimated size within ``margin`` of the best estimate, decided only while
    the size in force has an estimate (until then the start-up choice holds).

    To learn what the sizes around it gain, the next forward may be allowed another size (a *probe*): twice the
    chosen size (``_ONLINE_PATIENCE``; while each doubling gains, the climb goes on), then half of it, each until it
    has an estimate. A probe only changes the limit of forwards that run anyway, and nothing runs for the sake of
    measuring: a probe the queue does not fill (``_ONLINE_SAMPLES`` short forwards under it) is given up, and under
    light load forwards stay as small as the queue and are no timings. A forward that fails under a probe above
    the chosen size (out of memory, say) ends the climb there: the ceiling comes down to the chosen size.

    Served forwards run while requests decode beside them, so their timings are kept apart from the start-up curve
    (taken on an idle machine). Thread-safe: the batch worker plans and observes, ``/meta`` reads :meth:`describe`.
    """

    def __init__(self, chosen: int, *, ceiling: int, margin: float, label: str = "",
                 clock: Clock = time.monotonic) -> None:
        self.chosen = max(1, min(chosen, ceiling))
        self.ceiling = ceiling
        self.margin = margin
        self.label = label
        self.forwards = 0  # served forwards observed, timings or not (the clock timings age by)
        self.changes = 0  # times the chosen size changed
        self._clock = clock
        self._timings: dict[int, deque[tuple[int, float]]] = {}  # size -> (forward number, items/s), newest last
        self._counts: dict[int, int] = {}  # size -> timings taken at it, all of them
        self._given_up: dict[int, int] = {}  # probed size -> forward number it was given up at (not filled)
        self._probe: int | None = None
        self._short = 0  # short forwards under the current probe
        self._logged_at = -math.inf
        self._unlogged = False  # a change logged at DEBUG only
        self._lock = threading.Lock()

    def next_size(self) -> int:
        """The most items the next forward may take: the chosen size, or the size being probed."""
        probe = self._probe
        return self.chosen if probe is None else probe

    @property
    def probing(self) -> int | None:
        return self._probe

    def observe(self, size: int, seconds: float, scale: float = 1.0) -> int:
        """Record a served forward of ``size`` items (one batch) that took ``seconds``; returns the chosen size."""
        if size < 1 or seconds <= 0:
            return self.chosen
        with self._lock:
            self.forwards += 1
            cap = self.next_size()
            if size >= _FULL_SHARE * cap:
                timings = self._timings.setdefault(cap, deque(maxlen=_ONLINE_WINDOW))
                timings.append((self.forwards, size * scale / seconds))
                self._counts[cap] = self._counts.get(cap, 0) + 1
            elif self._probe is not None:
                self._short += 1
                if self._short >= _ONLINE_SAMPLES:  # the load does not fill it: try it again when others go stale
                    self._given_up[self._probe] = self.forwards
            self._decide()
            return self.chosen

    def failed(self) -> None:
        """A forward under the current limit failed: if it was a probe above the chosen size, climb no higher."""
        with self._lock:
            if self._probe is not None and self._probe > self.chosen:
                logger.warning("%s: a forward of up to %d items failed; forward batches stay at most %d",
                               self.label or "batch size", self._probe, self.chosen)
                self.ceiling = self.chosen
            self._decide()

    def _decide(self) -> None:
        before = self.chosen
        estimates = self._estimates()
        if self.chosen in estimates:  # short forwards alone never overrule the start-up choice
            best = max(estimates.values())
            self.chosen = min(s for s, rate in estimates.items() if rate * (1 + self.margin) >= best)
        probe = self._next_probe(estimates)
        if probe != self._probe:
            self._probe, self._short = probe, 0
        if self.chosen != before:
            self.changes += 1
            self._log(f"forward batch size {before} -> {self.chosen}", estimates)
        elif self._unlogged and self._clock() - self._logged_at >= _LOG_EVERY_S:
            self._log(f"forward batch size now {self.chosen}", estimates)

    def _estimates(self) -> dict[int, float]:
        recent = {size: [rate for number, rate in timings if number > self.forwards - _STALE_AFTER]
                  for size, timings in self._timings.items()}
        return {size: statistics.median(rates) for size, rates in recent.items()
                if len(rates) >= _ONLINE_SAMPLES and size <= self.ceiling}

    def _next_probe(self, estimates: dict[int, float]) -> int | None:
        chosen = self.chosen
        if chosen not in estimates:
            return None  # the chosen size first: probes are compared with its served timings
        above = [min(chosen * 2**k, self.ceiling) for k in range(1, _ONLINE_PATIENCE + 1)]
        below = [chosen // 2] if chosen > 1 else []
        for size in dict.fromkeys(above + below):
            given_up = self._given_up.get(size)
            recently_given_up = given_up is not None and given_up > self.forwards - _STALE_AFTER
            if size != chosen and size not in estimates and not recently_given_up:
                return size
        return None

    def _log(self, what: str, estimates: dict[int, float]) -> None:
        now = self._clock()
        info = now - self._logged_at >= _LOG_EVERY_S
        if info:
            self._logged_at = now
        self._unlogged = not info
        curve = ", ".join(f"{s}: {rate:.3g}/s" for s, rate in sorted(estimates.items()))
        logger.log(logging.INFO if info else logging.DEBUG, "%s: %s from the forwards served (%s; %d changes)",
                   self.label or "batch size", what, curve, self.changes)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            estimates = self._estimates()
            return {
                "max_batch_size": self.chosen,
                "probing": self._probe,
                "ceiling": self.ceiling,
                "forwards": self.forwards,
                "changes": self.changes,
                "curve": [{"batch_size": size, "items_per_s": round(estimates[size], 3) if size in estimates else None,
                           "timings": self._counts[size]} for size in sorted(self._counts)],
            }


@dataclass(frozen=True)
class Point:
    batch_size: int
    seconds: float  # best wall time of one forward of this size
    items_per_s: float


@dataclass
class Curve:
    """Throughput against batch size for one kind of input, and the size chosen from it."""

    chosen: int  # from the start-up curve, then as the online refinement (if any) chooses
    points: list[Point] = field(default_factory=list)
    stopped: str = ""  # why the measurement stopped: "no gain", "budget", "ceiling", "pinned", ...
    seconds: float = 0.0  # time the measurement took
    online: OnlineRefinement | None = field(default=None, compare=False, repr=False)
    start_chosen: int = field(init=False)  # what the start-up curve chose

    def __post_init__(self) -> None:
        self.start_chosen = self.chosen

    def refine_online(self, *, ceiling: int, margin: float, label: str) -> None:
        """Go on choosing from the forwards the server serves (:class:`OnlineRefinement`)."""
        self.online = OnlineRefinement(self.chosen, ceiling=ceiling, margin=margin, label=label)

    @property
    def cap(self) -> int:
        """The most items the next forward may take (a probe of the online refinement, or the chosen size)."""
        return self.chosen if self.online is None else self.online.next_size()

    def observe(self, size: int, seconds: float, scale: float = 1.0) -> None:
        """A served forward of ``size`` items took ``seconds`` (ignored without online refinement)."""
        if self.online is not None:
            self.chosen = self.online.observe(size, seconds, scale)

    def failed(self) -> None:
        if self.online is not None:
            self.online.failed()
            self.chosen = self.online.chosen

    def describe(self) -> dict[str, Any]:
        return {
            "max_batch_size": self.chosen,  # now (refined online, if on)
            "start_up_max_batch_size": self.start_chosen,
            "stopped": self.stopped,
            "measure_seconds": round(self.seconds, 3),
            "curve": [{"batch_size": p.batch_size, "items_per_s": round(p.items_per_s, 3),
                       "seconds": round(p.seconds, 4)} for p in self.points],
            "online": None if self.online is None else self.online.describe(),
        }

    def summary(self) -> str:
        curve = ", ".join(f"{p.batch_size}: {p.items_per_s:.3g}/s" for p in self.points) or "not measured"
        refined = "" if self.online is None else "; refined online from served forwards"
        return f"{self.start_chosen} ({self.stopped}; {curve}{refined})"


@dataclass
class BatchSizes:
    """The forward batch caps the batch worker packs requests by."""

    images: Curve
    #: ``(max_tokens, curve)`` ascending; beyond the last bound, batches keep to the last bucket's token count.
    texts: list[tuple[int, Curve]]
    mode: str  # "measured", "pinned" or "no batching"
    patches: int = 0  # the image patch budget the image curve was measured at
    text_limit: float = math.inf  # the text tower's limit in tokens (no text is longer)

    @classmethod
    def fixed(cls, size: int, mode: str, patches: int = 0) -> "BatchSizes":
        """One cap for everything, not measured."""
        return cls(Curve(size, stopped=mode), [(math.inf, Curve(size, stopped=mode))], mode, patches)  # type: ignore[list-item]

    @property
    def image_cap(self) -> int:
        return self.images.cap

    def text_cap(self, tokens: int) -> int:
        """The cap for a forward whose longest text has ``tokens`` tokens."""
        curve = self._text_curve(tokens)
        if curve is not None:
            return curve.cap
        bound, curve = self.texts[-1]
        return max(1, curve.start_chosen * bound // tokens)  # no more tokens than the last bucket's start-up batch

    def _text_curve(self, tokens: int) -> Curve | None:
        """The bucket's curve for a forward whose longest text has ``tokens`` tokens (None: longer than all)."""
        for bound, curve in self.texts:
            if tokens <= bound:
                return curve
        return None

    def observe_images(self, count: int, longest: int, seconds: float) -> None:
        """A served forward of ``count`` images (one batch, padded to ``longest`` patches) took ``seconds``."""
        self.images.observe(count, seconds, scale=longest / self.patches if self.patches else 1.0)

    def observe_texts(self, count: int, longest: int, seconds: float) -> None:
        """A served forward of ``count`` texts, the longest ``longest`` tokens, took ``seconds``."""
        curve = self._text_curve(longest)
        if curve is not None:  # longer texts keep to the last bucket's tokens; their forwards teach no bucket
            bound = next(b for b, c in self.texts if c is curve)
            # Timed as texts of the bucket's length: the forward pads to its longest text.
            curve.observe(count, seconds, scale=longest / bound if math.isfinite(bound) else 1.0)

    def images_failed(self) -> None:
        """A forward of images failed: a size being probed above the chosen one is not tried again."""
        self.images.failed()

    def texts_failed(self, longest: int) -> None:
        curve = self._text_curve(longest)
        if curve is not None:
            curve.failed()

    @property
    def longer_texts_max_tokens(self) -> int | None:
        """The most tokens one forward of texts longer than every bucket holds (None: no such texts).

        From the start-up choice: their forwards are never timed (an 8192-token forward takes ~100 s on 2 CPU
        cores), so the refinement of the last bucket does not widen them."""
        bound, curve = self.texts[-1]
        return None if math.isinf(bound) or bound >= self.text_limit else curve.start_chosen * bound

    @property
    def largest(self) -> int:
        return max([self.images.chosen] + [curve.chosen for _, curve in self.texts])

    def describe(self) -> dict[str, Any]:
        """For ``/meta``."""
        return {
            "mode": self.mode,
            "images": {"max_num_patches": self.patches, **self.images.describe()},
            "texts": [{"max_tokens": bound if math.isfinite(bound) else None, **curve.describe()}
                      for bound, curve in self.texts],
            "longer_texts_max_batch_tokens": self.longer_texts_max_tokens,
        }

    def summary(self) -> str:
        """One log line."""
        texts = "; ".join(f"<= {bound} tokens: {curve.summary()}" for bound, curve in self.texts)
        longer = self.longer_texts_max_tokens
        texts += f"; longer: at most {longer} tokens per forward" if longer is not None else ""
        return f"forward batch sizes ({self.mode}): images at {self.patches} patches: {self.images.summary()}; " \
               f"texts {texts}"


def choose_batch_size(
    run: Callable[[int], object],
    *,
    ceiling: int,
    margin: float,
    budget_s: float,
    clock: Clock = time.perf_counter,
) -> Curve:
    """Time ``run(batch_size)`` (one forward of that many items) at 1, 2, 4, ... up to ``ceiling``.

    A size *gains* when its throughput beats the best so far by ``margin``. Doubling stops after
    ``_PATIENCE`` sizes in a row that gain nothing (one timing dip on a busy machine is not the end of the curve),
    at ``ceiling``, or when the next size would take the measurement past ``budget_s`` (its cost predicted from
    the last). The chosen size is the smallest measured one whose throughput is within ``margin`` of the best:
    bigger batches make every request in them wait longer, so they must pay for it. Batch 1 is timed after one
    warm-up forward, as often as the budget allows (the warm-up's own time, if not even once more).
    """
    started = clock()
    if ceiling <= 1:
        return Curve(1, stopped="ceiling")
    run(1)  # warm-up: the first forward of a process (or of a new shape) allocates and is not representative
    warm = clock() - started
    if warm + _MIN_REPEATS * warm > budget_s:  # the slowest case first: no room to time batch 1 properly
        seconds = _best_time(run, 1, clock, repeats=1) if 2 * warm <= budget_s else max(warm, 1e-9)
        return Curve(1, [Point(1, seconds, 1 / seconds)], "budget", clock() - started)
    points: list[Point] = []
    size = 1
    stopped = "ceiling"
    best = 0.0  # the best throughput measured so far
    flat = 0  # sizes in a row that gained nothing over the best before them
    while True:
        seconds = _best_time(run, size, clock)
        point = Point(size, seconds, size / seconds)
        points.append(point)
        flat = 0 if point.items_per_s >= best * (1 + margin) else flat + 1
        best = max(best, point.items_per_s)
        if flat >= _PATIENCE:
            stopped = "no gain"
            break
        if size >= ceiling:
            break
        following = min(2 * size, ceiling)
        if clock() - started + _MIN_REPEATS * seconds * following / size > budget_s:
            stopped = "budget"
            break
        size = following
    chosen = min(point.batch_size for point in points if point.items_per_s * (1 + margin) >= best)
    return Curve(chosen, points, stopped, clock() - started)


def _best_time(run: Callable[[int], object], size: int, clock: Clock, repeats: int = _MIN_REPEATS) -> float:
    timings: list[float] = []
    while len(timings) < repeats or (sum(timings) < _MIN_TIMED_S and len(timings) < _MAX_REPEATS):
        start = clock()
        run(size)
        timings.append(clock() - start)
    return max(min(timings), 1e-9)


def measure_batch_sizes(
    vectorizer: Vectorizer, settings: ServerSettings, clock: Clock = time.perf_counter
) -> BatchSizes:
    """The caps for this server: pinned by the settings, or measured on ``vectorizer`` (seconds on a CPU)."""
    if not settings.batching:
        # One request per round; its own items still go through the model together, as in the reference.
        size = settings.max_batch_size or settings.adaptive_max_batch_size
        return BatchSizes.fixed(size, "no batching", vectorizer.max_num_patches)
    if settings.max_batch_size is not None:
        return BatchSizes.fixed(settings.max_batch_size, "pinned", vectorizer.max_num_patches)
    options = dict(ceiling=settings.adaptive_max_batch_size, margin=settings.batch_gain_margin, clock=clock)
    images = _SyntheticImages(vectorizer)
    image_curve = choose_batch_size(images.run, budget_s=settings.batch_probe_budget_s, **options)
    texts = _SyntheticTexts(vectorizer)
    bounds = sorted({min(b, vectorizer.text_max_length) for b in TEXT_BUCKETS})
    text_curves: list[tuple[int, Curve]] = []
    spent, ceiling = 0.0, settings.adaptive_max_batch_size
    for number, bound in enumerate(bounds):
        # The budget left is shared by the buckets still to measure.
        budget = (settings.batch_probe_budget_s - spent) / (len(bounds) - number)
        curve = choose_batch_size(lambda b, bound=bound: texts.run(b, bound), budget_s=budget,
                                  **{**options, "ceiling": ceiling})
        spent += curve.seconds
        ceiling = curve.chosen  # longer texts gain less from batching than shorter ones
        text_curves.append((bound, curve))
    if settings.refine_batch_sizes:
        ceiling, margin = settings.adaptive_max_batch_size, settings.batch_gain_margin
        image_curve.refine_online(ceiling=ceiling, margin=margin,
                                  label=f"images at {vectorizer.max_num_patches} patches")
        for bound, curve in text_curves:
            curve.refine_online(ceiling=ceiling, margin=margin, label=f"texts of <= {bound} tokens")
    return BatchSizes(image_curve, text_curves, "measured", vectorizer.max_num_patches, vectorizer.text_max_length)


class _SyntheticImages:
    """Distinct random images that fill the patch budget (identical ones would be de-duplicated by the core)."""

    def __init__(self, vectorizer: Vectorizer) -> None:
        self.vectorizer = vectorizer
        side = vectorizer.preprocessing.patch_size * max(1, math.isqrt(vectorizer.max_num_patches))
        self._shape = (side, side, 3)
        self._rng = np.random.default_rng(0)
        self._prepared: list[Any] = []

    def run(self, size: int) -> None:
        while len(self._prepared) < size:
            array = self._rng.integers(0, 256, self._shape, dtype=np.uint8)
            self._prepared.extend(self.vectorizer.prepare_images([array], show_progress=False))
        self.vectorizer.encode_prepared(self._prepared[:size], batch_size=size)


class _SyntheticTexts:
    """Distinct texts of about ``tokens`` tokens each; new ones every call, so nothing is de-duplicated."""

    _WORDS = ("photo", "of", "a", "dog", "on", "the", "beach", "at", "sunset", "with", "red", "ball", "and", "cat")

    def __init__(self, vectorizer: Vectorizer) -> None:
        self.vectorizer = vectorizer
        self._serial = 0
        self._words_per_token: dict[int, int] = {}

    def _text(self, words: int) -> str:
        self._serial += 1
        return f"{self._serial} " + " ".join(self._WORDS[(self._serial + j) % len(self._WORDS)] for j in range(words))

    def _words_for(self, tokens: int) -> int:
        if tokens not in self._words_per_token:
            words = max(1, tokens)
            # Fewer words until the text fits the bucket (words are one or a few tokens each).
            while words > 1 and self.vectorizer.count_tokens([self._text(words)])[0] > tokens:
                words = max(1, int(words * 0.8))
            self._words_per_token[tokens] = words
        return self._words_per_token[tokens]

    def run(self, size: int, tokens: int) -> None:
        words = self._words_for(tokens)
        self.vectorizer.encode_texts([self._text(words) for _ in range(size)], batch_size=size, show_progress=False)
