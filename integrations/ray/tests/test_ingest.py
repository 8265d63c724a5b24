"""Ingest through the adapters, on Ray and in-process: the same ids, vectors and payloads; idempotent re-runs;
a run killed with -9 and run again ends with exactly one point per item."""

from __future__ import annotations

import http.server
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bge_siglip_vectorizer import InvalidImageError, content_id
from bge_siglip_vectorizer.testing.images import encode_image, sample_image

from bge_siglip_ray import ingest, open_writer


@pytest.fixture(scope="module")
def photos(image_dir, tmp_path_factory) -> Path:
    """The session's 12 photos plus one corrupt file."""
    folder = tmp_path_factory.mktemp("ingest-photos")
    for f in image_dir.rglob("*.*"):
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "broken.png").write_bytes(encode_image(sample_image(80, 80, seed=5), "PNG")[:200])
    return folder


def _points(path: Path, collection: str) -> dict[str, tuple[np.ndarray, dict]]:
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(path))
    try:
        points, _ = client.scroll(collection, limit=1000, with_vectors=True)
        return {str(p.id): (np.asarray(p.vector, dtype=np.float32), p.payload) for p in points}
    finally:
        client.close()


def test_the_core_ids_are_the_qdrant_adapters(image_dir):
    from bge_siglip_qdrant import content_id as qdrant_id

    file = next(image_dir.rglob("*.png"))
    for item, modality in [(str(file), "image"), (file.read_bytes(), "image"), ("ein Hund", "text"),
                           ("http://127.0.0.1/x.jpg", "image"), (np.zeros((4, 5, 3), np.uint8), "image")]:
        assert content_id(item, modality) == qdrant_id(item, modality)


def test_folder_into_qdrant_on_ray_equals_in_process_and_reruns_add_nothing(ray_session, photos, bge_siglip_model_dir,
                                                                            bge_siglip_vectorizer, tmp_path):
    on_ray = ingest(photos, f"qdrant:{tmp_path / 'ray'}#photos", bge_siglip_model_dir, ray="local", batch_size=4,
                    device="cpu")
    assert (on_ray.rows, on_ray.written, on_ray.failed, on_ray.count) == (13, 12, 1, 12)
    assert len(on_ray.errors) == 1 and on_ray.errors[0].startswith("InvalidImageError") and "broken.png" in on_ray.errors[0]
    again = ingest(photos, f"qdrant:{tmp_path / 'ray'}#photos", bge_siglip_model_dir, ray="local", batch_size=5,
                   device="cpu")
    assert (again.written, again.count) == (12, 12)  # overwritten by content id, not added
    local = ingest(photos, f"qdrant:{tmp_path / 'local'}#photos", bge_siglip_model_dir, batch_size=3, device="cpu")
    assert (local.written, local.failed, local.count) == (12, 1, 12)

    ray_points, local_points = _points(tmp_path / "ray", "photos"), _points(tmp_path / "local", "photos")
    files = sorted(f for f in photos.iterdir() if f.name != "broken.png")
    assert set(ray_points) == set(local_points) == {content_id(str(f)) for f in files}
    expected = dict(zip((content_id(str(f)) for f in files), bge_siglip_vectorizer.encode_images([str(f) for f in files])))
    for point_id, (vector, payload) in ray_points.items():
        np.testing.assert_allclose(vector, expected[point_id], atol=1e-6, rtol=0)
        np.testing.assert_allclose(local_points[point_id][0], vector, atol=1e-6, rtol=0)
        assert payload == local_points[point_id][1]
        assert payload["modality"] == "image" and Path(payload["source"]).parent == photos.resolve()


def test_jsonl_of_paths_and_captions_into_chroma_on_ray(ray_session, image_dir, bge_siglip_model_dir, tmp_path):
    import chromadb

    import bge_siglip_chroma  # noqa: F401 - registers our function, so the reopened collection embeds queries

    files = sorted(image_dir.glob("*.png"))[:3]
    rows = [{"image": os.path.relpath(f, tmp_path), "caption": f"photo {i}", "sku": i} for i, f in enumerate(files)]
    rows += [{"caption": "ein Hund am Strand", "sku": 10}, {"caption": "   ", "sku": 11}]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = ingest(source, f"chroma:{tmp_path / 'chroma'}#catalogue", bge_siglip_model_dir, ray="local",
                    device="cpu")
    assert (report.written, report.failed, report.count) == (4, 1, 4)
    assert report.errors == ["InvalidTextError: text: empty text"]
    collection = chromadb.PersistentClient(str(tmp_path / "chroma")).get_collection("catalogue")
    stored = collection.get(include=["metadatas", "documents", "uris"])
    by_sku = {m["sku"]: (doc, uri, m) for doc, uri, m in zip(stored["documents"], stored["uris"], stored["metadatas"])}
    assert by_sku[10][0] == "ein Hund am Strand" and by_sku[10][2]["modality"] == "text"
    assert by_sku[0][1] == str(files[0].resolve()) and by_sku[0][2]["caption"] == "photo 0"
    # The collection embeds queries with our function: the text finds its own row first.
    found = collection.query(query_texts=["ein Hund am Strand"], n_results=1, include=["metadatas"])
    assert found["metadatas"][0][0]["sku"] == 10


