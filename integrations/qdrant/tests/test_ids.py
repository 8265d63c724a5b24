"""The adapter's point ids are the core's ``content_id``, and still the ids it has always given (re-ingesting into a
collection written by an earlier release overwrites instead of duplicating)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import bge_siglip_qdrant
import bge_siglip_vectorizer

_PIXELS = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
_FILE_BYTES = b"\x89PNG fake bytes"

# Computed with the adapter's own implementation (bge_siglip_qdrant/ingest.py before it used the core's) on the
# inputs below; a change of the scheme would re-id every point of every existing collection.
RELEASED_IDS = [
    ("text", "ein Hund", "5d7c47ce-b88d-58ee-b1f8-392c7cff0756"),
    ("image", _FILE_BYTES, "72254bfd-d910-5219-bd1d-908a70668261"),
    ("image", "https://example.com/a.png", "f46bc2bb-8120-5156-9301-84ae5eec23c7"),
    ("image", "data:image/png;base64,iVBOR", "15a29df6-fcc4-569f-9bdd-d368ea7cce41"),
    ("image", _PIXELS, "7d9b9a3b-8e8a-51be-b3ee-6975f37fe46d"),
    ("image", Image.fromarray(_PIXELS), "055beee3-d19a-5dbb-b039-a3b36f686be8"),
    ("text", "a\ud800b", "b6ce0371-e081-5f4b-b276-e1430817c89e"),
]


def test_the_adapter_uses_the_cores_content_id():
    assert bge_siglip_qdrant.content_id is bge_siglip_vectorizer.content_id
    assert bge_siglip_qdrant.ID_NAMESPACE == bge_siglip_vectorizer.ID_NAMESPACE


@pytest.mark.parametrize(("modality", "item", "expected"), RELEASED_IDS, ids=[str(i) for i in range(len(RELEASED_IDS))])
def test_ids_are_the_released_ones(modality, item, expected):
    assert bge_siglip_qdrant.content_id(item, modality) == expected


def test_a_path_gets_its_files_bytes_id(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(_FILE_BYTES)
    assert bge_siglip_qdrant.content_id(str(path)) == bge_siglip_qdrant.content_id(path) == RELEASED_IDS[1][2]
