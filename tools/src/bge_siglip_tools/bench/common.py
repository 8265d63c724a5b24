"""Timing and result types shared by every scenario.

Timings on a shared 2-core machine are noisy, so every comparison is measured *interleaved*: after warm-up, the
contenders run in rotating order (A B C, B C A, C A B, ...) so a burst of foreign load hits all of them alike.
A measurement keeps every raw wall time; its throughput is reported as the median with the min-max range, and a
ratio as the ratio of medians with the range of the per-round (paired) ratios.

Every run also records how much CPU *other* processes used meanwhile (:class:`CpuMonitor`). A run during which they
used more than ``NOISY`` of the machine is repeated once (bounded), kept in the JSON, and left out of the median
while at least one quiet run exists.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator


#: A run during which other processes used more than this share of the machine's CPU counts as disturbed.
NOISY = 0.25


def log(message: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Measurement:
    """Wall times of repeated runs of one contender, each processing ``items`` items."""

    label: str
    items: int
    unit: str = "img/s"
    seconds: list[float] = field(default_factory=list)
    # Per run: share of the machine's CPU time used by other processes meanwhile (0.0 = quiet, 1.0 = all of it).
    foreign: list[float] = field(default_factory=list)

    @property
    def rates(self) -> list[float]:
        return [self.items / s if s > 0 else math.inf for s in self.seconds]

    def quiet(self, index: int) -> bool:
        """Whether run ``index`` ran without heavy foreign load (unknown load counts as quiet)."""
        share = self.foreign[index] if index < len(self.foreign) else math.nan
        return not (share > NOISY)  # NaN -> quiet

    @property
    def counted(self) -> list[float]:
        """The rates the statistics use: the quiet runs', or every run's if none was quiet."""
        quiet = [r for i, r in enumerate(self.rates) if self.quiet(i)]
        return quiet or self.rates

    @property
    def median(self) -> float:
        return statistics.median(self.counted) if self.seconds else math.nan

    @property
    def low(self) -> float:
        return min(self.counted) if self.seconds else math.nan

    @property
    def high(self) -> float:
        return max(self.counted) if self.seconds else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit": self.unit,
            "items_per_run": self.items,
            "seconds": [round(s, 6) for s in self.seconds],
            "rates": [round(r, 6) for r in self.rates],
            "median": _finite(self.median),
            "min": _finite(self.low),
            "max": _finite(self.high),
            "median_seconds": _finite(statistics.median(self.seconds)) if self.seconds else None,
            "foreign_cpu_share": [round(f, 3) if math.isfinite(f) else None for f in self.foreign],
            "runs_counted": len(self.counted),
        }


@dataclass
class Comparison:
    """``ours`` vs ``baseline``: ratio of median rates (> 1 means ours is faster), checked against ``target``."""

    label: str
    ours: Measurement
    baseline: Measurement
    target: float | None = None
    note: str = ""
    condition: bool | None = None  # a further requirement of the target (e.g. int8 cosine), None if there is none

    @property
    def ratio(self) -> float:
        return self.ours.median / self.baseline.median if self.baseline.median else math.nan

    @property
    def paired(self) -> list[float]:
        # Round i of ours against round i of the baseline: they ran back to back, under the same load.
        # Only pairs the medians also count: both runs quiet, or every run if a side has no quiet run at all.
        pairs = list(zip(self.ours.rates, self.baseline.rates))

        def counts(m: Measurement, i: int) -> bool:
            return m.quiet(i) or not any(m.quiet(j) for j in range(len(m.seconds)))

        return [a / b for i, (a, b) in enumerate(pairs) if b and counts(self.ours, i) and counts(self.baseline, i)]

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return bool(self.ratio >= self.target and self.condition is not False)

    def to_json(self) -> dict[str, Any]:
        paired = self.paired
        return {
            "label": self.label,
            "ours": self.ours.label,
            "baseline": self.baseline.label,
            "ratio": _finite(self.ratio),
            "paired_ratios": [round(r, 6) for r in paired],
            "ratio_min": _finite(min(paired)) if paired else None,
            "ratio_max": _finite(max(paired)) if paired else None,
            "target": self.target,
            "met": self.met,
            "condition": self.condition,
            "note": self.note,
        }


@dataclass
class ScenarioResult:
    """Everything one scenario reports: raw measurements, ratios, correctness checks and notes."""

    name: str
    number: int
    title: str
    measurements: list[Measurement] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)  # short lines the printed table shows under the scenario
    status: str = "ok"
    error: str | None = None
    duration_s: float = 0.0

    def add(self, measurement: Measurement) -> Measurement:
        self.measurements.append(measurement)
        return measurement

    def compare(self, label: str, ours: Measurement, baseline: Measurement, target: float | None = None,
                note: str = "", condition: bool | None = None) -> Comparison:
        comparison = Comparison(label, ours, baseline, target, note, condition)
        self.comparisons.append(comparison)
        return comparison

    @contextmanager
    def part(self, label: str) -> Iterator[None]:
        """One independent part of a scenario (a patch budget, a store): if it raises, the error is recorded, the
        scenario is marked failed, and what the other parts measured is kept (the run goes on to the next part)."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - a later part failing must not lose the earlier parts' numbers
            self.record_error(exc, label)

    def record_error(self, exc: BaseException, part: str | None = None) -> None:
        """Mark the scenario failed by ``exc``, raised in ``part`` (``None``: the scenario as a whole). Errors add
        up in ``error``; each traceback is kept in ``details["tracebacks"]`` under its part (or ``"scenario"``)."""
        message = f"{type(exc).__name__}: {exc}"
        if part is not None:
            message = f"{part}: {message}"
        self.status = "error"
        self.error = message if self.error is None else f"{self.error}; {message}"
        self.details.setdefault("tracebacks", {})[part or "scenario"] = "".join(traceback.format_exception(exc))
        log(f"{self.name}, {message}")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "number": self.number,
            "title": self.title,
            "status": self.status,
            "error": self.error,
            "duration_s": round(self.duration_s, 3),
            "measurements": [m.to_json() for m in self.measurements],
            "comparisons": [c.to_json() for c in self.comparisons],
            "checks": _jsonable(self.checks),
            "details": _jsonable(self.details),
            "summary": list(self.summary),
            "notes": list(self.notes),
        }


