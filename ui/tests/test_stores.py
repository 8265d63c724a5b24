"""--store: collections written by the Chroma, Qdrant, Milvus and LanceDB adapters, searched with the core's query
vectors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from bge_siglip_ui.stores import StoreError, open_store
from bge_siglip_vectorizer import ModelMismatchError

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


def _fill(db, files: list[Path], texts: list[str]) -> None:
    """Collection "photos" through an adapter with the add_images / add_texts API (Qdrant's and Milvus')."""
    db.create_collection("photos")
    db.add_images("photos", files)
    if texts:
        db.add_texts("photos", texts)
    db.client.close()


def _qdrant(root: Path, files: list[Path], model: Path, texts: list[str]) -> str:
    from bge_siglip_qdrant import BGESigLIPQdrant
    from qdrant_client import QdrantClient

    _fill(BGESigLIPQdrant(QdrantClient(path=str(root / "qdrant")), model=str(model)), files, texts)
    return f"qdrant:{root / 'qdrant'}#photos"


def _milvus(root: Path, files: list[Path], model: Path, texts: list[str]) -> str:
    from bge_siglip_milvus import BGESigLIPMilvus
    from pymilvus import MilvusClient

    _fill(BGESigLIPMilvus(MilvusClient(str(root / "milvus.db")), model=str(model)), files, texts)
    return f"milvus:{root / 'milvus.db'}#photos"


def _lancedb(root: Path, files: list[Path], model: Path, texts: list[str]) -> str:
    import bge_siglip_lancedb
    import lancedb
    from lancedb.embeddings import get_registry

    function = get_registry().get("bge-siglip").create(model=str(model))
    table = bge_siglip_lancedb.create_table(lancedb.connect(str(root / "lance")), "photos", function)
    bge_siglip_lancedb.add_images(table, files)
    if texts:
        bge_siglip_lancedb.add_texts(table, texts)
    return f"lancedb:{root / 'lance'}#photos"


BUILDERS = {"chroma": _chroma, "qdrant": _qdrant, "milvus": _milvus, "lancedb": _lancedb}


@pytest.fixture(params=list(BUILDERS))
def built(request, gallery, tmp_path, bge_siglip_model_dir):
    """(target, image files) of a collection the adapter wrote: the gallery's images and three texts."""
    files = sorted(gallery.glob("photo*"))
    return BUILDERS[request.param](tmp_path, files, bge_siglip_model_dir, TEXTS), files


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
    files = sorted(gallery.glob("photo*"))[:2]
    for kind, build in BUILDERS.items():
        nothing = tmp_path / ("nothing.db" if kind == "milvus" else "nothing")  # milvus-lite files end in .db
        with pytest.raises(StoreError, match=f"no .* at {re.escape(str(nothing))}"):
            open_store(f"{kind}:{nothing}#photos", bge_siglip_vectorizer)
        (tmp_path / kind).mkdir()
        wrong = build(tmp_path / kind, files, bge_siglip_model_dir, []).replace("#photos", "#holiday")
        with pytest.raises(StoreError, match=r"no (collection|table) 'holiday' \((collections|tables) there: photos\)"):
            open_store(wrong, bge_siglip_vectorizer)
    with pytest.raises(ValueError, match="unknown store 'redis'.*qdrant, chroma, milvus, lancedb"):
        open_store(f"redis:{tmp_path}#photos", bge_siglip_vectorizer)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_a_collection_of_another_model_is_refused(kind, tmp_path, gallery, bge_siglip_other_model_dir,
                                                  bge_siglip_vectorizer):
    files = sorted(gallery.glob("photo*"))[:2]
    target = BUILDERS[kind](tmp_path, files, bge_siglip_other_model_dir, [])  # same size, other weights
    with pytest.raises(ModelMismatchError, match="holds vectors of model"):
        open_store(target, bge_siglip_vectorizer)


def test_a_qdrant_collection_without_a_model_record_is_checked_by_its_vector_size(tmp_path, bge_siglip_vectorizer):
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "plain"))
    client.create_collection("wide", vectors_config=models.VectorParams(size=48, distance=models.Distance.COSINE))
    client.close()
    with pytest.raises(StoreError, match="48-d vectors, but the model gives 32-d"):
        open_store(f"qdrant:{tmp_path / 'plain'}#wide", bge_siglip_vectorizer)


def test_a_chroma_collection_without_our_function_is_refused(tmp_path, bge_siglip_vectorizer):
    import chromadb

    client = chromadb.PersistentClient(path=str(tmp_path / "plain"))
    client.create_collection("notes", embedding_function=None)
    with pytest.raises(StoreError, match="not embedded by bge-siglip"):
        open_store(f"chroma:{tmp_path / 'plain'}#notes", bge_siglip_vectorizer)
