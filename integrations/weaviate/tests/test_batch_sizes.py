"""The forward batch sizes the server chooses: the start-up policy and its online refinement on fake throughput
curves (deterministic), and one real start-up measurement on the tiny model (only its shape is asserted: its
numbers depend on the machine's load)."""

from __future__ import annotations

import logging

import httpx
import pytest

from bge_siglip_weaviate.batch_sizes import (BatchSizes, Curve, OnlineRefinement, choose_batch_size,
                                             measure_batch_sizes)


class FakeHardware:
    """A forward of ``b`` items takes ``b / rate[b]`` seconds on a fake clock; records the sizes it ran."""

    def __init__(self, rates: dict[int, float]) -> None:
        self.rates = rates
        self.now = 0.0
        self.ran: list[int] = []

    def clock(self) -> float:
        return self.now

    def run(self, size: int) -> None:
        self.ran.append(size)
        self.now += size / self.rates[size]


def _choose(rates: dict[int, float], ceiling: int = 64, margin: float = 0.05, budget_s: float = 1e9):
    hardware = FakeHardware(rates)
    curve = choose_batch_size(hardware.run, ceiling=ceiling, margin=margin, budget_s=budget_s, clock=hardware.clock)
    return curve, hardware


def test_cpu_like_curve_caps_where_throughput_stops_rising() -> None:
    # 256 patches on 2 CPU cores (issue 20): batching gains ~18% at most, near batch 4.
    curve, hardware = _choose({1: 1.00, 2: 1.10, 4: 1.18, 8: 1.17, 16: 1.0, 32: 0.9})
    assert [p.batch_size for p in curve.points] == [1, 2, 4, 8, 16]  # 8 and 16 gained nothing: 32 was never tried
    assert (curve.chosen, curve.stopped) == (4, "no gain")
    assert 32 not in hardware.ran and hardware.ran[0] == 1  # a warm-up forward first


def test_one_timing_dip_does_not_end_the_curve() -> None:
    # 64 patches on 2 busy cores: batch 4 timed low once; batch 8 is the real best (a stop at 4 would choose 2).
    curve, _ = _choose({1: 2.27, 2: 2.62, 4: 2.57, 8: 2.99, 16: 3.0, 32: 2.9})
    assert [p.batch_size for p in curve.points] == [1, 2, 4, 8, 16, 32]
    assert (curve.chosen, curve.stopped) == (8, "no gain")


def test_the_smallest_size_within_the_margin_of_the_best_is_chosen() -> None:
    # 4 -> 8 still gains 5.1%, 8 -> 16 only 1%: 8 is within 5% of the best (16), 4 is not.
    curve, _ = _choose({1: 1.0, 2: 1.5, 4: 1.6, 8: 1.682, 16: 1.70, 32: 1.69})
    assert [p.batch_size for p in curve.points] == [1, 2, 4, 8, 16, 32]
    assert curve.chosen == 8


def test_no_gain_at_all_means_one_request_per_forward() -> None:
    curve, _ = _choose({1: 1.0, 2: 1.03, 4: 1.04})
    assert (curve.chosen, curve.stopped) == (1, "no gain") and len(curve.points) == 3


def test_gpu_like_curve_rises_to_the_ceiling() -> None:
    curve, hardware = _choose({b: 100.0 * b for b in (1, 2, 4, 8, 16, 32, 48)}, ceiling=48)
    assert [p.batch_size for p in curve.points] == [1, 2, 4, 8, 16, 32, 48]  # the last step is cut to the ceiling
    assert (curve.chosen, curve.stopped) == (48, "ceiling")


def test_the_budget_bounds_the_measurement() -> None:
    # 10 s per item (1024 patches on a CPU): warm-up 10 s + batch 1 twice 20 s; batch 2 would take 40 s more.
    curve, hardware = _choose({1: 0.1, 2: 0.12}, budget_s=60)
    assert (curve.chosen, curve.stopped) == (1, "budget")
    assert hardware.ran == [1, 1, 1] and curve.seconds == pytest.approx(30.0)


def test_a_first_forward_that_fills_the_budget_is_not_repeated_past_it() -> None:
    # An 8192-token text or 1024 patches on 2 slow cores: ~100 s a forward. Warm-up, then batch 1 once if that
    # still fits the budget, else the warm-up's own time: never two more forwards regardless of the budget.
    curve, hardware = _choose({1: 0.1, 2: 0.12}, budget_s=25)
    assert hardware.ran == [1, 1] and (curve.chosen, curve.stopped) == (1, "budget")
    assert [p.seconds for p in curve.points] == [pytest.approx(10.0)] and curve.seconds == pytest.approx(20.0)
    curve, hardware = _choose({1: 0.1, 2: 0.12}, budget_s=15)
    assert hardware.ran == [1] and (curve.chosen, curve.stopped) == (1, "budget")
    assert [p.items_per_s for p in curve.points] == [pytest.approx(0.1)]


