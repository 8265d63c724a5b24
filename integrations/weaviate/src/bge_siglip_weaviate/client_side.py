"""Client-side mode: for Weaviate instances without the ``multi2vec-clip`` module (e.g. Weaviate Cloud).

Vectors are computed in this process by the core ``Vectorizer`` and sent with the objects (``vector=``); queries
are ``near_vector`` searches with a vector computed from a text or an image. Only stock weaviate-client calls are
used (``insert_many``, ``query.near_vector``), on a collection whose vector config is ``self_provided``.

The vectors are the same as the server's (same model, same core code), so a collection filled in one mode can be
queried in the other.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import unquote, urlparse

import numpy as np
from weaviate.classes.config import Configure, DataType, Property
from weaviate.classes.data import DataObject
from weaviate.classes.query import MetadataQuery

from bge_siglip_vectorizer import Vectorizer, VectorizerOptions, shared_vectorizer

__all__ = ["ClientSideCollection", "InsertError", "self_provided_collection_arguments"]

_DATA_URI_PREFIX = re.compile(r"^data:[^,]*;base64,", re.I)
# The core's options are accepted by name (derived: a field the core adds is accepted too).
_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(VectorizerOptions))


class InsertError(RuntimeError):
    """Weaviate refused some objects of an ``insert_many``; ``errors`` maps object position -> message."""

    def __init__(self, errors: Mapping[int, str]) -> None:
        self.errors = dict(errors)
        first = min(self.errors)
        super().__init__(f"{len(self.errors)} object(s) not inserted; object #{first}: {self.errors[first]}")


def self_provided_collection_arguments(
    *,
    image_property: str | None = "image",
    text_property: str | None = "text",
    vector_name: str | None = None,
    extra_properties: Sequence[Property] = (),
    **create_options: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``client.collections.create(name, **kwargs)`` in client-side mode.

    The image (base64) goes in a BLOB property so the collection can later be switched to the module, the text in a
    TEXT property; the vector index uses cosine distance (the vectors are L2-normalised).
    """
    properties = []
    if image_property:
        properties.append(Property(name=image_property, data_type=DataType.BLOB))
    if text_property:
        properties.append(Property(name=text_property, data_type=DataType.TEXT))
    properties += list(extra_properties)
    return {"properties": properties, "vector_config": Configure.Vectors.self_provided(name=vector_name), **create_options}


