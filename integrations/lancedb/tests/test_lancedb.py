"""bge-siglip-lancedb against real LanceDB directories and the real tiny model.

Expected vectors come straight from the core ``Vectorizer``; rankings from those vectors. The separate-process test
opens the tables WITHOUT passing a function: LanceDB must rebuild ours from the table's metadata.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from lancedb.embeddings import get_registry
from lancedb.index import FTS
from lancedb.pydantic import LanceModel, Vector
from PIL import Image

import bge_siglip_lancedb
from bge_siglip_lancedb import BGESigLIPEmbeddings, ModelMismatchError, add_images, add_texts, content_id
from bge_siglip_vectorizer import InvalidImageError, InvalidInputError, InvalidTextError
from bge_siglip_vectorizer.testing.images import sample_image, sample_image_files

TEXTS = ["a dog on the beach", "ein Hund am Strand", "un chat noir sur un canapé", "кошка на окне"]
BAD = b"\x89PNG\r\n\x1a\n not a png"
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "lancedb_quickstart.py"


@pytest.fixture(scope="session")
def func(bge_siglip_model_dir) -> BGESigLIPEmbeddings:
    return get_registry().get("bge-siglip").create(model=str(bge_siglip_model_dir), device="cpu", batch_size=4)


@pytest.fixture
def db(tmp_path):
    return lancedb.connect(str(tmp_path / "db"))


@pytest.fixture
def table(db, func):
    return bge_siglip_lancedb.create_table(db, "items", func)


def rows_by_id(table) -> dict[str, dict]:
    return {row["id"]: row for row in table.to_arrow().to_pylist()}


# ------------------------------------------------------------------------------------------------ the function
def test_import_registers_the_function_and_create_records_location_and_fingerprint(func, bge_siglip_model_dir,
                                                                                     monkeypatch):
    assert get_registry().get("bge-siglip") is BGESigLIPEmbeddings
    assert func.ndims() == func.vectorizer.dim
    monkeypatch.chdir(bge_siglip_model_dir.parent)
    relative = get_registry().get("bge-siglip").create(model=bge_siglip_model_dir.name, batch_size=2)
    assert relative.safe_model_dump() == {"model": str(bge_siglip_model_dir.resolve()), "batch_size": 2,
                                          "fingerprint": func.vectorizer.fingerprint}
    assert relative.vectorizer is func.vectorizer  # one model per process: the shared core Vectorizer
    with pytest.raises(ModelMismatchError, match="now holds another model"):
        get_registry().get("bge-siglip").create(model=str(bge_siglip_model_dir), fingerprint="0" * 64)


def test_source_embeddings_are_the_cores_in_batches(func, tmp_path):
    vec = func.vectorizer
    paths = sample_image_files(tmp_path, 6)
    inputs = [str(paths[0]), paths[1].as_uri(), paths[2].read_bytes(), Image.open(paths[3]), str(paths[4]),
              str(paths[5])]
    before = vec.stats.image_batches
    vectors = func.compute_source_embeddings(pa.array([str(p) for p in paths]))
    assert vec.stats.image_batches - before == 2  # batch_size=4: two forwards for six images, not six
    np.testing.assert_allclose(np.stack(vectors), vec.encode_images(paths), atol=1e-6)
    np.testing.assert_allclose(np.stack(func.compute_source_embeddings(inputs)), vec.encode_images(paths), atol=1e-5)
    assert len(func.compute_source_embeddings(paths[0].read_bytes())) == 1  # one encoded image, not its bytes

    texts = get_registry().get("bge-siglip").create(model=func.model, source="text")
    np.testing.assert_allclose(np.stack(texts.compute_source_embeddings(pa.chunked_array([TEXTS[:2], TEXTS[2:]]))),
                               vec.encode_texts(TEXTS), atol=1e-6)
    with pytest.raises(InvalidTextError) as info:
        texts.compute_source_embeddings(["fine", ""])
    assert info.value.index == 1


def test_query_embeddings_take_a_text_or_an_image(func, tmp_path):
    vec = func.vectorizer
    path = sample_image_files(tmp_path, 1)[0]
    np.testing.assert_allclose(func.compute_query_embeddings("ein Hund")[0], vec.encode_texts(["ein Hund"])[0],
                               atol=1e-6)
    expected = vec.encode_images([path])[0]
    for query in (Image.open(path), path, path.read_bytes()):
        np.testing.assert_allclose(func.compute_query_embeddings(query)[0], expected, atol=1e-5)


def test_a_bad_item_fails_at_once_with_the_typed_error(func):
    # LanceDB would retry any exception 7 times with exponential back-off, then raise a generic Exception.
    with pytest.raises(InvalidImageError) as info:
        func.compute_source_embeddings_with_retry([BAD])
    assert info.value.index == 0


# ------------------------------------------------------------------------------------------------ tables
def test_lance_model_with_source_and_vector_fields_embeds_on_add_and_search(db, func, tmp_path):
    texts = get_registry().get("bge-siglip").create(model=func.model, source="text")

    class Caption(LanceModel):
        text: str = texts.SourceField()
        vector: Vector(texts.ndims()) = texts.VectorField()
        lang: str

    captions = db.create_table("captions", schema=Caption)
    captions.add([{"text": t, "lang": "xx"} for t in TEXTS])
    stored = captions.to_arrow().to_pylist()
    np.testing.assert_allclose([row["vector"] for row in stored], func.vectorizer.encode_texts(TEXTS), atol=1e-6)
    assert captions.search("ein Hund am Strand").limit(1).to_list()[0]["text"] == "ein Hund am Strand"

    class Photo(LanceModel):
        uri: str = func.SourceField()
        vector: Vector(func.ndims()) = func.VectorField()

    photos = db.create_table("photos", schema=Photo)
    paths = sample_image_files(tmp_path / "photos", 4)
    photos.add([{"uri": str(p)} for p in paths])
    for i in (0, 3):
        for query in (Image.open(paths[i]), paths[i]):  # a PIL image or a path embeds an image query
            assert photos.search(query).limit(1).to_list()[0]["uri"] == str(paths[i])
    image_vectors = func.vectorizer.encode_images(paths)
    hits = photos.search("ein Hund am Strand").limit(4).to_list()  # a text query finds images, as the core ranks
    order = np.argsort(-(image_vectors @ func.vectorizer.encode_texts(["ein Hund am Strand"])[0]))
    assert [hit["uri"] for hit in hits] == [str(paths[i]) for i in order]


def test_one_table_holds_image_rows_and_text_rows(table, func, tmp_path):
    paths = sample_image_files(tmp_path / "photos", 3)
    table.add([{"id": "cat", "modality": "image", "source": str(paths[0])}])  # LanceDB embeds the image itself
    add_images(table, paths[1:])
    add_texts(table, TEXTS)
    rows = rows_by_id(table)
    assert len(rows) == 7
    vec = func.vectorizer
    np.testing.assert_allclose(rows["cat"]["vector"], vec.encode_images([paths[0]])[0], atol=1e-6)
    np.testing.assert_allclose(rows[content_id(TEXTS[1], "text")]["vector"], vec.encode_texts([TEXTS[1]])[0],
                               atol=1e-6)
    assert rows[content_id(paths[1])]["source"] == str(paths[1]) and rows[content_id(paths[1])]["modality"] == "image"
    assert rows[content_id(TEXTS[0], "text")]["text"] == TEXTS[0]
    assert table.search(TEXTS[2]).limit(1).to_list()[0]["text"] == TEXTS[2]
    assert table.search(Image.open(paths[2])).limit(1).to_list()[0]["id"] == content_id(paths[2])
    only_images = table.search(TEXTS[2]).where("modality = 'image'").limit(10).to_list()
    assert {hit["id"] for hit in only_images} == {"cat", content_id(paths[1]), content_id(paths[2])}


def test_bulk_ingest_is_idempotent_upserts_and_re_embeds(table, func, tmp_path):
    paths = sample_image_files(tmp_path / "photos", 5)
    first = add_images(table, tmp_path / "photos", chunk_size=2)
    assert first.ids == [content_id(p) for p in paths]
    assert add_images(table, paths).ids == first.ids and table.count_rows() == 5  # nothing doubles
    add_texts(table, ["ein Hund"], ids=["mine"])
    add_texts(table, ["eine ganz andere Katze"], ids=["mine"])  # same id: replaced and re-embedded
    row = rows_by_id(table)["mine"]
    assert row["text"] == "eine ganz andere Katze" and table.count_rows() == 6
    np.testing.assert_allclose(row["vector"], func.vectorizer.encode_texts([row["text"]])[0], atol=1e-6)
    table.delete("id = 'mine'")
    assert table.count_rows() == 5


def test_bulk_ingest_writes_nothing_on_a_bad_item_or_skips_it(table, tmp_path):
    good = sample_image_files(tmp_path, 3)
    with pytest.raises(InvalidImageError) as info:
        add_images(table, [*good, BAD], chunk_size=2)
    assert info.value.index == 3 and table.count_rows() == 0
    with pytest.raises(InvalidTextError):
        add_texts(table, ["fine", "  "])
    assert table.count_rows() == 0
    result = add_images(table, [good[0], BAD, good[1], good[2]], on_error="skip")
    assert [e.index for e in result.skipped] == [1] and result.written == 3 and table.count_rows() == 3


def test_payloads_fill_your_own_columns_and_unknown_keys_are_refused(db, func):
    class Photo(bge_siglip_lancedb.schema(func)):
        album: Optional[str] = None

    table = bge_siglip_lancedb.create_table(db, "albums", func, schema_model=Photo)
    add_texts(table, ["ein Hund"], payloads=[{"album": "beach"}])
    assert table.to_arrow().to_pylist()[0]["album"] == "beach"
    with pytest.raises(ValueError, match="not columns"):
        add_texts(table, ["x"], payloads=[{"albun": "typo"}])
    with pytest.raises(ValueError, match="writes itself"):
        add_texts(table, ["x"], payloads=[{"vector": [0.0]}])
    with pytest.raises(InvalidInputError, match="single str"):
        add_texts(table, "ein Hund")


def test_table_add_of_a_bad_image_writes_nothing(table, tmp_path):
    # Inside table.add LanceDB runs the function in its Arrow writer and reports what it raises as a RuntimeError
    # carrying our message; add_images keeps the typed error (it encodes before LanceDB sees the rows).
    good = sample_image_files(tmp_path, 1)[0]
    bad = tmp_path / "bad.png"
    bad.write_bytes(BAD)
    with pytest.raises(RuntimeError, match=r"image #1 .*bad\.png"):
        table.add([{"id": "a", "source": str(good)}, {"id": "b", "source": str(bad)}])
    assert table.count_rows() == 0


def test_full_text_search_beside_our_vectors(table, func):
    add_texts(table, TEXTS)
    add_images(table, [np.asarray(sample_image(40, 40, seed=s)) for s in range(3)])
    table.create_index("text", config=FTS())
    before = func.vectorizer.stats.texts
    hits = table.search("canapé", query_type="hybrid").limit(4).to_list()
    assert func.vectorizer.stats.texts == before + 1  # the vector half embedded the query with our function
    assert hits[0]["text"] == TEXTS[2]  # the only text with the word ranks first
    assert "_relevance_score" in hits[0] and len(hits) == 4
    fts = table.search("Hund", query_type="fts").limit(5).to_list()
    assert [hit["text"] for hit in fts] == [TEXTS[1]]


# ------------------------------------------------------------------------------------------------ model guard
def test_a_table_of_model_a_refuses_model_b(db, func, table, bge_siglip_other_model_dir):
    add_texts(table, TEXTS[:2])
    other = get_registry().get("bge-siglip").create(model=str(bge_siglip_other_model_dir), device="cpu")
    with pytest.raises(ModelMismatchError, match="not of this model"):
        bge_siglip_lancedb.create_table(db, "items", other, exist_ok=True)
    assert bge_siglip_lancedb.create_table(db, "items", func, exist_ok=True).count_rows() == 2
    plain = db.create_table("plain", schema=pa.schema([pa.field("id", pa.string())]))
    with pytest.raises(ValueError, match="no 'bge-siglip' embedding function"):
        add_texts(plain, ["x"])


REOPEN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import lancedb
    import bge_siglip_lancedb
    from bge_siglip_vectorizer import ModelMismatchError

    path, query = sys.argv[1:3]
    db = lancedb.connect(path)
    table = db.open_table("kept")                    # no function passed: rebuilt from the table's metadata
    function = table.embedding_functions["vector"].function
    out = {"ids": [hit["id"] for hit in table.search(query).limit(10).to_list()], "count": table.count_rows(),
           "function": type(function).__name__, "config": function.safe_model_dump()}
    bge_siglip_lancedb.add_texts(table, ["written in another process"])
    out["after_add"] = table.count_rows()
    try:
        db.open_table("swapped").search(query).limit(1).to_list()
    except ModelMismatchError as exc:
        out["swapped"] = type(exc).__name__
    print(json.dumps(out))
    """
)


