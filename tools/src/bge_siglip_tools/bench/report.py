"""Output: the printed table, the JSON file (raw timings + machine) and the PNG plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .common import ScenarioResult

SCHEMA = "bge-siglip-bench/1"


def fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return str(value)


def table(report: dict[str, Any], results: list[ScenarioResult]) -> str:
    """The human-readable summary (also written to bench.txt)."""
    machine = report["machine"]
    lines = [
        f"BGE-SigLIP benchmark ({'quick' if report['quick'] else 'full'} run) - {machine['cpu_model']}, "
        f"{machine['usable_cpus']} CPUs, torch {machine['versions'].get('torch')} "
        f"({machine['torch_threads']} threads), {report['duration_s'] / 60:.1f} min",
        f"model: {report['model'].get('description', '?')}",
        f"towers run on: {report.get('device', 'cpu')} ({report.get('dtype', 'float32')})"
        + (f", {', '.join(machine['gpus'])}" if machine.get("gpus") and report.get("device", "cpu") != "cpu" else ""),
        "other load: share of the machine's CPU used by other processes during a run (max over the runs); runs with "
        "more than 25% are repeated once and left out of the median while a quieter run exists",
        "",
        f"{'#':>2} {'measurement':<66} {'median':>9} {'[min - max]':>21}  unit",
    ]
    for result in results:
        lines.append(f"{result.number:>2} {result.title}")
        if result.status != "ok":  # then what its other parts measured (result.part), if anything
            lines.append(f"   {result.status.upper()}: {result.error}")
        for m in result.measurements:
            spread = f"[{fmt(m.low)} - {fmt(m.high)}]"
            load = [f for f in m.foreign if math.isfinite(f)]
            other = f", other load <= {max(load):.0%}" if load else ""
            counted = "" if len(m.counted) == len(m.seconds) else f", {len(m.counted)} quiet counted"
            lines.append(f"   {m.label[:65]:<65} {fmt(m.median):>9} {spread:>21}  {m.unit}  "
                         f"(n={len(m.seconds)}{counted}{other})")
        for line in result.summary:
            lines.append(f"   {line}")
        for name, value in result.checks.items():
            if isinstance(value, dict) and any(isinstance(v, dict) for v in value.values()):
                for key, inner in value.items():
                    lines.append(f"   check {name}, {key}: {_short(inner)}")
            else:
                lines.append(f"   check {name}: {_short(value)}")
    lines += ["", "Ratios (ours / baseline = ratio of median throughputs; [min - max] of the paired rounds)",
              f"{'#':>2} {'comparison':<62} {'ratio':>7} {'[paired]':>17} {'target':>9}  met"]
    for result in results:
        for c in result.comparisons:
            paired = c.paired
            spread = f"[{fmt(min(paired))} - {fmt(max(paired))}]" if paired else ""
            target = f">= {c.target:g}x" if c.target is not None else ""
            met = {True: "yes", False: "NO", None: ""}[c.met]
            lines.append(f"{result.number:>2} {c.label[:62]:<62} {fmt(c.ratio) + 'x':>7} {spread:>17} {target:>9}  {met}")
    return "\n".join(lines) + "\n"


def write_json(path: Path, report: dict[str, Any], results: list[ScenarioResult]) -> None:
    body = {**report, "schema": SCHEMA, "scenarios": {r.name: r.to_json() for r in results}}
    path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def plot(path: Path, results: list[ScenarioResult], title: str) -> str:
    """Scaling curves (scenario 7) and every ratio against its target, in one PNG. Returns the renderer used."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: F401
    except ImportError:
        _plot_with_pil(path, results, title)
        return "pillow"
    _plot_with_matplotlib(path, results, title)
    return "matplotlib"


def _curves(results: list[ScenarioResult]) -> dict[str, list[dict[str, float]]]:
    for result in results:
        if result.name == "scaling":
            return result.details.get("curves", {})
    return {}


def _ratios(results: list[ScenarioResult]) -> list[tuple[str, float, float | None, bool | None]]:
    rows = []
    for result in results:
        for c in result.comparisons:
            if math.isfinite(c.ratio):
                rows.append((f"{result.number}. {c.label}", c.ratio, c.target, c.met))
    return rows


