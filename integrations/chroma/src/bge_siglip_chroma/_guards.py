"""Where chromadb 1.x leaves our promises open, checks that run before Chroma persists anything.

Installed once, when :mod:`bge_siglip_chroma` is imported (which every process using our function does). Each
wrapper acts only on collections whose embedding function is ours (``name() == "bge-siglip"``) and otherwise calls
Chroma's own method unchanged:

* ``Collection.modify`` / ``AsyncCollection.modify``: Chroma sends the new configuration to the database first and
  calls ``validate_config_update`` afterwards (``CollectionCommon._update_model_after_modify_success``), so a
  refused model change was already stored and the next ``get_collection`` rebuilt the other model. The same
  comparison now runs before the request, against the collection's stored config.
* ``CollectionCommon.__init__``: ``get_collection(name, embedding_function=f)`` and
  ``get_or_create_collection(...)`` compare only ``f.name()`` with the stored one, so a function for another model
  would write and query the collection. Binding a function of ours to a collection stored with another model's
  fingerprint is refused.
* ``update(ids, uris=...)`` / ``upsert(ids, uris=...)`` (without documents or images): Chroma embeds nothing for
  them (``update`` kept the stale vector silently, ``upsert`` refused). For our collections the URIs are loaded
  (the collection's data loader, else as :class:`ImageURI`) and embedded, as ``add`` does.
* ``Schema._deserialize_sparse_vector_value_type``: Chroma rebuilds a schema's sparse function from its stored
  config every time it reads ``collection.schema`` (each add and query), and turns any error into a *warning* and
  a schema without the function: documents would then be added without sparse vectors, silently. For our sparse
  function (``"bge-siglip-sparse"``) the rebuild's error is raised instead, e.g. the ``ModelMismatchError`` of a
  model directory that now holds a model with other heads.

Every refusal is a :class:`~bge_siglip_vectorizer.ModelMismatchError` (a ``ValueError``, as Chroma raises).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional

from chromadb.api.models.AsyncCollection import AsyncCollection
from chromadb.api.models.Collection import Collection
from chromadb.api.models.CollectionCommon import CollectionCommon
from chromadb.api.types import SPARSE_VECTOR_INDEX_NAME, Schema

from .embedding_function import NAME, BGESigLIPEmbeddingFunction, ImageURI, check_same_model
from .sparse_function import SPARSE_NAME, BGESigLIPSparseEmbeddingFunction

_MARK = "__bge_siglip_guard__"


def _stored_function(collection: Any) -> Optional[Dict[str, Any]]:
    """The collection's persisted ``{"name", "type", "config"}`` (raw JSON: nothing is built or loaded)."""
    return (collection._model.configuration_json or {}).get("embedding_function")


def _where(collection: Any) -> str:
    return f"collection {collection.name!r}"


def _check_binding(collection: Any) -> None:
    function = collection._embedding_function
    stored = _stored_function(collection)
    if isinstance(function, BGESigLIPEmbeddingFunction) and stored and stored.get("name") == NAME:
        check_same_model(stored.get("config") or {}, function.fingerprint, _where(collection))


def _check_modify(collection: Any, configuration: Any) -> None:
    function = (configuration or {}).get("embedding_function")
    if not isinstance(function, BGESigLIPEmbeddingFunction):
        return
    stored = _stored_function(collection)
    if stored and stored.get("type") == "known" and stored.get("name") not in (None, NAME):
        # Chroma refuses this too, but only after it stored the new config.
        raise ValueError(f"cannot change the embedding function of {_where(collection)} from "
                         f"{stored.get('name')!r} to {NAME!r}")
    if stored and stored.get("name") == NAME:
        check_same_model(stored.get("config") or {}, function.fingerprint, _where(collection))


def _is_ours(collection: Any) -> bool:
    if isinstance(collection._embedding_function, BGESigLIPEmbeddingFunction):
        return True
    stored = _stored_function(collection)
    return bool(stored) and stored.get("name") == NAME


def _embed_uris(collection: Any, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """``kwargs`` of an update/upsert request, with embeddings for URIs that Chroma would leave unembedded."""
    uris = kwargs.get("uris")
    if uris is None or any(kwargs.get(key) is not None for key in ("embeddings", "documents", "images")):
        return kwargs
    if not _is_ours(collection):
        return kwargs
    listed = [uris] if isinstance(uris, str) else list(uris)
    loader = collection._data_loader
    items = loader(uris=listed) if loader is not None else [None if u is None else ImageURI(u) for u in listed]
    return {**kwargs, "embeddings": collection._embed(input=items)}


def _wrap(owner: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    original = owner.__dict__.get(name)
    if original is None:
        raise RuntimeError(f"bge-siglip-chroma cannot guard {owner.__name__}.{name}: not in this chromadb; "
                           "install a chromadb release the adapter supports (see its pyproject.toml)")
    method = original.__func__ if isinstance(original, classmethod) else original
    if getattr(method, _MARK, False):
        return
    wrapped = functools.wraps(method)(make(method))
    setattr(wrapped, _MARK, True)
    setattr(owner, name, classmethod(wrapped) if isinstance(original, classmethod) else wrapped)


def _guard_init(original: Callable[..., Any]) -> Callable[..., Any]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        _check_binding(self)

    return __init__


def _guard_modify(original: Callable[..., Any]) -> Callable[..., Any]:
    # Returns what the original returns (a coroutine for AsyncCollection): the check runs before either starts.
    def modify(self: Any, name: Optional[str] = None, metadata: Any = None, configuration: Any = None) -> Any:
        _check_modify(self, configuration)
        return original(self, name=name, metadata=metadata, configuration=configuration)

    return modify


def _guard_prepare(original: Callable[..., Any]) -> Callable[..., Any]:
    # The request preparation that sync and async update/upsert share: nothing has been sent yet.
    def prepare(self: Any, **kwargs: Any) -> Any:
        return original(self, **_embed_uris(self, kwargs))

    return prepare


def _guard_sparse_schema(original: Callable[..., Any]) -> Callable[..., Any]:
    def deserialize(cls: Any, sparse_vector_json: Dict[str, Any]) -> Any:
        index = sparse_vector_json.get(SPARSE_VECTOR_INDEX_NAME) or {}
        function = (index.get("config") or {}).get("embedding_function") or {}
        if function.get("type") == "known" and function.get("name") == SPARSE_NAME:
            # Raises what Chroma would only warn about; cheap: the model is shared per process.
            BGESigLIPSparseEmbeddingFunction.build_from_config(function.get("config") or {})
        return original(cls, sparse_vector_json)

    return deserialize


def install() -> None:
    """Install the guards (idempotent)."""
    _wrap(CollectionCommon, "__init__", _guard_init)
    _wrap(Collection, "modify", _guard_modify)
    _wrap(AsyncCollection, "modify", _guard_modify)
    _wrap(CollectionCommon, "_validate_and_prepare_update_request", _guard_prepare)
    _wrap(CollectionCommon, "_validate_and_prepare_upsert_request", _guard_prepare)
    _wrap(Schema, "_deserialize_sparse_vector_value_type", _guard_sparse_schema)