def test_a_new_process_rebuilds_the_function_and_refuses_a_swapped_model(
    func, bge_siglip_model_dir, bge_siglip_other_model_dir, tmp_path
):
    db = lancedb.connect(str(tmp_path / "db"))
    kept = bge_siglip_lancedb.create_table(db, "kept", func)
    add_images(kept, sample_image_files(tmp_path / "photos", 3))
    add_texts(kept, TEXTS)
    here = [hit["id"] for hit in kept.search(TEXTS[1]).limit(10).to_list()]
    # A table whose model directory is then replaced by another model (e.g. retrained in place).
    swapped_dir = tmp_path / "model-swapped"
    shutil.copytree(bge_siglip_model_dir, swapped_dir)
    swapped_func = get_registry().get("bge-siglip").create(model=str(swapped_dir), device="cpu")
    add_texts(bge_siglip_lancedb.create_table(db, "swapped", swapped_func), TEXTS)
    shutil.rmtree(swapped_dir)
    shutil.copytree(bge_siglip_other_model_dir, swapped_dir)

    script = tmp_path / "reopen.py"
    script.write_text(REOPEN_SCRIPT)
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "db"), TEXTS[1]], cwd="/",
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    there = json.loads(run.stdout.strip().splitlines()[-1])
    assert there["ids"] == here and there["count"] == 7 and there["after_add"] == 8
    assert there["function"] == "BGESigLIPEmbeddings" and there["config"] == func.safe_model_dump()
    assert there["swapped"] == "ModelMismatchError"


def test_the_quickstart_example_runs_twice_without_duplicates(bge_siglip_model_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("lancedb_quickstart", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    sample_image_files(tmp_path / "photos", 3)
    args = ["--model", str(bge_siglip_model_dir), "--images", str(tmp_path / "photos"), "--db", str(tmp_path / "ex")]
    example.main(args)
    first = capsys.readouterr().out
    example.main(args)
    second = capsys.readouterr().out
    assert "the table holds 3 images and 2 texts" in first and "the table holds 3 images and 2 texts" in second
    assert first.split("text:", 1)[1] == second.split("text:", 1)[1]

