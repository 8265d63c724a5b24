"""Store targets: the one way every command names a vector-store collection (``bge-siglip ingest --into``,
``bge-siglip ui --store``)::

    qdrant:./qdrant#photos              Qdrant local mode (a folder)
    qdrant:http://localhost:6333#photos Qdrant server
    chroma:./chroma#photos              Chroma PersistentClient (a folder)
    chroma:http://localhost:8000#photos Chroma server (HttpClient)
    milvus:./milvus.db#photos           milvus-lite (a file ending in .db)
    milvus:http://localhost:19530#photos Milvus server
    lancedb:./lancedb#photos            LanceDB (a folder)

Only the syntax lives here (the core imports no database client); each command opens the store through its adapter
and says which schemes it supports by subclassing :class:`StoreTarget` with its own :attr:`~StoreTarget.supported`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = ["STORE_ADAPTERS", "StoreTarget"]

#: Every store scheme and the distribution whose adapter serves it (for "needs ..." messages).
STORE_ADAPTERS: dict[str, str] = {
    "qdrant": "bge-siglip-qdrant",
    "chroma": "bge-siglip-chroma",
    "milvus": "bge-siglip-milvus",
    "lancedb": "bge-siglip-lancedb",
}


@dataclass(frozen=True)
class StoreTarget:
    """A parsed target ``scheme:location#collection``; ``location`` is a folder or file of an embedded store, or an
    ``http(s)://`` URL of a server (the collection name follows the *last* ``#``)."""

    scheme: str
    location: str
    collection: str

    #: The schemes :meth:`parse` accepts (a subclass narrows them to what its command can open).
    supported: ClassVar[tuple[str, ...]] = tuple(STORE_ADAPTERS)

    @classmethod
    def parse(cls, text: str) -> "StoreTarget":
        """Parse ``text``, or raise ``ValueError`` saying what is wrong: not of the form, an unknown store, or a
        known store this command does not support (naming the adapter it would need)."""
        scheme, sep, rest = str(text).partition(":")
        location, hash_, collection = rest.rpartition("#")
        if not scheme or not sep or not hash_ or not location or not collection:
            raise ValueError(f"target {text!r} is not of the form SCHEME:LOCATION#COLLECTION (e.g. qdrant:./db#photos)")
        scheme = scheme.lower()
        supported = ", ".join(cls.supported)
        if scheme in STORE_ADAPTERS and scheme not in cls.supported:
            raise ValueError(f"{scheme} targets need the {STORE_ADAPTERS[scheme]} adapter, which this command does "
                             f"not support yet; supported: {supported}")
        if scheme not in cls.supported:
            raise ValueError(f"unknown store {scheme!r} in target {text!r}; supported: {supported}")
        target = cls(scheme, location, collection)
        if scheme == "milvus" and not (target.is_url or location.endswith(".db")):
            # pymilvus reads any other string as a server address and waits for it.
            raise ValueError(f"target {text!r}: a Milvus location is a milvus-lite file ending in .db or a server URL")
        return target

    @property
    def is_url(self) -> bool:
        return self.location.startswith(("http://", "https://"))

    def __str__(self) -> str:
        return f"{self.scheme}:{self.location}#{self.collection}"
