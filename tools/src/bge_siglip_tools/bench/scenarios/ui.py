"""10. The search page (``bge-siglip ui``) on a generated gallery: indexing, page load, query latency, thumbnails.

A gallery of ``plan.ui_gallery`` generated photos (10,000 in the full run, 256x192 JPEGs) is indexed by the page's
own ``--folder`` path (content ids, Qdrant local mode, batches decoded ahead of the model) with a small random model
whose vectors have the real size (1024-d, so the store's search costs what it costs with BGE-SigLIP; the model's
own forward is measured in the other scenarios, and the real-size model's text-query encode is measured here too).
Then the page is served on 127.0.0.1 and driven over HTTP, side by side:

* ``page load``: ``/`` + ``app.js`` + ``app.css`` + ``/api/status`` (what a browser fetches before the first query);
* ``first page``: ``/api/search`` with a new text each time (encode + store search + 48 hits as JSON) against the
  store's own search of the same vectors without HTTP (``direct``): the page's overhead;
* ``next page``: the same query at offset 48 (the query vector is cached: one store query);
* ``every vector to the page``: the alternative the page avoids (the whole collection with its vectors, as JSON,
  for searching in the browser): its size and time;
* thumbnails of a page of hits made (first view) vs cached.

With Chromium installed, a headless browser also measures what a person waits for: the page until its status shows,
typing a query until 48 tiles and their thumbnails are on screen, and scrolling until 480 results are loaded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .. import data
from ..common import Measurement, ScenarioResult, interleaved, log, measured, percentile
from ..context import BenchContext

NAME, NUMBER = "ui", 10
TITLE = "Search page on a generated gallery: page load, query latency, thumbnails"
PAGE = 48
GALLERY_SPEC = data.ImageSpec(256, 192, "RGB", "JPEG", "gallery photo")


def _model(ctx: BenchContext) -> Path:
    from bge_siglip_vectorizer.testing import make_tiny_model

    path = ctx.cache_dir / "ui-model-1024d-v1"
    if not (path / ".complete").is_file():
        make_tiny_model(path, dim=1024, max_num_patches=64)
        (path / ".complete").write_text("made by the ui scenario\n")
    return path


def run(ctx: BenchContext) -> ScenarioResult:
    import httpx

    from bge_siglip_ui.app import UIState, create_app
    from bge_siglip_ui.command import UIOptions
    from bge_siglip_ui.testing import find_chromium, running
    from bge_siglip_vectorizer import Vectorizer

    plan = ctx.plan
    n = plan.ui_gallery
    log(f"{NAME}: {n} gallery images (made once, cached)")
    folder = ctx.cache_dir / f"ui-gallery-{n}-v1"
    data.image_files(folder, n, ctx.quick, specs=[GALLERY_SPEC] * n)
    vectorizer = Vectorizer.from_pretrained(_model(ctx), device=ctx.device)
    result = ScenarioResult(NAME, NUMBER, f"{TITLE} ({n:,} images, {vectorizer.dim}-d, pages of {PAGE})")

    state = UIState(UIOptions(model="bench", folder=str(folder), cache_dir=str(ctx.workdir("ui"))),
                    vectorizer=vectorizer, show_progress=False)
    log(f"{NAME}: indexing the gallery through the page's --folder path")
    started = time.perf_counter()
    state.start()
    state.done.wait()
    first_sync = time.perf_counter() - started
    if state.store is None or state.index is None or state.index.progress.phase != "done":
        raise RuntimeError(f"the page did not start: {state.model_error or state.store_error}")
    started = time.perf_counter()
    again = state.index.sync(show_progress=False)
    resync = time.perf_counter() - started
    indexed = result.add(_single("first --folder sync (hash, embed, write)", n, first_sync))
    skipped = result.add(_single("re-sync, nothing changed (no file read, nothing embedded)", n, resync))
    result.compare("re-sync / first sync (speed)", skipped, indexed)
    result.checks["re-sync embedded nothing"] = {"to_embed": again.total, "unchanged": again.unchanged,
                                                 "count": state.store.count()}

    queries = list(dict.fromkeys(data.SENTENCES))
    per_run = plan.ui_queries
    used = iter(range(10**9))

    def next_texts() -> list[str]:
        # A text never asked before, so its vector is encoded (the cache would answer a repeat).
        return [f"{queries[i % len(queries)]} #{i}" for i in (next(used) for _ in range(per_run))]

    latencies: dict[str, list[float]] = {"first page": [], "next page": [], "direct": []}

    try:
        with running(create_app(state, start=False)) as url, httpx.Client(base_url=url, timeout=60) as client:
            def page_load() -> int:
                size = 0
                for path in ("/", "/static/app.js", "/static/app.css", "/api/status"):
                    response = client.get(path)
                    response.raise_for_status()
                    size += len(response.content)
                return size

            def first_page() -> list[list[str]]:
                pages = []
                for text in next_texts():
                    begun = time.perf_counter()
                    body = client.get("/api/search", params={"text": text, "limit": PAGE}).raise_for_status().json()
                    latencies["first page"].append(time.perf_counter() - begun)
                    pages.append([hit["id"] for hit in body["hits"]])
                return pages

            def next_page() -> None:
                for _ in range(per_run):
                    begun = time.perf_counter()
                    client.get("/api/search", params={"text": queries[0], "offset": PAGE, "limit": PAGE}) \
                        .raise_for_status()
                    latencies["next page"].append(time.perf_counter() - begun)

            def direct() -> list[list[str]]:
                pages = []
                for text in next_texts():
                    begun = time.perf_counter()
                    hits = state.store.search(vectorizer.encode_query(text=text), 0, PAGE)
                    latencies["direct"].append(time.perf_counter() - begun)
                    pages.append([hit.record.id for hit in hits])
                return pages

            def every_vector() -> int:
                return len(json.dumps(_all_items(state.store)))

            contenders = {"page load (/, app.js, app.css, /api/status)": page_load,
                          f"first page: /api/search, {PAGE} hits, new text": first_page,
                          "direct: encode_query + store search, no HTTP": direct,
                          "next page (offset 48, cached query vector)": next_page,
                          "alternative: every item and vector to the page as JSON": every_vector}
            log(f"{NAME}: {len(contenders)} contenders x {plan.reps} rounds, {per_run} queries each")
            runs, last = interleaved(contenders, plan.reps, plan.warmup)
            names = list(contenders)
            load = result.add(measured(runs[names[0]], 1, "page/s"))
            first = result.add(measured(runs[names[1]], per_run, "query/s"))
            plain = result.add(measured(runs[names[2]], per_run, "query/s"))
            following = result.add(measured(runs[names[3]], per_run, "query/s"))
            everything = result.add(measured(runs[names[4]], 1, "page/s"))
            result.compare("first page via HTTP / direct store search", first, plain)
            result.compare("first page of hits / every vector to the page", first, everything,
                           note="per page shown; the alternative also makes the browser search 10,000 vectors")
            result.details["bytes"] = {"page load": last[names[0]], "every vector as JSON": last[names[4]]}
            result.checks["HTTP hits = store hits"] = {"same": _same_hits(client, state, vectorizer, queries[:3])}

            made_first, made_cached = _thumbnails(result, client, state, ctx, plan.reps)
            result.compare("thumbnails: cached / made on first view", made_cached, made_first)

            result.add(_real_text_queries(ctx, queries[:per_run]))
            if ctx.quick:
                result.notes.append("--quick: the in-browser timings are left out (the page's browser tests drive it).")
            elif find_chromium() is None:
                result.notes.append("No Chromium here: the in-browser timings were not taken.")
            else:
                result.details["browser"] = _browser(url, queries, plan.reps)
    finally:
        state.close()

    for key, values in latencies.items():
        ms = [1000 * v for v in values]
        result.details[f"{key} latency ms"] = {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "n": len(ms)}
    result.summary.append(
        f"indexed {n:,} in {first_sync:.1f} s ({n / first_sync:.0f} img/s), re-sync {resync:.2f} s; page load "
        f"{1000 / load.median:.0f} ms; first page p50 {result.details['first page latency ms']['p50']:.0f} ms "
        f"(direct {result.details['direct latency ms']['p50']:.0f} ms), next page p50 "
        f"{result.details['next page latency ms']['p50']:.0f} ms"
    )
    if "browser" in result.details:
        b = result.details["browser"]
        result.summary.append(f"in Chromium: page ready {b['page ready ms']['p50']:.0f} ms, typed query to 48 tiles "
                              f"with thumbnails {b['query to 48 tiles ms']['p50']:.0f} ms, scroll to 480 results "
                              f"{b['scroll to 480 results ms']['p50']:.0f} ms")
    result.notes.append(
        "The gallery's model is small (its forward is cheap) but gives 1024-d vectors like BGE-SigLIP, so the store "
        "search, the JSON and the thumbnails cost what they cost with the real model; a real text query adds the "
        "real-size model's encode_query time (measured above on this machine's bench model)."
    )
    return result


def _single(label: str, items: int, seconds: float) -> Measurement:
    return Measurement(label, items, "img/s", [seconds], [float("nan")])


def _all_items(store) -> list[dict]:
    """What a page that searches in the browser would need: every item with its vector."""
    items = []
    offset = None
    while True:
        with store.lock:
            points, offset = store.db.client.scroll(store.collection, limit=1000, offset=offset, with_payload=True,
                                                    with_vectors=True)
        items.extend({"id": str(p.id), "source": (p.payload or {}).get("source"), "vector": p.vector} for p in points)
        if offset is None:
            return items


def _same_hits(client, state, vectorizer, texts: list[str]) -> bool:
    for text in texts:
        page = client.get("/api/search", params={"text": text, "limit": PAGE}).json()["hits"]
        direct = state.store.search(vectorizer.encode_query(text=text), 0, PAGE)
        if [h["id"] for h in page] != [h.record.id for h in direct]:
            return False
    return True


def _thumbnails(result: ScenarioResult, client, state, ctx: BenchContext, reps: int):
    """A page of thumbnails on first view (each run another page of hits: never made before) vs cached."""
    offsets = iter(range(PAGE, 10**9, PAGE))
    made_before = state.thumbnails.made

    def urls(offset: int) -> list[str]:
        body = client.get("/api/search", params={"text": "thumbnails", "offset": offset, "limit": PAGE}).json()
        return [hit["thumb"] for hit in body["hits"]]

    cached_urls = urls(0)

    def fetch(paths: list[str]) -> None:
        for path in paths:
            client.get(path).raise_for_status()

    # Listed before timing (only thumbnails are timed); enough pages for the warm-up, the rounds and their retries.
    pages = [urls(next(offsets)) for _ in range(2 * reps + 2)]
    cold = iter(pages)
    runs, _ = interleaved({"thumbnails on first view (decode, resize, JPEG, write)": lambda: fetch(next(cold)),
                           "thumbnails cached": lambda: fetch(cached_urls)}, reps, 1)
    names = list(runs)
    made = result.add(measured(runs[names[0]], PAGE, "thumb/s"))
    cached = result.add(measured(runs[names[1]], PAGE, "thumb/s"))
    # Every first-view request made its thumbnail (none was made before); the cached page was made once.
    result.checks["thumbnails made"] = {"made": state.thumbnails.made - made_before,
                                        "first-view pages fetched": len(pages) - len(list(cold)),
                                        "per page": PAGE}
    return made, cached


def _real_text_queries(ctx: BenchContext, texts: list[str]) -> Measurement:
    """encode_query(text) with the benchmark's real-size model (XLM-R-large text tower): what a text query adds."""
    vectorizer = ctx.vectorizer  # loaded by the harness before any scenario
    vectorizer.encode_query(text="warm-up")
    seconds = []
    for text in texts:
        begun = time.perf_counter()
        vectorizer.encode_query(text=text)
        seconds.append(time.perf_counter() - begun)
    return Measurement(f"encode_query(text), the bench model ({ctx.spec.name})", 1, "query/s", seconds,
                       [float("nan")] * len(seconds))


