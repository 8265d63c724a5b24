"""Content ids of image files, remembered by file identity, and where the page keeps what it makes.

A file's id is the core's :func:`~bge_siglip_vectorizer.content_id` (a hash of its bytes: the id the Qdrant adapter
and ``bge-siglip ingest`` give it too). Hashing 10,000 photos on every start would take a while, so the id is
remembered with the file's identity (path, size, modification time): an unchanged file is never read again, a
changed one is hashed anew. The memo is a cache; deleting it costs one re-hash.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Callable, Iterable

from bge_siglip_vectorizer import content_id

__all__ = ["FileIds", "default_cache_dir"]


def default_cache_dir() -> Path:
    """Where the page keeps folder indexes, thumbnails and the id memo unless ``--cache-dir`` says otherwise: the
    user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS,
    ``%LOCALAPPDATA%`` on Windows) + ``bge-siglip/ui``. Never the image folder itself: it may be read-only or
    shared, and everything here can be rebuilt."""
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "bge-siglip" / "ui"


class FileIds:
    """``path -> content id`` for image files, a file read only when it is new or changed (an SQLite memo)."""

    def __init__(self, path: str | os.PathLike) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the request threads and the indexer, behind a lock; other processes (a second
        # page) wait on SQLite's own lock.
        self._db = sqlite3.connect(os.fspath(path), check_same_thread=False, timeout=30)
        self._db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, "
                         "mtime_ns INTEGER NOT NULL, id TEXT NOT NULL)")
        self._db.commit()
        self._lock = threading.Lock()
        #: Files read (hashed) by this instance: a test's and the terminal's measure of "only new files".
        self.hashed = 0

    def ids(self, paths: Iterable[Path], on_file: Callable[[int], None] | None = None) -> list[str | None]:
        """The content id of each file (in order; ``None`` for one that cannot be read, e.g. deleted meanwhile):
        unchanged files from the memo, the rest hashed and remembered. ``on_file(n)`` is called with the number of
        files done so far (a progress report)."""
        out: list[str | None] = []
        fresh: list[tuple[str, int, int, str]] = []
        for path in paths:
            key = os.fspath(path)
            try:
                stat = path.stat()  # before hashing: a file changed while being read is hashed again next time
                with self._lock:
                    row = self._db.execute("SELECT size, mtime_ns, id FROM files WHERE path = ?", (key,)).fetchone()
                if row is not None and (row[0], row[1]) == (stat.st_size, stat.st_mtime_ns):
                    item_id = row[2]
                else:
                    item_id = content_id(path)
                    self.hashed += 1
                    fresh.append((key, stat.st_size, stat.st_mtime_ns, item_id))
            except OSError:
                item_id = None
            out.append(item_id)
            if len(fresh) >= 256:  # remembered as it goes: an interrupted first scan is not lost
                self._remember(fresh)
            if on_file is not None:
                on_file(len(out))
        self._remember(fresh)
        return out

    def _remember(self, fresh: list[tuple[str, int, int, str]]) -> None:
        if fresh:
            with self._lock:
                self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", fresh)
                self._db.commit()
            fresh.clear()

    def id(self, path: Path) -> str | None:
        return self.ids([path])[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