def _plot_with_matplotlib(path: Path, results: list[ScenarioResult], title: str) -> None:
    import matplotlib.pyplot as plt

    ratios = _ratios(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(16, max(5.5, 0.32 * len(ratios) + 1.5)),
                                      gridspec_kw={"width_ratios": [1, 1.35]})
    curves = _curves(results)
    for patches, points in curves.items():
        xs = [p["batch_size"] for p in points]
        ys = [p["median"] for p in points]
        low = [max(0.0, p["median"] - p["min"]) for p in points]
        high = [max(0.0, p["max"] - p["median"]) for p in points]
        left.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=f"max_num_patches {patches}")
        for x, y in zip(xs, ys):
            left.annotate(fmt(y), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xlabel("batch size")
    left.set_ylabel("images / s (median, min-max)")
    left.set_title("7. Image throughput vs batch size and patch budget")
    left.grid(True, which="both", alpha=0.3)
    if curves:
        left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(curves), fontsize=9)
    labels = [r[0] for r in ratios][::-1]
    values = [r[1] for r in ratios][::-1]
    colours = [{True: "#2e7d32", False: "#c62828", None: "#78909c"}[r[3]] for r in ratios][::-1]
    bars = right.barh(range(len(values)), values, color=colours)
    for i, r in enumerate(ratios[::-1]):
        if r[2] is not None:
            right.plot([r[2], r[2]], [i - 0.4, i + 0.4], color="black", linewidth=2)
    for bar, value in zip(bars, values):
        right.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.2f}x", va="center", fontsize=8)
    right.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    right.set_yticks(range(len(labels)))
    right.set_yticklabels(labels, fontsize=8)
    right.set_xlabel("ratio ours / baseline (black tick: target; green met, red not met, grey no target)")
    right.set_title("Ratios against targets")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_with_pil(path: Path, results: list[ScenarioResult], title: str) -> None:
    """Fallback without matplotlib: the scaling curves on a log-log grid, ratios as text."""
    from PIL import Image, ImageDraw

    width, height, margin = 1200, 640, 70
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 15), title, fill="black")
    plot_w, plot_h = 560, height - 2 * margin
    draw.rectangle((margin, margin, margin + plot_w, margin + plot_h), outline="black")
    curves = _curves(results)
    points = [p for pts in curves.values() for p in pts if p["median"] and p["median"] > 0]
    if points:
        xs = [math.log2(p["batch_size"]) for p in points]
        ys = [math.log10(p["median"]) for p in points]
        x0, x1 = min(xs), max(xs) + 1e-9
        y0, y1 = min(ys) - 0.1, max(ys) + 0.1

        def at(batch: float, rate: float) -> tuple[float, float]:
            return (margin + (math.log2(batch) - x0) / (x1 - x0 or 1) * plot_w,
                    margin + plot_h - (math.log10(rate) - y0) / (y1 - y0) * plot_h)

        palette = ["#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a"]
        for i, (patches, pts) in enumerate(curves.items()):
            xy = [at(p["batch_size"], p["median"]) for p in pts if p["median"] > 0]
            draw.line(xy, fill=palette[i % 4], width=2)
            for (x, y), p in zip(xy, pts):
                draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=palette[i % 4])
                draw.text((x + 5, y - 12), fmt(p["median"]), fill=palette[i % 4])
            draw.text((margin + 10, margin + 10 + 14 * i), f"max_num_patches {patches}", fill=palette[i % 4])
    draw.text((margin, margin + plot_h + 10), "7. images/s (log) vs batch size (log2)", fill="black")
    y = margin
    for label, ratio, target, met in _ratios(results):
        mark = {True: "met", False: "NOT met", None: ""}[met]
        target_text = f" (target >= {target:g}x, {mark})" if target is not None else ""
        draw.text((margin + plot_w + 30, y), f"{label[:60]}: {ratio:.2f}x{target_text}", fill="black")
        y += 16
    image.save(path)
