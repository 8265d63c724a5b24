"""The store-target syntax every command that names a collection uses (ingest --into, ui --store)."""

from __future__ import annotations

import pytest

from bge_siglip_vectorizer import STORE_ADAPTERS, StoreTarget


@pytest.mark.parametrize(
    "text, expected",
    [
        ("qdrant:./db#photos", ("qdrant", "./db", "photos")),
        ("QDRANT:/abs/db#p", ("qdrant", "/abs/db", "p")),
        ("chroma:http://localhost:8000#photos", ("chroma", "http://localhost:8000", "photos")),
        # The collection follows the last '#': a folder may hold one.
        ("chroma:./a#b/db#photos", ("chroma", "./a#b/db", "photos")),
    ],
)
def test_parse(text: str, expected: tuple[str, str, str]) -> None:
    target = StoreTarget.parse(text)
    assert (target.scheme, target.location, target.collection) == expected
    assert StoreTarget.parse(str(target)) == target


def test_is_url() -> None:
    assert StoreTarget.parse("qdrant:https://q.example:6333#p").is_url
    assert not StoreTarget.parse("qdrant:./http#p").is_url


@pytest.mark.parametrize("text", ["qdrant", "qdrant:./db", "qdrant:#p", "qdrant:./db#", ":./db#p"])
def test_malformed_targets_say_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="SCHEME:LOCATION#COLLECTION"):
        StoreTarget.parse(text)


def test_unknown_store_lists_the_supported_ones() -> None:
    with pytest.raises(ValueError, match="unknown store 'redis'.*qdrant, chroma"):
        StoreTarget.parse("redis:./r#p")


def test_a_command_narrows_the_schemes_and_names_the_missing_adapter() -> None:
    class OnlyQdrant(StoreTarget):
        supported = ("qdrant",)

    assert type(OnlyQdrant.parse("qdrant:./db#p")) is OnlyQdrant
    with pytest.raises(ValueError, match="bge-siglip-chroma adapter.*supported: qdrant"):
        OnlyQdrant.parse("chroma:./db#p")
    assert set(STORE_ADAPTERS) >= {"qdrant", "chroma", "milvus", "lancedb"}


def test_a_milvus_location_is_a_lite_file_or_a_server_url() -> None:
    assert StoreTarget.parse("milvus:./m.db#p").location == "./m.db"
    assert StoreTarget.parse("milvus:http://localhost:19530#p").is_url
    # Any other string pymilvus would take for a server address and wait on.
    with pytest.raises(ValueError, match="milvus-lite file ending in .db"):
        StoreTarget.parse("milvus:./milvus#p")
