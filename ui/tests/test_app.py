"""The page's API: rankings equal the core's, uploads are bytes, items are served by id only, errors are typed."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bge_siglip_ui.app import create_app


@pytest.fixture
def page(start_state, gallery):
    """(client, state, files) of a page on the gallery folder."""
    state = start_state(folder=str(gallery))
    with TestClient(create_app(state, start=False), base_url="http://127.0.0.1") as client:
        yield client, state, sorted(gallery.rglob("photo*"))


def _names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [hit["name"] for hit in response.json()["hits"]]


def _core_ranking(vectorizer, files: list[Path], query: np.ndarray) -> list[str]:
    scores = vectorizer.encode_images(files) @ query
    return [files[i].name for i in np.argsort(-scores, kind="stable")]


def test_status_says_what_is_served(page):
    client, state, files = page
    status = client.get("/api/status").json()
    assert status["model"]["state"] == "ready" and status["model"]["dim"] == 32
    assert status["store"]["state"] == "ready" and status["store"]["count"] == 8
    assert status["indexing"]["phase"] == "done" and status["indexing"]["failed"] == 1
    assert "broken.jpg" in status["indexing"]["errors"][0]


def test_text_search_ranks_as_the_core_in_any_language_and_pages_through(page, bge_siglip_vectorizer):
    client, _, files = page
    for text in ("a dog on the beach", "ein Hund am Strand", "海辺の犬"):
        expected = _core_ranking(bge_siglip_vectorizer, files, bge_siglip_vectorizer.encode_query(text=text))
        assert _names(client.get("/api/search", params={"text": text, "limit": 20})) == expected
    text = "a dog on the beach"
    expected = _core_ranking(bge_siglip_vectorizer, files, bge_siglip_vectorizer.encode_query(text=text))
    first = client.get("/api/search", params={"text": text, "limit": 3}).json()
    rest = client.get("/api/search", params={"text": text, "offset": 3, "limit": 20}).json()
    assert first["more"] is True and rest["more"] is False
    assert [h["name"] for h in first["hits"] + rest["hits"]] == expected
    hit = first["hits"][0]
    assert hit["thumb"] == f"/api/thumb?id={hit['id']}" and hit["image"] == f"/api/image?id={hit['id']}"


def test_an_uploaded_exact_duplicate_is_found_first(page, tmp_path):
    client, _, files = page
    # A copy outside the gallery: the page gets only its bytes.
    copy = shutil.copyfile(files[4], tmp_path / "upload.png")
    upload = client.post("/api/upload", content=copy.read_bytes(), headers={"Content-Type": "image/png"})
    assert upload.status_code == 200, upload.text
    hits = client.get("/api/search", params={"image": upload.json()["ref"]}).json()["hits"]
    assert hits[0]["name"] == files[4].name and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_a_composed_query_is_the_cores_encode_query(page, bge_siglip_vectorizer):
    client, _, files = page
    image = files[2].read_bytes()
    ref = client.post("/api/upload", content=image).json()["ref"]
    for weight in (0.0, 0.3, 1.0):
        vector = bge_siglip_vectorizer.encode_query(text="in red", image=image, weights=(1 - weight, weight))
        params = {"text": "in red", "image": ref, "weight": weight, "limit": 20}
        response = client.get("/api/search", params=params)
        assert _names(response) == _core_ranking(bge_siglip_vectorizer, files, vector)
        np.testing.assert_allclose(response.json()["hits"][0]["score"],
                                   np.max(bge_siglip_vectorizer.encode_images(files) @ vector), atol=1e-3)


def test_more_like_this_searches_from_a_hit(page, bge_siglip_vectorizer):
    client, _, files = page
    hit = client.get("/api/search", params={"text": "x", "limit": 20}).json()["hits"][5]
    alone = _names(client.get("/api/search", params={"image": f"item:{hit['id']}", "limit": 20}))
    source = next(f for f in files if f.name == hit["name"])
    assert alone == _core_ranking(bge_siglip_vectorizer, files, bge_siglip_vectorizer.encode_query(image=source))
    assert alone[0] == hit["name"]
    composed = client.get("/api/search", params={"image": f"item:{hit['id']}", "text": "blue", "weight": 0.5})
    expected = bge_siglip_vectorizer.encode_query(text="blue", image=source.read_bytes(), weights=(0.5, 0.5))
    assert _names(composed)[:8] == _core_ranking(bge_siglip_vectorizer, files, expected)


def test_bad_queries_and_uploads_get_typed_errors_as_text(page):
    client, state, _ = page

    def error(response, status: int) -> dict:
        assert response.status_code == status, response.text
        return response.json()

    assert error(client.get("/api/search"), 400)["type"] == "EmptyQuery"
    assert error(client.get("/api/search", params={"text": "   "}), 400)["type"] == "EmptyQuery"
    body = error(client.post("/api/upload", content=b"GIF89a but not really"), 400)
    assert body["type"] == "InvalidImageError" and "image" in body["error"]
    assert error(client.post("/api/upload", content=b""), 400)["type"] == "EmptyUpload"
    state.upload_limit = 1000
    assert error(client.post("/api/upload", content=b"\x89PNG" + bytes(2000)), 413)["type"] == "TooLarge"
    assert error(client.get("/api/search", params={"image": "upload:0123"}), 404)["type"] == "NotFound"
    assert error(client.get("/api/search", params={"image": "item:nope"}), 404)["type"] == "NotFound"
    assert error(client.get("/api/search", params={"image": "/etc/passwd"}), 400)["type"] == "InvalidQuery"
    assert error(client.get("/api/search", params={"text": "a", "weight": 2}), 400)["type"] == "InvalidQuery"
    assert error(client.get("/api/search", params={"text": "a", "limit": 0}), 400)["type"] == "InvalidQuery"


def test_thumbnails_are_made_once_per_content(page):
    client, state, files = page
    hits = client.get("/api/search", params={"text": "x", "limit": 20}).json()["hits"]
    first = client.get(hits[0]["thumb"])
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(first.content))
    assert max(thumb.size) <= 320 and thumb.mode == "RGB"
    made = state.thumbnails.made
    again = client.get(hits[0]["thumb"])
    assert again.content == first.content and state.thumbnails.made == made  # from the cache
    for hit in hits:
        assert client.get(hit["thumb"]).status_code == 200
    assert state.thumbnails.made == len(hits)  # one per image, whichever request made it
    assert len(list(state.thumbnails.root.rglob("*.jpg"))) == len(hits)


def test_full_images_are_files_of_the_gallery_by_id_only(page, tmp_path):
    client, state, files = page
    hits = {h["name"]: h for h in client.get("/api/search", params={"text": "x", "limit": 20}).json()["hits"]}
    png = client.get(hits[files[0].name]["image"])
    assert png.status_code == 200 and png.content == files[0].read_bytes() and png.headers["content-type"] == "image/png"
    outside = tmp_path / "secret.png"
    shutil.copyfile(files[1], outside)
    for item in (str(outside), str(files[1]), "../secret.png", f"file://{outside}", "http://127.0.0.1:1/x.png"):
        for endpoint in ("/api/image", "/api/thumb"):
            response = client.get(endpoint, params={"id": item})
            assert response.status_code == 404 and response.json()["type"] == "NotFound", item


def test_a_file_browsers_cannot_show_is_sent_as_png(start_state, tmp_path, write_image):
    folder = tmp_path / "scans"
    write_image(folder / "scan.tiff", seed=3, size=(60, 40), fmt="TIFF")
    state = start_state(folder=str(folder))
    with TestClient(create_app(state, start=False), base_url="http://127.0.0.1") as client:
        hit = client.get("/api/search", params={"text": "scan"}).json()["hits"][0]
        response = client.get(hit["image"])
        assert response.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).size == (60, 40)


def test_the_page_answers_only_to_loopback_names_and_loads_nothing_from_elsewhere(page):
    client, _, _ = page
    page_response = client.get("/")
    assert page_response.status_code == 200 and "text/html" in page_response.headers["content-type"]
    assert "default-src 'none'" in page_response.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/app.css"):
        assert client.get(asset).status_code == 200
    # Nothing on the page names another origin.
    for text in (page_response.text, client.get("/static/app.js").text, client.get("/static/app.css").text):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    for host in ("localhost:7860", "127.0.0.1", "[::1]:7860"):
        assert client.get("/api/status", headers={"Host": host}).status_code == 200
    rebound = client.get("/api/status", headers={"Host": "attacker.example:7860"})
    assert rebound.status_code == 403 and rebound.json()["type"] == "Forbidden"


def test_a_missing_model_is_said_on_the_page(start_state, tmp_path, gallery):
    state = start_state(vectorizer=None, model=str(tmp_path / "no-model"), folder=str(gallery))
    with TestClient(create_app(state, start=False), base_url="http://127.0.0.1") as client:
        status = client.get("/api/status").json()
        assert status["model"]["state"] == "failed" and "ModelLoadError" in status["model"]["error"]
        assert "no-model" in status["model"]["error"]
        response = client.get("/api/search", params={"text": "a"})
        assert response.status_code == 503 and "failed to load" in response.json()["error"]


def test_no_store_and_an_empty_folder_are_said_on_the_page(start_state, tmp_path):
    state = start_state()
    with TestClient(create_app(state, start=False), base_url="http://127.0.0.1") as client:
        assert "--folder DIR or --store TARGET" in client.get("/api/status").json()["store"]["error"]
        assert client.get("/api/search", params={"text": "a"}).status_code == 503
    (tmp_path / "empty").mkdir()
    state = start_state(folder=str(tmp_path / "empty"))
    with TestClient(create_app(state, start=False), base_url="http://127.0.0.1") as client:
        status = client.get("/api/status").json()["store"]
        assert status["state"] == "ready" and status["count"] == 0
        assert client.get("/api/search", params={"text": "a"}).json()["hits"] == []