class CpuMonitor:
    """How much CPU *other* processes used over an interval: machine busy time (``/proc/stat``) minus ours.

    The machine is shared; this tells a reader which timings were taken while someone else was computing.
    ``share()`` is 0.0 on a quiet machine and 1.0 if others used every core the whole time (None off Linux).
    "Ours" is this process and every process it started, however deep (:func:`own_cpu_seconds`): a load
    generator, a child Python, a local Ray cluster and the actors it starts are the benchmark, not foreign load.
    """

    def __init__(self) -> None:
        self._cpus = os.cpu_count() or 1
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, dict[int, float]] | None:
        try:
            with open("/proc/stat", encoding="ascii") as handle:
                fields = [int(x) for x in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        busy = (sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)) / tick  # all but idle and iowait
        return time.perf_counter(), busy, own_cpu_seconds(tick)

    def share(self) -> float | None:
        end = self._sample()
        if end is None or self._start is None:
            return None
        wall = end[0] - self._start[0]
        if wall < 0.5:  # CPU times tick in 10 ms steps: shorter intervals give noise, not a measurement
            return None
        foreign = (end[1] - self._start[1]) - cpu_used(self._start[2], end[2])
        return min(1.0, max(0.0, foreign / (wall * self._cpus)))


def _stat_fields(pid: str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after ``pid (comm)`` (comm may contain spaces), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def own_cpu_seconds(tick: int = 100) -> dict[int, float]:
    """CPU seconds (user + system) so far of this process (with the children it has reaped) and of each of its live
    descendants, however deep, by process id. Compare two samples with :func:`cpu_used`."""
    parents: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        pids = []
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is None:
            continue
        try:  # fields 4 (ppid), 14 and 15 (utime, stime) of proc(5), counted here from "state" = 0
            parents.setdefault(int(fields[1]), []).append(int(pid))
            times[int(pid)] = (int(fields[11]) + int(fields[12])) / tick
        except (ValueError, IndexError):
            continue
    me = os.getpid()
    own = os.times()
    sample = {me: own.user + own.system + own.children_user + own.children_system}
    stack = list(parents.get(me, ()))
    while stack:
        pid = stack.pop()
        sample[pid] = times.get(pid, 0.0)
        stack.extend(parents.get(pid, ()))
    return sample


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """What this process tree used between two :func:`own_cpu_seconds` samples: each process still there at the
    end counts its growth (a new one all of its time). A descendant that ended in between (a Ray actor torn down)
    counts nothing more, instead of taking its whole past off the total; its own children's reaped times are
    never read, so nothing is counted twice."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def wait_for_quiet(max_wait_s: float = 120.0, threshold: float = 0.25) -> float | None:
    """Before timing, wait (at most ``max_wait_s``) while other processes use more than ``threshold`` of the CPU.
    Returns the last measured foreign share."""
    deadline = time.monotonic() + max_wait_s
    while True:
        monitor = CpuMonitor()
        time.sleep(1.0)
        share = monitor.share()
        if share is None or share <= threshold or time.monotonic() > deadline:
            return share
        log(f"other processes use {share:.0%} of the CPU; waiting for a quieter machine")
        time.sleep(4.0)


def timed(fn: Callable[[], Any]) -> tuple[float, Any, float | None]:
    """Wall time of ``fn()``, its value, and the foreign CPU share meanwhile."""
    monitor = CpuMonitor()
    started = time.perf_counter()
    value = fn()
    elapsed = time.perf_counter() - started
    return elapsed, value, monitor.share()


def interleaved(
    contenders: dict[str, Callable[[], Any]],
    reps: int,
    warmup: int = 1,
    warmups: dict[str, Callable[[], Any]] | None = None,
    on_round: Callable[[int], None] | None = None,
) -> tuple[dict[str, Measurement], dict[str, Any]]:
    """Run each contender ``warmup`` times (``warmups[name]`` if given: e.g. a smaller input), then ``reps`` rounds
    in rotating order. Returns per contender a Measurement (items=1, unit "": the caller sets them; see
    :func:`measured`) with raw times and foreign load, and each contender's last return value."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            (warmups or {}).get(name, contenders[name])()
    runs: dict[str, Measurement] = {name: Measurement(name, 1, "") for name in names}
    last: dict[str, Any] = {}

    def once(name: str) -> None:
        elapsed, last[name], foreign = timed(contenders[name])
        runs[name].seconds.append(elapsed)
        runs[name].foreign.append(foreign if foreign is not None else math.nan)

    for round_ in range(reps):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            once(name)
        if on_round is not None:
            on_round(round_)
    for name in names:  # one more try for each disturbed run (not for the retries themselves)
        disturbed = sum(not runs[name].quiet(i) for i in range(reps))
        for _ in range(disturbed):
            log(f"'{name}' ran while other processes were busy; running it again")
            once(name)
    return runs, last


def measured(run: Measurement, items: int, unit: str, label: str | None = None) -> Measurement:
    """A Measurement from :func:`interleaved`'s raw run, with its item count, unit and (optionally) a new label."""
    return Measurement(label or run.label, items, unit, list(run.seconds), list(run.foreign))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with few samples p99 is the slowest one, not an interpolation."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def cosines(a: Any, b: Any) -> list[float]:
    """Row-wise cosine similarity of two (n, d) arrays."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return [float(x) for x in num / np.maximum(den, 1e-30)]


def _finite(value: float) -> float | None:
    return round(float(value), 6) if value is not None and math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    """Make numpy scalars / tuples / paths JSON-friendly (recursively)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return str(value)