def test_texts_longer_than_the_last_bucket_keep_to_its_tokens_per_forward() -> None:
    sizes = BatchSizes(Curve(3), [(16, Curve(8)), (512, Curve(4))], "measured", 256, text_limit=8192)
    assert [sizes.text_cap(t) for t in (16, 17, 512, 600, 1024, 2047, 8192)] == [8, 4, 4, 3, 2, 1, 1]
    assert sizes.longer_texts_max_tokens == 2048 and sizes.describe()["longer_texts_max_batch_tokens"] == 2048
    assert "longer: at most 2048 tokens per forward" in sizes.summary()
    pinned = BatchSizes.fixed(7, "pinned")  # a pinned size holds for every length
    assert pinned.text_cap(8192) == 7 and pinned.longer_texts_max_tokens is None


def test_the_start_up_never_times_texts_longer_than_the_last_bucket(tmp_path, server_settings) -> None:
    # BGE-M3 takes 8192 tokens; one forward that long took 95-105 s on 2 cores, three of them (warm-up and two
    # timings) kept a server from being ready for 5 minutes. Here a tiny tower with a 2048-token limit.
    from bge_siglip_vectorizer import Vectorizer
    from bge_siglip_vectorizer.testing import make_tiny_model

    model = make_tiny_model(tmp_path / "long", max_position_embeddings=2050)
    vectorizer = Vectorizer.from_pretrained(model, device="cpu")
    longest: list[int] = []
    encode = vectorizer.encode_texts

    def recording(texts, **options):
        longest.append(max(vectorizer.count_tokens(texts)))
        return encode(texts, **options)

    vectorizer.encode_texts = recording  # type: ignore[method-assign]
    try:
        assert vectorizer.text_max_length == 2048
        sizes = measure_batch_sizes(vectorizer, server_settings(max_batch_size=None, batch_probe_budget_s=5,
                                                                adaptive_max_batch_size=8))
    finally:
        vectorizer.close()
    assert longest and max(longest) <= 512
    assert [bound for bound, _ in sizes.texts] == [16, 64, 256, 512]
    last = sizes.texts[-1][1].chosen
    assert sizes.longer_texts_max_tokens == 512 * last and sizes.text_cap(2048) == max(1, last // 4)


def test_a_ceiling_of_one_measures_nothing() -> None:
    curve, hardware = _choose({1: 1.0}, ceiling=1)
    assert curve.chosen == 1 and hardware.ran == []


def test_a_real_start_up_measures_and_reports_the_sizes(start_server, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="bge_siglip_weaviate"):
        running = start_server(max_batch_size=None, batch_probe_budget_s=10, adaptive_max_batch_size=16)
    meta = httpx.get(running.url + "/meta").json()["server"]
    sizes = meta["batch_sizes"]
    assert sizes["mode"] == "measured" and sizes["images"]["max_num_patches"] == running.vectorizer.max_num_patches
    for curve in [sizes["images"]] + sizes["texts"]:
        measured = [p["batch_size"] for p in curve["curve"]]
        assert measured == [min(2**k, 16) for k in range(len(measured))] or measured == []
        assert 1 <= curve["max_batch_size"] <= 16 and all(p["items_per_s"] > 0 for p in curve["curve"])
        assert not measured or curve["max_batch_size"] in measured
    buckets = [t["max_tokens"] for t in sizes["texts"]]
    assert buckets == sorted(buckets) and buckets[-1] == min(512, running.vectorizer.text_max_length)
    assert sizes["longer_texts_max_batch_tokens"] is None  # the tiny tower takes 512 tokens: no text is longer
    caps = [t["max_batch_size"] for t in sizes["texts"]]
    assert caps == sorted(caps, reverse=True)  # a longer bucket never tries more than a shorter one's cap
    assert "forward batch sizes (measured)" in caplog.text
    # The measurement's forwards are not counted as served work.
    assert meta["encode_stats"] == {"images": 0, "texts": 0, "image_batches": 0, "text_batches": 0}
    assert all(curve["online"] == {"max_batch_size": curve["max_batch_size"], "probing": None, "ceiling": 16,
                                   "forwards": 0, "changes": 0, "curve": []}
               for curve in [sizes["images"]] + sizes["texts"])
    response = httpx.post(running.url + "/vectorize", json={"texts": ["after the measurement"]}, timeout=60)
    assert response.status_code == 200
    # That forward is the refinement's first timing, in its length bucket's curve.
    sizes = httpx.get(running.url + "/meta").json()["server"]["batch_sizes"]
    tokens = running.vectorizer.count_tokens(["after the measurement"])[0]
    bucket = next(i for i, t in enumerate(sizes["texts"]) if tokens <= t["max_tokens"])
    assert [t["online"]["forwards"] for t in sizes["texts"]] == [int(i == bucket) for i in range(len(buckets))]
    # One text under a cap of several is a short forward: counted, not a timing of that size.
    assert sizes["texts"][bucket]["online"]["curve"] == (
        [{"batch_size": 1, "items_per_s": None, "timings": 1}] if sizes["texts"][bucket]["max_batch_size"] == 1 else [])


def test_a_pinned_size_is_not_measured(start_server) -> None:
    running = start_server(max_batch_size=7)
    sizes = httpx.get(running.url + "/meta").json()["server"]["batch_sizes"]
    assert sizes["mode"] == "pinned" and sizes["images"]["max_batch_size"] == 7 and sizes["images"]["curve"] == []
    assert [t["max_batch_size"] for t in sizes["texts"]] == [7]


# ---------------------------------------------------------------------------------------------- online refinement
def _serve(rates: dict[int, float], start: int, forwards: int, queue: int | None = None, ceiling: int = 64):
    """Serve ``forwards`` forwards, each as big as the refinement allows (and the queue holds), at ``rates``."""
    online = OnlineRefinement(start, ceiling=ceiling, margin=0.05)
    ran = []
    for _ in range(forwards):
        size = online.next_size() if queue is None else min(queue, online.next_size())
        ran.append(size)
        online.observe(size, size / rates[size])
    return online, ran


def test_served_forwards_climb_past_a_start_up_curve_its_budget_cut_short() -> None:
    # A slow host at 256 patches: the 30 s budget ended the start-up curve at batch 1, but batching gains up to 8.
    rates = {1: 1.0, 2: 1.12, 4: 1.35, 8: 1.6, 16: 1.62, 32: 1.58, 64: 1.5}
    online, ran = _serve(rates, start=1, forwards=20)
    # Its own size first, then each doubling, twice, while it gains; 16 (no gain) ends the climb: 32 would make a
    # burst wait for forwards 4x the chosen size (half of 8 was timed on the way up).
    assert ran[:10] == [1, 1, 2, 2, 4, 4, 8, 8, 16, 16]
    assert ran[10:] == [8] * 10 and online.chosen == 8 and online.probing is None  # 16 is within 5% of 8
    described = online.describe()
    assert described["max_batch_size"] == 8 and described["forwards"] == 20 and described["changes"] == 3
    assert [(p["batch_size"], p["timings"]) for p in described["curve"]] == [
        (1, 2), (2, 2), (4, 2), (8, 12), (16, 2)]


def test_served_forwards_come_down_when_the_start_up_chose_too_big() -> None:
    # Nothing gains (one noisy start-up timing chose 16): the refinement halves its way down to 1.
    rates = {1: 1.0, 2: 1.01, 4: 1.0, 8: 0.99, 16: 0.98, 32: 0.9, 64: 0.85}
    online, ran = _serve(rates, start=16, forwards=30)
    assert ran[:6] == [16, 16, 32, 32, 8, 8]
    assert online.chosen == 1 and ran[-4:] == [1] * 4 and 64 not in ran


def test_short_forwards_under_light_load_do_not_overrule_the_start_up_choice() -> None:
    # One request at a time: every forward holds one item, whatever the cap. Until the chosen size (8) has run,
    # nothing is decided and nothing is probed.
    online, ran = _serve({1: 1.0, 8: 1.6}, start=8, forwards=10, queue=1)
    assert ran == [1] * 10 and online.chosen == 8 and online.probing is None


def test_neighbours_are_measured_again_once_their_timings_are_old() -> None:
    rates = {1: 1.0, 2: 1.12, 4: 1.35, 8: 1.6, 16: 1.62, 32: 1.58, 64: 1.5}
    online, ran = _serve(rates, start=8, forwards=130)
    first = ran.index(16)
    again = [i for i, size in enumerate(ran) if size == 16 and i > first + 1]
    assert again and 100 <= again[0] - first <= 110  # _STALE_AFTER forwards later, not every forward
    assert online.chosen == 8


def test_a_refined_curve_still_lets_longer_texts_keep_to_the_last_buckets_tokens() -> None:
    texts = [(16, Curve(8)), (512, Curve(2))]
    for bound, curve in texts:
        curve.refine_online(ceiling=64, margin=0.05, label=f"texts of <= {bound} tokens")
    sizes = BatchSizes(Curve(1), texts, "measured", 256, text_limit=8192)
    for _ in range(2):  # the 512-token bucket runs at its size, twice: it probes 4 next
        sizes.observe_texts(2, 300, 1.0)
    sizes.observe_texts(1, 2048, 5.0)  # longer than every bucket: no bucket learns from it
    assert sizes.text_cap(300) == 4 and sizes.texts[1][1].online.forwards == 2
    assert sizes.text_cap(1024) == 1  # 2 x 512 tokens per forward: the start-up size, not the probe
    assert sizes.longer_texts_max_tokens == 1024
    assert sizes.text_cap(16) == 8  # the short bucket has not run yet


def test_the_refinement_can_be_switched_off(bge_siglip_vectorizer, server_settings) -> None:
    settings = dict(max_batch_size=None, batch_probe_budget_s=0, adaptive_max_batch_size=4)
    refined = measure_batch_sizes(bge_siglip_vectorizer, server_settings(**settings))
    fixed = measure_batch_sizes(bge_siglip_vectorizer, server_settings(refine_batch_sizes=False, **settings))
    assert refined.images.online is not None and all(curve.online for _, curve in refined.texts)
    assert fixed.images.online is None and not any(curve.online for _, curve in fixed.texts)
    assert fixed.describe()["images"]["online"] is None


def test_a_probe_the_load_does_not_fill_is_given_up() -> None:
    # Chosen 8, never more than 10 queued: forwards under a probe of 16 hold 10, too few to time 16. After two of
    # them the cap is 8 again (half of it is checked on the way), not 16 for good.
    online, ran = _serve({4: 1.35, 8: 1.6, 10: 1.62}, start=8, forwards=12, queue=10)
    assert ran == [8, 8, 10, 10, 4, 4] + [8] * 6 and online.probing is None and online.chosen == 8
    assert [p["batch_size"] for p in online.describe()["curve"]] == [4, 8]


def test_whole_jobs_that_fill_most_of_a_forward_are_timings_of_its_size() -> None:
    # 3-image requests under a cap of 8 pack 6 per forward: those time the cap 8, so the refinement goes on.
    online = OnlineRefinement(8, ceiling=64, margin=0.05)
    for _ in range(2):
        online.observe(6, 4.0)
    assert online.probing == 16
    assert online.describe()["curve"] == [{"batch_size": 8, "items_per_s": 1.5, "timings": 2}]


def test_timings_are_scaled_to_full_length_items() -> None:
    # A forward pads to its longest item: 2 texts of 32 tokens in the 64-token bucket are one 64-token text's work.
    texts = [(16, Curve(4)), (64, Curve(2))]
    for _, curve in texts:
        curve.refine_online(ceiling=8, margin=0.05, label="texts")
    images = Curve(2)
    images.refine_online(ceiling=8, margin=0.05, label="images")
    sizes = BatchSizes(images, texts, "measured", 256)
    for _ in range(2):
        sizes.observe_texts(2, 32, 1.0)
        sizes.observe_images(2, 128, 1.0)  # half the patch budget
    assert sizes.describe()["texts"][1]["online"]["curve"][0]["items_per_s"] == 1.0
    assert sizes.describe()["images"]["online"]["curve"][0]["items_per_s"] == 1.0
    assert sizes.describe()["texts"][0]["online"]["forwards"] == 0


def test_a_probe_whose_forward_fails_ends_the_climb() -> None:
    # A bigger batch than ever ran can run out of memory: the ceiling comes down to the size that works.
    online = OnlineRefinement(4, ceiling=64, margin=0.05)
    online.observe(4, 4.0)
    online.observe(4, 4.0)
    assert online.next_size() == 8
    online.failed()
    assert online.ceiling == 4 and online.probing == 2  # half of it is still checked
    for _ in range(300):
        size = online.next_size()
        assert size <= 4
        online.observe(size, size / {1: 0.5, 2: 0.8, 4: 1.0}[size])
    assert online.chosen == 4


def test_changes_are_logged_at_info_at_most_once_a_minute_and_the_size_in_force_is_not_lost(caplog) -> None:
    now = [0.0]
    online = OnlineRefinement(1, ceiling=64, margin=0.05, label="images at 256 patches", clock=lambda: now[0])
    rates = {1: 1.0, 2: 1.5, 4: 2.5, 8: 2.6}
    with caplog.at_level(logging.DEBUG, logger="bge_siglip_weaviate.batch_sizes"):
        for _ in range(8):  # 1 -> 2 -> 4 within the same minute; 8 gains < 5% over 4
            size = online.next_size()
            online.observe(size, size / rates[size])
        now[0] = 61.0
        online.observe(4, 4 / rates[4])
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "bge_siglip_weaviate.batch_sizes"]
    assert [(level, "1 -> 2" in text, "2 -> 4" in text, "now 4" in text) for level, text in lines] == [
        (logging.INFO, True, False, False), (logging.DEBUG, False, True, False), (logging.INFO, False, False, True)]
    assert lines[0][1].startswith("images at 256 patches: forward batch size 1 -> 2 from the forwards served")
