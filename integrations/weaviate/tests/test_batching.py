"""Cross-request batching: concurrent requests are answered correctly and share forward passes.

Batch composition is made deterministic with ``batcher.hold()``: requests are sent while the worker is held, the
test waits until they are all queued, then releases it. No assertion depends on timing.
"""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from bge_siglip_vectorizer import InvalidImageError, InvalidTextError, PatchedImage, Vectorizer
from bge_siglip_vectorizer.testing.images import sample_image
from bge_siglip_weaviate import protocol
from bge_siglip_weaviate.batch_sizes import BatchSizes, Curve
from bge_siglip_weaviate.batching import DynamicBatcher, ShuttingDown
from bge_siglip_weaviate.protocol import VectorizeRequest, decode_request

N_REQUESTS = 32


def _request(i: int, png_b64) -> dict:
    # One object per request, as Weaviate sends them: a caption and an image.
    return {"texts": [f"caption number {i}"], "images": [png_b64(100 + i, 32 + i, 40)]}


def _post_all(url: str, bodies: list[dict]) -> list[httpx.Response]:
    def post(body: dict) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=120) as http:
            return http.post("/vectorize", json=body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def _assert_each_answer_is_its_own(responses, bodies, vectorizer) -> None:
    texts = [t for body in bodies for t in body["texts"]]
    images = [base64.b64decode(i) for body in bodies for i in body["images"]]
    expected_texts = vectorizer.encode_texts(texts)
    expected_images = vectorizer.encode_images(images)
    for k, response in enumerate(responses):
        assert response.status_code == 200, response.text
        body = response.json()
        np.testing.assert_allclose(body["textVectors"], expected_texts[k : k + 1], atol=1e-5)
        np.testing.assert_allclose(body["imageVectors"], expected_images[k : k + 1], atol=1e-5)


def _forward_batches(meta: dict) -> int:
    stats = meta["server"]["encode_stats"]
    return stats["text_batches"] + stats["image_batches"]


def test_32_concurrent_requests_are_answered_correctly(server, png_b64, bge_siglip_vectorizer) -> None:
    bodies = [_request(i, png_b64) for i in range(N_REQUESTS)]
    responses = _post_all(server.url, bodies)
    _assert_each_answer_is_its_own(responses, bodies, bge_siglip_vectorizer)


def test_concurrent_requests_run_in_fewer_forward_batches(start_server, png_b64, bge_siglip_vectorizer, wait_for) -> None:
    running = start_server(max_batch_size=16, max_wait_ms=5)
    bodies = [_request(i, png_b64) for i in range(N_REQUESTS)]
    with ThreadPoolExecutor(1) as pool, running.batcher.hold():  # the hold is lifted before the pool joins
        future = pool.submit(_post_all, running.url, bodies)
        wait_for(lambda: running.batcher.queued_requests == N_REQUESTS, what="all requests queued")
    responses = future.result()
    _assert_each_answer_is_its_own(responses, bodies, bge_siglip_vectorizer)

    meta = httpx.get(running.url + "/meta").json()
    server_stats = meta["server"]
    assert server_stats["requests"] == N_REQUESTS
    # 32 requests of one text and one image, at most 16 of each per forward: exactly 2 worker batches of 16
    # requests (the 17th waits for the next forward) ...
    assert server_stats["worker_batches"] == 2
    assert server_stats["largest_batch_requests"] == 16
    # ... each one text forward and one image forward: 4 forward passes for 32 requests (64 items).
    assert _forward_batches(meta) == 4
    assert meta["server"]["encode_stats"]["images"] == N_REQUESTS


def test_no_batching_mode_serves_one_request_per_round(start_server, png_b64, bge_siglip_vectorizer, wait_for) -> None:
    # The reference container's behaviour, kept for the benchmark: same queue state, no cross-request packing.
    running = start_server(batching=False)
    bodies = [_request(i, png_b64) for i in range(8)]
    with ThreadPoolExecutor(1) as pool, running.batcher.hold():  # the hold is lifted before the pool joins
        future = pool.submit(_post_all, running.url, bodies)
        wait_for(lambda: running.batcher.queued_requests == 8, what="all requests queued")
    _assert_each_answer_is_its_own(future.result(), bodies, bge_siglip_vectorizer)
    meta = httpx.get(running.url + "/meta").json()
    assert meta["server"]["batching"] is False
    assert meta["server"]["worker_batches"] == 8
    assert _forward_batches(meta) == 16


def test_batches_respect_max_batch_size(start_server, bge_siglip_vectorizer, wait_for) -> None:
    running = start_server(max_batch_size=4)
    bodies = [{"texts": [f"t{i}a", f"t{i}b", f"t{i}c"]} for i in range(4)]  # 3 items each: never two per batch
    with ThreadPoolExecutor(1) as pool, running.batcher.hold():  # the hold is lifted before the pool joins
        future = pool.submit(_post_all, running.url, bodies)
        wait_for(lambda: running.batcher.queued_requests == 4, what="all requests queued")
    big = httpx.post(running.url + "/vectorize", json={"texts": [f"item {i}" for i in range(10)]}, timeout=60)
    for response, body in zip(future.result(), bodies):
        np.testing.assert_allclose(response.json()["textVectors"], bge_siglip_vectorizer.encode_texts(body["texts"]), atol=1e-5)
    np.testing.assert_allclose(big.json()["textVectors"], bge_siglip_vectorizer.encode_texts([f"item {i}" for i in range(10)]), atol=1e-5)
    meta = httpx.get(running.url + "/meta").json()["server"]
    assert meta["worker_batches"] == 5
    assert meta["largest_batch_requests"] == 1
    # a 10-item request is split by the core into forward batches of at most 4: 4 + 3 = 7 text forwards
    assert meta["encode_stats"]["text_batches"] == 4 + 3


def test_one_clients_bad_input_never_fails_another(start_server, png_b64, bge_siglip_vectorizer, wait_for) -> None:
    running = start_server()
    good = [_request(i, png_b64) for i in range(6)]
    with ThreadPoolExecutor(1) as pool, running.batcher.hold():  # the hold is lifted before the pool joins
        future = pool.submit(_post_all, running.url, good)
        wait_for(lambda: running.batcher.queued_requests == 6, what="good requests queued")
        # Rejected while decoding, before it could join the queued batch.
        bad = httpx.post(running.url + "/vectorize", json={"texts": ["x"], "images": ["bm90IGFuIGltYWdl"]})
        assert bad.status_code == 400 and "images[0]" in bad.json()["error"]
        assert running.batcher.queued_requests == 6
    _assert_each_answer_is_its_own(future.result(), good, bge_siglip_vectorizer)
    assert httpx.get(running.url + "/meta").json()["server"]["worker_batches"] == 1


def test_the_same_image_in_concurrent_requests_gets_identical_vectors(start_server, png_b64, wait_for) -> None:
    running = start_server()
    image = png_b64(42, 70, 50)
    bodies = [{"images": [image]}, {"texts": ["other"], "images": [image]}, {"images": [image, image]}]
    with ThreadPoolExecutor(1) as pool, running.batcher.hold():  # the hold is lifted before the pool joins
        future = pool.submit(_post_all, running.url, bodies)
        wait_for(lambda: running.batcher.queued_requests == 3, what="requests queued")
    vectors = [v for response in future.result() for v in response.json()["imageVectors"]]
    assert len(vectors) == 4
    assert all(v == vectors[0] for v in vectors)
    # de-duplicated across the requests of the batch: one image actually encoded
    assert httpx.get(running.url + "/meta").json()["server"]["encode_stats"]["images"] == 1


def test_a_failing_request_is_isolated_from_its_batch_in_few_forwards(bge_siglip_model_dir, server_settings) -> None:
    # The HTTP layer validates before queuing, so the batcher is driven directly here with an unvalidated job:
    # the combined batch fails, it is retried in halves, and only the bad request gets the error. Halving costs
    # O(log n) extra forwards for one bad request; retrying each alone cost n (409 -> 1579 forwards in the issue).
    vectorizer = Vectorizer.from_pretrained(bge_siglip_model_dir, device="cpu")  # its own forward counter
    batcher = DynamicBatcher(vectorizer, server_settings(max_batch_size=32))
    texts = [[f"fine {i}"] if i != 1 else ["ok", 123] for i in range(8)]
    try:
        with batcher.hold():
            futures = [batcher.try_admit(len(t)).submit(t, []) for t in texts]  # type: ignore[arg-type]
        for future in futures:
            future.exception(60)  # all answered
        forwards = batcher.encode_stats()["text_batches"]
        for i, future in enumerate(futures):
            if i == 1:
                with pytest.raises(InvalidTextError) as info:
                    future.result(60)
                assert info.value.index == 1  # the position in its own request, not in the combined batch
            else:
                np.testing.assert_allclose(future.result(60)[0], vectorizer.encode_texts(texts[i]), atol=1e-5)
        assert batcher.stats.worker_batches == 1 and batcher.stats.failed == 1
        # [0..7] fails, [0..3] fails, [0, 1] fails: [0], [2, 3] and [4..7] are encoded (3 forwards, not 7)
        assert forwards == 3
        assert batcher.pending_items == 0  # capacity is given back before each answer
    finally:
        batcher.close()
        vectorizer.close()
    with pytest.raises(ShuttingDown):
        batcher.try_admit(1)


def _batch_numbers(batcher: DynamicBatcher, futures) -> list[int]:
    """For each future, the number of the worker batch that answered it (read as the worker answers)."""
    numbers: dict[int, int] = {}
    for i, future in enumerate(futures):
        future.add_done_callback(lambda f, i=i: numbers.setdefault(i, batcher.stats.worker_batches))
    for future in futures:
        future.result(60)
    return [numbers[i] for i in range(len(futures))]


def test_requests_beyond_the_caps_wait_for_the_next_forward_in_arrival_order(bge_siglip_vectorizer,
                                                                            server_settings) -> None:
    # Caps as a measurement would choose them: 3 images per forward; 4 short texts or 2 long ones.
    sizes = BatchSizes(Curve(3), [(16, Curve(4)), (512, Curve(2))], "measured", 256)
    batcher = DynamicBatcher(bge_siglip_vectorizer, server_settings(max_wait_ms=0), sizes=sizes)
    image = bge_siglip_vectorizer.prepare_images([sample_image(40, 30, seed=3)])[0]
    try:
        with batcher.hold():
            images = [batcher.try_admit(1).submit([], [image]) for _ in range(7)]
        assert _batch_numbers(batcher, images) == [1, 1, 1, 2, 2, 2, 3]
        with batcher.hold():
            short = [batcher.try_admit(1).submit([f"short {i}"], [], [5]) for i in range(5)]
            long = [batcher.try_admit(1).submit([f"long {i}"], [], [300]) for i in range(3)]
        # 4 short; then the 5th short with... a long one would make the longest 300 tokens: cap 2, so it fits
        # (2 texts); the next long one would make 3: the last long one goes alone.
        assert _batch_numbers(batcher, short + long) == [4, 4, 4, 4, 5, 5, 6, 6]
        assert batcher.stats.largest_batch_requests == 4
    finally:
        batcher.close()


def _refining_batcher(vectorizer: Vectorizer, server_settings) -> DynamicBatcher:
    """A batcher whose image cap starts at 2 and is refined online (up to 8); texts fixed at 4."""
    images = Curve(2)
    images.refine_online(ceiling=8, margin=0.05, label="images")
    return DynamicBatcher(vectorizer, server_settings(max_wait_ms=0),
                          sizes=BatchSizes(images, [(512, Curve(4))], "measured", 256))


def test_served_forwards_are_timed_and_a_probe_raises_the_next_forwards_cap(bge_siglip_vectorizer,
                                                                           server_settings) -> None:
    # The online refinement (tests/test_batch_sizes.py has its policy): cap 2 runs twice, then the next forward may
    # take 4 to learn what it gains, whatever the timings were.
    batcher = _refining_batcher(bge_siglip_vectorizer, server_settings)
    prepared = bge_siglip_vectorizer.prepare_images([sample_image(40, 30, seed=70 + i) for i in range(8)])
    try:
        with batcher.hold():
            futures = [batcher.try_admit(1).submit([], [image]) for image in prepared]
        assert _batch_numbers(batcher, futures) == [1, 1, 2, 2, 3, 3, 3, 3]
        online = batcher.describe()["batch_sizes"]["images"]["online"]
        assert online["forwards"] == 3
        assert {p["batch_size"]: p["timings"] for p in online["curve"]} == {2: 2, 4: 1}
        # A forward the core de-duplicated (the same image twice: one row) is no timing of a batch of 2.
        with batcher.hold():
            twice = [batcher.try_admit(1).submit([], [prepared[0]]) for _ in range(2)]
        _batch_numbers(batcher, twice)
        assert batcher.describe()["batch_sizes"]["images"]["online"]["forwards"] == 3
    finally:
        batcher.close()


def test_a_probe_whose_forward_fails_is_retried_in_halves_and_not_tried_again(tmp_path, server_settings) -> None:
    # Forwards of more than 2 images fail here (as a batch too big for the memory would): the probe of 4 fails,
    # its requests are answered from two forwards of 2, and the refinement climbs no higher than 2.
    from bge_siglip_vectorizer.testing import make_tiny_model

    vectorizer = Vectorizer.from_pretrained(make_tiny_model(tmp_path / "model"), device="cpu")
    encode = vectorizer.encode_prepared

    def small_only(images, batch_size=32):
        if len(images) > 2:
            raise MemoryError(f"no room for {len(images)} images")
        return encode(images, batch_size=batch_size)

    vectorizer.encode_prepared = small_only  # type: ignore[method-assign]
    batcher = _refining_batcher(vectorizer, server_settings)
    prepared = vectorizer.prepare_images([sample_image(40, 30, seed=90 + i) for i in range(12)])
    try:
        with batcher.hold():
            futures = [batcher.try_admit(1).submit([], [image]) for image in prepared]
        vectors = [future.result(60)[1][0] for future in futures]
        assert np.allclose(vectors, encode(prepared, batch_size=1), atol=1e-5)
        online = batcher.describe()["batch_sizes"]["images"]["online"]
        assert online["ceiling"] == 2 and batcher.stats.failed == 0
        assert max(p["batch_size"] for p in online["curve"]) <= 2
    finally:
        batcher.close()
        vectorizer.close()


def test_a_full_batch_does_not_wait_for_more(start_server) -> None:
    # A batch already at its cap starts at once: with cap 1 (what a CPU that gains nothing from batching gets)
    # no request ever waits max_wait_ms for company.
    running = start_server(max_batch_size=1, max_wait_ms=60_000)
    started = time.monotonic()
    assert httpx.post(running.url + "/vectorize", json={"texts": ["alone"]}, timeout=120).status_code == 200
    assert time.monotonic() - started < 30  # far below the 60 s it would wait for more


def test_the_queue_holds_patches_not_decoded_images(start_server, png_b64, bge_siglip_vectorizer, wait_for) -> None:
    # A full-size decoded image can be hundreds of MB; what waits for the worker is at most max_num_patches x 768 B.
    running = start_server()
    body = {"texts": ["a caption"], "images": [png_b64(7, 400, 300), png_b64(8, 20, 30)]}
    with ThreadPoolExecutor(1) as pool, running.batcher.hold():
        future = pool.submit(_post_all, running.url, [body])
        wait_for(lambda: running.batcher.queued_requests == 1, what="request queued")
        with running.batcher._cond:
            job = running.batcher._queue[0]
            queued = list(job.images)
    assert all(isinstance(item, PatchedImage) for item in queued)
    limit = running.vectorizer.max_num_patches
    assert all(item.patches.dtype == np.uint8 and item.num_patches <= limit for item in queued)
    assert all(item.patches.base is None or item.patches.base.nbytes <= limit * 768 for item in queued)
    answer = future.result()[0].json()
    np.testing.assert_allclose(answer["textVectors"], bge_siglip_vectorizer.encode_texts(body["texts"]), atol=1e-5)
    expected = bge_siglip_vectorizer.encode_images([base64.b64decode(b) for b in body["images"]])
    np.testing.assert_allclose(answer["imageVectors"], expected, atol=1e-5)


def test_images_are_decoded_one_at_a_time_under_a_decode_slot(monkeypatch, png_b64, bge_siglip_vectorizer) -> None:
    slots = threading.BoundedSemaphore(1)
    decoded: list[int] = []
    real_decode = protocol.decode_base64

    def decode(item, index):  # noqa: ANN001
        assert not slots.acquire(blocking=False), "decoding outside a decode slot"
        decoded.append(index)
        return real_decode(item, index)

    monkeypatch.setattr(protocol, "decode_base64", decode)
    images = [png_b64(20 + i, 30 + 7 * i, 40) for i in range(3)]
    request = decode_request(VectorizeRequest(texts=["x", ""], images=images), bge_siglip_vectorizer, slots)
    texts, prepared = request.texts, request.images
    assert texts == ["x", ""] and decoded == [0, 1, 2]
    assert request.token_counts == bge_siglip_vectorizer.count_tokens(["x", ""])
    assert slots.acquire(blocking=False)  # every slot given back
    slots.release()
    # The order is kept: the vectors of the prepared images are those of the request's images, in order.
    np.testing.assert_array_equal(
        bge_siglip_vectorizer.encode_prepared(prepared),
        bge_siglip_vectorizer.encode_images([base64.b64decode(b) for b in images]),
    )
    with pytest.raises(InvalidImageError) as info:  # the index is the request's, and the slot is given back
        decode_request(VectorizeRequest(images=[images[0], images[1], "bm90IGFuIGltYWdl"]), bge_siglip_vectorizer, slots)
    assert info.value.index == 2
    assert slots.acquire(blocking=False)
