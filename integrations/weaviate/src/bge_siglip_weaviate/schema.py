"""Collections vectorised by Weaviate's own ``multi2vec-clip`` module, pointed at our server.

Nothing here is ours on the wire: the helpers return the stock ``Configure.Vectors.multi2vec_clip(...)`` config and
call the stock ``client.collections.create(...)``, so the collection works with any Weaviate that has the module
enabled (``ENABLE_MODULES=multi2vec-clip``, ``CLIP_INFERENCE_API=http://<server>:8080``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

from weaviate.classes.config import Configure, DataType, Multi2VecField, Property

if TYPE_CHECKING:
    # What Configure.Vectors.multi2vec_clip returns; a private module, and named this way from 4.16 on (the public
    # alias ``weaviate.classes.config.VectorConfigCreate`` only exists in later releases). Annotations only.
    from weaviate.collections.classes.config_vectors import _VectorConfigCreate

__all__ = ["Fields", "multi2vec_clip_config", "multi2vec_collection_arguments", "create_multi2vec_collection"]

#: Field names, ``{name: weight}``, or the client's own ``Multi2VecField`` objects.
Fields = Union[Sequence[str], Mapping[str, Union[float, None]], Sequence[Multi2VecField], None]


def _fields(fields: Fields, kind: str) -> list[Multi2VecField] | None:
    if fields is None:
        return None
    if isinstance(fields, str):
        raise TypeError(f"{kind}_fields must be a list of property names, not a single string; wrap it in a list")
    if isinstance(fields, Mapping):
        out = [Multi2VecField(name=name, weight=None if weight is None else float(weight)) for name, weight in fields.items()]
    else:
        out = [f if isinstance(f, Multi2VecField) else Multi2VecField(name=str(f)) for f in fields]
    if not out:
        raise ValueError(f"{kind}_fields is empty; leave it out instead (Weaviate rejects an empty list)")
    names = [f.name for f in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{kind}_fields has duplicate names: {names}")
    weighted = [f.weight is not None for f in out]
    if any(weighted) and not all(weighted):
        # The client serialises only the weights that are set; Weaviate then rejects the collection with
        # "weights.<kind>Fields does not equal number of <kind>Fields". Catch it here, with the names.
        missing = [f.name for f in out if f.weight is None]
        raise ValueError(f"give every {kind} field a weight or none; missing for {missing}")
    return out


def multi2vec_clip_config(
    *,
    image_fields: Fields = ("image",),
    text_fields: Fields = None,
    inference_url: str | None = None,
    name: str | None = None,
    **options: Any,
) -> "_VectorConfigCreate":
    """The stock ``Configure.Vectors.multi2vec_clip`` config for a BGE-SigLIP server.

    ``image_fields`` / ``text_fields``: BLOB / TEXT property names, or ``{name: weight}`` (Weaviate sums the field
    vectors with these weights and does not re-normalise). ``inference_url``: this collection's server (Weaviate
    >= 1.24.2); without it Weaviate uses ``CLIP_INFERENCE_API``. ``name`` names the vector (default: ``default``).
    Other keyword arguments (``vector_index_config``, ``quantizer``) pass through to the client.
    """
    images = _fields(image_fields, "image")
    texts = _fields(text_fields, "text")
    if images is None and texts is None:
        raise ValueError("give image_fields, text_fields or both")
    overlap = {f.name for f in images or []} & {f.name for f in texts or []}
    if overlap:
        raise ValueError(f"properties {sorted(overlap)} are listed as both image and text fields")
    return Configure.Vectors.multi2vec_clip(
        name=name, image_fields=images, text_fields=texts, inference_url=inference_url, **options
    )


def multi2vec_collection_arguments(
    *,
    image_fields: Fields = ("image",),
    text_fields: Fields = None,
    inference_url: str | None = None,
    vector_name: str | None = None,
    extra_properties: Sequence[Property] = (),
    **create_options: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``client.collections.create(name, **kwargs)``: properties plus the vector config.

    Image fields become ``DataType.BLOB`` properties (Weaviate stores base64 and passes it to ``/vectorize``
    unchanged), text fields ``DataType.TEXT``. ``extra_properties`` are stored but not vectorised.
    """
    vector_config = multi2vec_clip_config(
        image_fields=image_fields, text_fields=text_fields, inference_url=inference_url, name=vector_name
    )
    vectorizer = vector_config.vectorizer
    properties = [Property(name=f.name, data_type=DataType.BLOB) for f in vectorizer.imageFields or []]  # type: ignore[attr-defined]
    properties += [Property(name=f.name, data_type=DataType.TEXT) for f in vectorizer.textFields or []]  # type: ignore[attr-defined]
    taken = {p.name for p in properties}
    for prop in extra_properties:
        if prop.name in taken:
            raise ValueError(f"extra property {prop.name!r} is already a vectorised field")
        properties.append(prop)
    return {"properties": properties, "vector_config": vector_config, **create_options}


def create_multi2vec_collection(client: Any, name: str, **kwargs: Any) -> Any:
    """Create collection ``name`` vectorised by ``multi2vec-clip`` (arguments as :func:`multi2vec_collection_arguments`).

    Returns the ``weaviate.collections.Collection``; insert objects with the image as base64 in the BLOB property
    and query with ``collection.query.near_text(...)`` / ``near_image(...)``.
    """
    return client.collections.create(name, **multi2vec_collection_arguments(**kwargs))