def test_raise_mode_stops_at_the_bad_item_with_its_typed_error(ray_session, photos, bge_siglip_model_dir, tmp_path):
    with pytest.raises(InvalidImageError, match="broken.png"):
        ingest(photos, f"qdrant:{tmp_path / 'q'}#p", bge_siglip_model_dir, ray="local", on_error="raise", device="cpu")
    with pytest.raises(InvalidImageError, match="broken.png"):
        ingest(photos, f"qdrant:{tmp_path / 'q2'}#p", bge_siglip_model_dir, on_error="raise", device="cpu")
    with pytest.raises(ValueError, match="bge-siglip-milvus"):
        ingest(photos, f"milvus:{tmp_path / 'm.db'}#p", bge_siglip_model_dir)


class _StallingServer:
    """Serves PNGs on 127.0.0.1; while ``stalled`` is set, requests wait (bounded) instead of being answered."""

    def __init__(self) -> None:
        self.stalled = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                deadline = time.monotonic() + 120
                while server.stalled.is_set() and time.monotonic() < deadline:
                    time.sleep(0.1)
                seed = int(self.path.rsplit("=", 1)[-1])
                body = encode_image(sample_image(48, 40, seed=500 + seed), "PNG")
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stalled.clear()
        self.httpd.shutdown()


def test_a_run_killed_with_sigkill_then_resumed_ends_with_exactly_n_points(ray_session, image_dir,
                                                                           bge_siglip_model_dir, tmp_path):
    """The killed run is the in-process ingest (a subprocess, killed by its pid mid-way); the resumed run is on
    Ray, then in-process again: the same content ids make every re-run overwrite, never add."""
    server = _StallingServer()
    try:
        files = sorted(image_dir.rglob("*.*"))[:8]
        rows = [{"image": str(f)} for f in files] + [{"image": f"{server.url}/img?i={i}"} for i in range(8)]
        source = tmp_path / "rows.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        target = f"qdrant:{tmp_path / 'q'}#photos"
        server.stalled.set()  # the URL rows hang: the run is caught half-way, after the file rows were written
        # The test server is on loopback, which URL fetching refuses unless allowed.
        command = [sys.executable, "-m", "bge_siglip_vectorizer", "ingest", str(source), "--into", target,
                   "--model", str(bge_siglip_model_dir), "--batch-size", "4", "--url-timeout-s", "300", "--device", "cpu",
                   "--allow-private-urls", "127.0.0.1", "--progress"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        seen = bytearray()

        def read() -> None:
            for chunk in iter(lambda: process.stderr.read1(4096), b""):
                seen.extend(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + 240
        written = 0
        while time.monotonic() < deadline and process.poll() is None:
            counts = [int(n) for n in re.findall(rb"(\d+)/16 ", bytes(seen))]
            written = max(counts, default=0)
            if written >= 4:
                break
            time.sleep(0.2)
        assert process.poll() is None, bytes(seen)[-3000:].decode(errors="replace")
        assert 4 <= written < 16, bytes(seen)[-3000:].decode(errors="replace")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        reader.join(timeout=10)
        server.stalled.clear()

        half = open_writer(target, str(bge_siglip_model_dir), {"device": "cpu"})  # waits for the dead run's lock
        try:
            partial = half.count()
        finally:
            half.close()
        assert 4 <= partial < 16  # the kill left a partial store behind

        loopback = ("127.0.0.1",)
        resumed = ingest(source, target, bge_siglip_model_dir, ray="local", batch_size=4, device="cpu",
                         allow_private_urls=loopback)
        assert (resumed.written, resumed.failed, resumed.count) == (16, 0, 16)
        again = ingest(source, target, bge_siglip_model_dir, batch_size=6, device="cpu",  # in-process, once more
                       allow_private_urls=loopback)
        assert again.count == 16
    finally:
        server.close()