class ClientSideCollection:
    """A ``weaviate.collections.Collection`` plus the core ``Vectorizer`` that computes its vectors.

    ``vectorizer``: a ``Vectorizer`` or a model directory / hub id (then the process-wide shared instance).
    ``image_property`` / ``text_property``: where the raw image (base64) and the text are stored; ``None`` stores
    neither. ``vector_name``: the named vector to write and search (``None``: the collection's single vector).
    ``**options``: fields of the core's ``VectorizerOptions`` (``device``, ``max_num_patches``, ...) for a model
    given by name.
    """

    def __init__(
        self,
        collection: Any,
        vectorizer: Vectorizer | str | os.PathLike,
        *,
        image_property: str | None = "image",
        text_property: str | None = "text",
        vector_name: str | None = None,
        batch_size: int = 32,
        **options: Any,
    ) -> None:
        unknown = sorted(set(options) - _OPTION_NAMES)
        if unknown:
            raise TypeError(f"unknown options {unknown}; the core's options are {sorted(_OPTION_NAMES)}")
        if isinstance(vectorizer, Vectorizer):
            if options:
                raise ValueError(f"options {sorted(options)} apply to a model name, not to a loaded Vectorizer")
            self.vectorizer = vectorizer
        else:
            self.vectorizer = shared_vectorizer(vectorizer, **options)
        self.collection = collection
        self.image_property = image_property
        self.text_property = text_property
        self.vector_name = vector_name
        self.batch_size = batch_size

    @classmethod
    def create(
        cls,
        client: Any,
        name: str,
        vectorizer: Vectorizer | str | os.PathLike,
        *,
        image_property: str | None = "image",
        text_property: str | None = "text",
        vector_name: str | None = None,
        extra_properties: Sequence[Property] = (),
        **create_options: Any,
    ) -> "ClientSideCollection":
        """Create collection ``name`` (self-provided vectors) and wrap it. Keyword arguments that are core options
        (``device``, ...) configure the model; the others go to ``client.collections.create``."""
        options = {key: create_options.pop(key) for key in list(create_options) if key in _OPTION_NAMES}
        collection = client.collections.create(
            name,
            **self_provided_collection_arguments(
                image_property=image_property,
                text_property=text_property,
                vector_name=vector_name,
                extra_properties=extra_properties,
                **create_options,
            ),
        )
        return cls(collection, vectorizer, image_property=image_property, text_property=text_property,
                   vector_name=vector_name, **options)

    # ------------------------------------------------------------------------------------------- writing
    def prepare_images(
        self,
        images: Sequence[Any],
        properties: Sequence[Mapping[str, Any]] | None = None,
        uuids: Sequence[Any] | None = None,
    ) -> list[DataObject]:
        """The ``DataObject``s ``add_images`` inserts: vector from the core, image stored as base64 where possible.

        Every image is encoded before anything is returned: a bad one raises the core's typed error naming its
        index, so nothing is written.
        """
        images = list(images)
        vectors = self.vectorizer.encode_images(images, batch_size=self.batch_size)
        stored = [{self.image_property: blob} if self.image_property and (blob := _as_base64(item)) else {}
                  for item in images]
        return self._objects(vectors, stored, properties, uuids)

    def prepare_texts(
        self,
        texts: Sequence[str],
        properties: Sequence[Mapping[str, Any]] | None = None,
        uuids: Sequence[Any] | None = None,
    ) -> list[DataObject]:
        """The ``DataObject``s ``add_texts`` inserts (text in ``text_property``, vector from the core)."""
        texts = list(texts)
        vectors = self.vectorizer.encode_texts(texts, batch_size=self.batch_size)
        stored = [{self.text_property: text} if self.text_property else {} for text in texts]
        return self._objects(vectors, stored, properties, uuids)

    def add_images(self, images: Sequence[Any], properties: Sequence[Mapping[str, Any]] | None = None,
                   uuids: Sequence[Any] | None = None) -> list[str]:
        """Encode and insert images (paths, bytes, base64, PIL, numpy ...); returns the object UUIDs."""
        return self._insert(self.prepare_images(images, properties, uuids))

    def add_texts(self, texts: Sequence[str], properties: Sequence[Mapping[str, Any]] | None = None,
                  uuids: Sequence[Any] | None = None) -> list[str]:
        """Encode and insert texts; returns the object UUIDs."""
        return self._insert(self.prepare_texts(texts, properties, uuids))

    # ------------------------------------------------------------------------------------------- querying
    def text_query_vector(self, text: str) -> list[float]:
        """The ``near_vector`` for a text query (any language)."""
        return self.vectorizer.encode_texts([text])[0].tolist()

    def image_query_vector(self, image: Any) -> list[float]:
        """The ``near_vector`` for an image query (any input the core accepts)."""
        return self.vectorizer.encode_images([image])[0].tolist()

    def near_text(self, text: str, limit: int = 10, **query_options: Any) -> Any:
        """``collection.query.near_vector`` with the text's vector; extra options pass through (filters, ...)."""
        return self._near_vector(self.text_query_vector(text), limit, query_options)

    def near_image(self, image: Any, limit: int = 10, **query_options: Any) -> Any:
        """``collection.query.near_vector`` with the image's vector."""
        return self._near_vector(self.image_query_vector(image), limit, query_options)

    # ------------------------------------------------------------------------------------------- internals
    def _near_vector(self, vector: list[float], limit: int, options: dict[str, Any]) -> Any:
        options.setdefault("return_metadata", MetadataQuery(distance=True))
        if self.vector_name is not None:
            options.setdefault("target_vector", self.vector_name)
        return self.collection.query.near_vector(near_vector=vector, limit=limit, **options)

    def _objects(self, vectors: np.ndarray, stored: list[dict[str, Any]], properties, uuids) -> list[DataObject]:
        n = len(stored)
        if properties is not None and len(properties) != n:
            raise ValueError(f"{len(properties)} property dicts for {n} items")
        if uuids is not None and len(uuids) != n:
            raise ValueError(f"{len(uuids)} uuids for {n} items")
        objects = []
        for i in range(n):
            props = {**stored[i], **(properties[i] if properties is not None else {})}
            vector = vectors[i].tolist()
            objects.append(DataObject(
                properties=props,
                uuid=uuids[i] if uuids is not None else None,
                vector={self.vector_name: vector} if self.vector_name is not None else vector,
            ))
        return objects

    def _insert(self, objects: list[DataObject]) -> list[str]:
        if not objects:
            return []
        result = self.collection.data.insert_many(objects)
        if result.errors:
            raise InsertError({i: getattr(err, "message", str(err)) for i, err in result.errors.items()})
        return [str(result.uuids[i]) for i in range(len(objects))]


def _as_base64(item: Any) -> str | None:
    """The image as Weaviate stores a BLOB (base64 of the file bytes), or ``None`` for decoded inputs / URLs."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(item)).decode("ascii")
    if isinstance(item, os.PathLike):
        return base64.b64encode(Path(item).read_bytes()).decode("ascii")
    if isinstance(item, str):
        text = item.strip()
        if text.startswith(("http://", "https://")):
            return None
        if text.startswith("file://"):
            return base64.b64encode(Path(unquote(urlparse(text).path)).read_bytes()).decode("ascii")
        if os.path.isfile(text):
            return base64.b64encode(Path(text).read_bytes()).decode("ascii")
        return "".join(_DATA_URI_PREFIX.sub("", text, count=1).split())
    return None  # PIL images and arrays: no file bytes to store (encode them yourself if you need the blob)
