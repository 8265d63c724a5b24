"""6. Text: ours vs FlagEmbedding's ``BGEM3FlagModel`` dense encoding, on the same saved XLM-R-large directory.

Both encode the same multilingual texts (queries, captions, short passages) with the same batch size and
``max_length=8192``, and must give the same vectors (cosine >= 0.9999). FlagEmbedding runs a trial forward of its
longest batch before every ``encode`` (to pick a batch size that fits in memory); that is part of what a user of
it pays, and the ratio without it is reported too. See :mod:`..flag_reference` for why the comparison may be a
faithful re-implementation.
"""

from __future__ import annotations

import statistics

import numpy as np

from .. import data, flag_reference
from ..common import Measurement, ScenarioResult, cosines, interleaved, log, measured
from ..context import BenchContext

NAME, NUMBER = "text", 6
TITLE = "Text: ours vs FlagEmbedding BGEM3FlagModel dense"
TARGET = 1.0
MIN_COSINE = 0.9999


def run(ctx: BenchContext) -> ScenarioResult:
    plan = ctx.plan
    vectorizer = ctx.vectorizer
    batch = plan.text_batch
    texts = data.bench_texts(plan.texts, seed=6)
    text_dir = str(ctx.model_dir / "text")
    flag, how = flag_reference.load(text_dir, ctx.device)
    tokens = [len(ids) for ids in vectorizer.tokenizer(texts)["input_ids"]]
    result = ScenarioResult(NAME, NUMBER, f"{TITLE} ({len(texts)} texts, batch {batch})")

    def ours() -> np.ndarray:
        return vectorizer.encode_texts(texts, batch_size=batch, show_progress=False)

    def theirs() -> np.ndarray:
        return flag.encode(texts, batch_size=batch, max_length=8192)

    contenders = {"ours: Vectorizer.encode_texts": ours, flag.label: theirs}
    short = texts[:2]
    warmups = {"ours: Vectorizer.encode_texts": lambda: vectorizer.encode_texts(short, show_progress=False),
               flag.label: lambda: flag.encode(short, batch_size=batch)}
    log(f"{NAME}: {len(texts)} texts ({sum(tokens)} tokens), {plan.reps} rounds; baseline: {flag.label}")
    runs, last = interleaved(contenders, plan.reps, plan.warmup, ctx.warmups(warmups))
    names = list(contenders)
    timings = [result.add(measured(runs[name], len(texts), "texts/s")) for name in names]
    result.compare("ours / FlagEmbedding dense", timings[0], timings[1], TARGET)
    trials = flag.trial_seconds[plan.warmup:]  # the timed rounds' trial forwards
    if trials:
        without = result.add(Measurement(f"{flag.label} minus trial forward", len(texts), "texts/s",
                                         [s - t for s, t in zip(runs[names[1]].seconds, trials)],
                                         list(runs[names[1]].foreign)))
        result.compare("ours / FlagEmbedding dense without its trial forward", timings[0], without, None)
    cos = cosines(last[names[0]], last[names[1]])
    reference = last[names[0]]
    normed = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    result.checks["same vectors"] = {
        "min_cosine": min(cos),
        "required": MIN_COSINE,
        "ok": bool(min(cos) >= MIN_COSINE),
        "cross_text_cosine_mean": float(((normed @ normed.T).sum() - len(texts)) / (len(texts) * (len(texts) - 1))),
    }
    result.details.update({
        "baseline": how,
        "tokens_per_text": {"mean": round(statistics.mean(tokens), 1), "median": statistics.median(tokens),
                            "max": max(tokens), "total": sum(tokens)},
        "tokenizer_vocab": len(vectorizer.tokenizer),
    })
    if how["implementation"] != "FlagEmbedding":
        result.notes.append(
            f"FlagEmbedding could not be imported ({how['import_error']}); the baseline is the faithful "
            "re-implementation of its dense path in bench/flag_reference.py."
        )
    return result  # the reference model (2 GB) is freed with this frame
