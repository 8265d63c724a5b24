"""--store: collections written by the Chroma and Qdrant adapters, searched with the core's query vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bge_siglip_ui.stores import StoreError, open_store
from bge_siglip_vectorizer.testing import make_tiny_model

TEXTS = ["ein Hund am Strand", "a red bicycle", "夕焼けの海"]


def _chroma(root: Path, files: list[Path], model: Path, texts: list[str]) -> str:
    import chromadb
    from bge_siglip_chroma import BGESigLIPEmbeddingFunction, ImageURILoader

    client = chromadb.PersistentClient(path=str(root / "chroma"))
    photos = client.create_collection("photos", embedding_function=BGESigLIPEmbeddingFunction(model=str(model)),
                                      data_loader=ImageURILoader())
    photos.add(ids=[f.name for f in files], uris=[str(f) for f in files])
    if texts:
        photos.add(ids=[f"text{i}" for i in range(len(texts))], documents=texts)
    return f"chroma:{root / 'chroma'}#photos"


def _qdrant(root: Path, files: list[Path], model: Path, texts: list[str]) -> str:
    from bge_siglip_qdrant import BGESigLIPQdrant
    from qdrant_client import QdrantClient

    db = BGESigLIPQdrant(QdrantClient(path=str(root / "qdrant")), model=str(model))
    db.create_collection("photos")
    db.add_images("photos", files)
    if texts:
        db.add_texts("photos", texts)
    db.client.close()
    return f"qdrant:{root / 'qdrant'}#photos"


@pytest.fixture(params=["chroma", "qdrant"])
def built(request, gallery, tmp_path, bge_siglip_model_dir):
    """(target, image files) of a collection the adapter wrote: the gallery's images and three texts."""
    files = sorted(gallery.glob("photo*"))
    build = {"chroma": _chroma, "qdrant": _qdrant}[request.param]
    return build(tmp_path, files, bge_siglip_model_dir, TEXTS), files


def test_search_ranks_as_the_core_and_knows_images_from_texts(built, bge_siglip_vectorizer):
    target, files = built
    store = open_store(target, bge_siglip_vectorizer)
    try:
        assert store.count() == len(files) + len(TEXTS)
        images = bge_siglip_vectorizer.encode_images(files)
        texts = bge_siglip_vectorizer.encode_texts(TEXTS)
        query = bge_siglip_vectorizer.encode_query(text="a photo of a dog")
        scores = np.concatenate([images, texts]) @ query
        names = [f.name for f in files] + TEXTS
        expected = [names[i] for i in np.argsort(-scores, kind="stable")]
        hits = store.search(query, 0, 50)
        assert [h.record.name for h in hits] == expected
        np.testing.assert_allclose([h.score for h in hits], np.sort(scores)[::-1], atol=1e-4)
        by_name = {h.record.name: h.record for h in hits}
        assert by_name[files[0].name].kind == "image" and by_name[files[0].name].local_file == files[0]
        assert by_name[TEXTS[2]].kind == "text" and by_name[TEXTS[2]].local_file is None
        # Pages are slices of the one ranking.
        assert [h.record.name for h in store.search(query, 3, 4)] == expected[3:7]
        assert store.search(query, 40, 5) == []
        # An item's stored vector is its core vector (for "more like this").
        item = by_name[files[1].name].id
        np.testing.assert_allclose(store.vector(item), images[1], atol=1e-5)
        assert store.vector("no-such-item") is None and store.record("no-such-item") is None
    finally:
        store.close()


def test_missing_stores_and_collections_say_what_is_there(tmp_path, gallery, bge_siglip_model_dir,
                                                          bge_siglip_vectorizer):
    for scheme in ("qdrant", "chroma"):
        with pytest.raises(StoreError, match="no .* folder at"):
            open_store(f"{scheme}:{tmp_path / 'nothing'}#photos", bge_siglip_vectorizer)
    files = sorted(gallery.glob("photo*"))[:2]
    for target in (_chroma(tmp_path, files, bge_siglip_model_dir, []), _qdrant(tmp_path, files, bge_siglip_model_dir, [])):
        wrong = target.replace("#photos", "#holiday")
        with pytest.raises(StoreError, match=r"no collection 'holiday' \(collections there: photos\)"):
            open_store(wrong, bge_siglip_vectorizer)
    with pytest.raises(ValueError, match="bge-siglip-milvus"):
        open_store(f"milvus:{tmp_path / 'm.db'}#photos", bge_siglip_vectorizer)


def test_a_collection_of_another_model_is_refused(tmp_path, gallery, bge_siglip_vectorizer):
    files = sorted(gallery.glob("photo*"))[:2]
    other = make_tiny_model(tmp_path / "other", seed=7)  # same size, other weights: only Chroma can tell
    with pytest.raises(StoreError, match="embedded with the model at .*other.*fingerprint"):
        open_store(_chroma(tmp_path, files, other, []), bge_siglip_vectorizer)
    wider = make_tiny_model(tmp_path / "wider", dim=48)
    with pytest.raises(StoreError, match="48-d vectors, but the model gives 32-d"):
        open_store(_qdrant(tmp_path, files, wider, []), bge_siglip_vectorizer)


def test_a_chroma_collection_without_our_function_is_refused(tmp_path, bge_siglip_vectorizer):
    import chromadb

    client = chromadb.PersistentClient(path=str(tmp_path / "plain"))
    client.create_collection("notes", embedding_function=None)
    with pytest.raises(StoreError, match="not embedded by bge-siglip"):
        open_store(f"chroma:{tmp_path / 'plain'}#notes", bge_siglip_vectorizer)