def _browser(url: str, queries: list[str], reps: int) -> dict:
    """Headless Chromium: page ready, a typed query to 48 tiles with thumbnails, scrolling to 480 results."""
    from selenium.webdriver.support.ui import WebDriverWait

    from bge_siglip_ui.testing import chromium

    tiles_ready = """
        const [text, want, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
        const started = performance.now();
        const box = document.getElementById('text');
        box.value = text;
        box.form.requestSubmit();
        (function poll() {
          const imgs = [...document.querySelectorAll('#grid .tile img')];
          if (imgs.length >= want && imgs.slice(0, want).every(i => i.complete && i.naturalWidth)) {
            done(performance.now() - started);
          } else { requestAnimationFrame(poll); }
        })();"""
    scroll = """
        const [want, done] = [arguments[0], arguments[arguments.length - 1]];
        const started = performance.now();
        (function step() {
          window.scrollTo(0, document.body.scrollHeight);
          const tiles = document.querySelectorAll('#grid .tile').length;
          const waited = performance.now() - started;
          if (tiles >= want || waited > 60000) {
            done({ms: waited, tiles, message: document.getElementById('message').textContent});
          } else { setTimeout(step, 16); }
        })();"""
    timings: dict[str, list[float]] = {"page ready ms": [], "query to 48 tiles ms": [], "scroll to 480 results ms": []}
    with chromium() as driver:
        driver.set_script_timeout(120)
        for round_ in range(reps + 1):  # the first round warms the browser up and is not counted
            begun = time.perf_counter()
            driver.get(url)
            WebDriverWait(driver, 60).until(
                lambda d: " in " in d.execute_script("return document.getElementById('status').textContent"))
            ready = 1000 * (time.perf_counter() - begun)
            to_tiles = driver.execute_async_script(tiles_ready, f"{queries[round_ % len(queries)]} ~{round_}", PAGE)
            scrolled = driver.execute_async_script(scroll, 480)
            if scrolled["tiles"] < 480:
                raise RuntimeError(f"scrolling loaded {scrolled['tiles']} of 480 results in 60 s; the page says: "
                                   f"{scrolled['message'] or 'nothing'}")
            to_scroll = scrolled["ms"]
            if round_:
                timings["page ready ms"].append(ready)
                timings["query to 48 tiles ms"].append(to_tiles)
                timings["scroll to 480 results ms"].append(to_scroll)
    return {key: {"p50": percentile(values, 50), "max": max(values), "n": len(values)}
            for key, values in timings.items()}
