"""Finding our model's ``models.Document`` / ``models.Image`` objects in qdrant-client structures and replacing them.

One :class:`Resolution` per API call: :meth:`Resolution.rewrite` walks each argument (points, ``Batch``, queries,
prefetches at any depth, query requests, recommend/discover/context inputs, named-vector dicts), returns a copy in
which each of our objects is replaced by a fresh placeholder, and records the object; :meth:`Resolution.run` then
encodes everything and fills the placeholders. The walk is generic over pydantic fields, so every query type
qdrant-client has (or adds later) is covered without a table of types.

The object's ``model`` names its granularity (see :class:`Resolution`): dense vectors (texts and images) fill a
``list[float]``, sparse ones a ``models.SparseVector``, multi-vectors a ``list[list[float]]``. All texts of a call
are encoded by ONE ``encode_texts_all`` call, so a text asked for in several granularities (a hybrid query's
prefetches) takes one forward pass; all images by one ``encode_images`` call.

Only the containers on the path to a replaced object are copied (``model_copy``); the caller's objects are never
modified, and an argument with nothing of ours comes back as the identical object.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Literal, Mapping, Sequence

from pydantic import BaseModel
from qdrant_client import models

from bge_siglip_vectorizer import InvalidInputError, Vectorizer

Granularity = Literal["dense", "sparse", "multivector"]

# Image and InferenceObject arrived in later qdrant-client releases than Document; look them up defensively.
DOCUMENT = models.Document
IMAGE = getattr(models, "Image", None)
INFERENCE_OBJECT = getattr(models, "InferenceObject", None)
INFERENCE_TYPES: tuple[type, ...] = tuple(t for t in (DOCUMENT, IMAGE, INFERENCE_OBJECT) if t is not None)

# User data: never searched (a payload may hold anything, and walking large payloads would only cost time).
_SKIPPED_FIELDS = frozenset({"payload", "payloads"})

#: Where an object sits in the call's arguments: int (list index) and str (".field" or "['key']") fragments.
FieldPath = tuple[Any, ...]


def _fields(model: BaseModel) -> Collection[str]:
    # pydantic v2 has model_fields on the class; v1 (still allowed by qdrant-client) has __fields__.
    return getattr(type(model), "model_fields", None) or model.__fields__  # type: ignore[attr-defined]


def _copy(model: BaseModel, updates: dict[str, Any]) -> BaseModel:
    # model_copy(update=...) does not re-validate: a plain list[float] where a Document was is a valid Vector anyway.
    if hasattr(model, "model_copy"):
        return model.model_copy(update=updates)
    return model.copy(update=updates)  # pydantic v1


def format_path(path: FieldPath) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else part for part in path)


class Resolution:
    """Collects our inference objects from one API call's arguments, then encodes them in one batch.

    ``names`` maps each model name that marks an object as ours to the granularity it asks for (``"bge-siglip"``:
    dense, ``"bge-siglip-sparse"``: sparse, ``"bge-siglip-multivector"``: multi-vector).
    """

    def __init__(self, vectorizer: Vectorizer, names: Mapping[str, Granularity], batch_size: int,
                 show_progress: bool | None):
        self.vectorizer = vectorizer
        self.names = names
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.items: list[Any] = []
        self.kinds: list[str] = []
        self.granularities: list[Granularity] = []
        self.slots: list[Any] = []
        self.owners: list[int | None] = []
        self.paths: list[str] = []

    def __len__(self) -> int:
        return len(self.items)

    def rewrite(self, obj: Any, root: str, indexed: bool = True) -> Any:
        """``obj`` with each of our objects replaced by a placeholder (filled by :meth:`run`).

        ``indexed``: errors name the first list index on the object's path (the point / request / batch row in the
        caller's list); otherwise they carry no index (a single query).
        """
        owner = (lambda path: next((p for p in path if isinstance(p, int)), None)) if indexed else (lambda path: None)
        return self._walk(obj, (root,), owner)

    def _walk(self, obj: Any, path: FieldPath, owner: Callable[[FieldPath], int | None]) -> Any:
        if isinstance(obj, INFERENCE_TYPES):
            return self._take(obj, path, owner(path)) if obj.model in self.names else obj
        if isinstance(obj, BaseModel):
            updates = {}
            for name in _fields(obj):
                if name in _SKIPPED_FIELDS:
                    continue
                value = getattr(obj, name)
                new = self._walk(value, path + (f".{name}",), owner)
                if new is not value:
                    updates[name] = new
            return _copy(obj, updates) if updates else obj
        if isinstance(obj, (list, tuple)):
            if not obj or isinstance(obj[0], (int, float)):
                return obj  # a plain vector (or empty): nothing inside; skips the per-float loop
            new_list = [self._walk(value, path + (i,), owner) for i, value in enumerate(obj)]
            if all(a is b for a, b in zip(new_list, obj)):
                return obj
            return new_list if isinstance(obj, list) else type(obj)(new_list)
        if isinstance(obj, dict):
            new_dict = {key: self._walk(value, path + (f"[{key!r}]",), owner) for key, value in obj.items()}
            return obj if all(new_dict[k] is obj[k] for k in obj) else new_dict
        return obj  # numpy arrays, ids, strings, enums, None: never contain inference objects

    def _take(self, obj: Any, path: FieldPath, owner: int | None) -> list[float]:
        where = format_path(path)
        if INFERENCE_OBJECT is not None and isinstance(obj, INFERENCE_OBJECT):
            # An InferenceObject does not say whether it holds a text or an image; guessing would be a silent bug.
            raise InvalidInputError(
                f"models.InferenceObject is ambiguous for {obj.model!r}; use models.Document(text=...) for text "
                "or models.Image(image=...) for an image",
            ).at(owner, where)
        if obj.options:
            raise InvalidInputError(f"{obj.model!r} takes no options, got {sorted(obj.options)}").at(owner, where)
        is_text = isinstance(obj, DOCUMENT)
        granularity = self.names[obj.model]
        if not is_text and granularity != "dense":
            dense = next(name for name, g in self.names.items() if g == "dense")
            raise InvalidInputError(
                f"{obj.model!r} is a text granularity: images have dense vectors only (model={dense!r})"
            ).at(owner, where)
        self.items.append(obj.text if is_text else obj.image)
        self.kinds.append("text" if is_text else "image")
        self.granularities.append(granularity)
        self.owners.append(owner)
        self.paths.append(where)
        slot = placeholder(granularity)  # our own new object, filled by run(); never one of the caller's objects
        self.slots.append(slot)
        return slot

    def run(self) -> None:
        """Encode every collected object (texts first: they are validated without decoding anything) and fill the
        placeholders."""
        texts = [i for i, kind in enumerate(self.kinds) if kind == "text"]
        images = [i for i, kind in enumerate(self.kinds) if kind == "image"]
        if texts:
            wanted = {self.granularities[i] for i in texts}
            encodings = self._encode(texts, lambda items: self.vectorizer.encode_texts_all(
                items, self.batch_size, self.show_progress, sparse="sparse" in wanted,
                multivector="multivector" in wanted))
            for row, i in enumerate(texts):
                fill(self.slots[i], self.granularities[i], getattr(encodings, self.granularities[i])[row])
        if images:
            vectors = self._encode(images, lambda items: self.vectorizer.encode_images(
                items, batch_size=self.batch_size, show_progress=self.show_progress))
            for row, i in enumerate(images):
                fill(self.slots[i], "dense", vectors[row])

    def _encode(self, positions: Sequence[int], encode: Callable[[list[Any]], Any]) -> Any:
        try:
            return encode([self.items[i] for i in positions])
        except InvalidInputError as exc:
            if exc.index is None or not 0 <= exc.index < len(positions):
                raise
            # The core names the position in the list it was given; the caller needs their point / request and
            # the field.
            i = positions[exc.index]
            raise exc.at(self.owners[i], self.paths[i]) from None


def placeholder(granularity: Granularity) -> Any:
    """An empty vector of a granularity's qdrant type, for :func:`fill`."""
    return models.SparseVector(indices=[], values=[]) if granularity == "sparse" else []


def as_vector(granularity: Granularity, value: Any) -> Any:
    """One encoded value (dense row, ``SparseEmbedding``, multi-vector array) as a qdrant vector."""
    slot = placeholder(granularity)
    fill(slot, granularity, value)
    return slot


def fill(slot: Any, granularity: Granularity, value: Any) -> None:
    """Fill a placeholder in place with one encoded value, as python numbers (valid Strict* fields for every
    transport)."""
    if granularity == "sparse":
        slot.indices.extend(value.indices.tolist())
        slot.values.extend(value.values.tolist())
    else:
        slot.extend(value.tolist())  # dense: (dim,) floats; multivector: (tokens, dim) rows
