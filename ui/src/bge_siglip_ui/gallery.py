"""``--folder DIR``: a folder of images kept in sync with its own Qdrant local-mode collection.

Where: ``<cache dir>/galleries/<folder name>-<hash of its absolute path>/qdrant`` (see
:func:`~bge_siglip_ui.files.default_cache_dir`), one collection per model (``gallery-<fingerprint>``), so another
model never mixes its vectors in. The folder itself is only read.

A sync (every start) lists the folder's images (the core's ``list_image_files``: recursive, hidden files skipped),
takes each file's content id (:class:`~bge_siglip_ui.files.FileIds`: unchanged files are not read again), embeds only
the ids the collection does not hold yet (new or edited files; a moved or copied file keeps its id and is not
embedded again), and deletes the points of files that are gone. Files are decoded in a thread pool one batch ahead
of the model (the core's ``ImagePreparer``), encoded with ``encode_prepared`` (the vectors of ``encode_images``) and
upserted through the Qdrant adapter with the payload its ``add_images`` writes (the core's ``provenance``). A file that does not decode is
reported (page and terminal) and left out; the next start tries it again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bge_siglip_vectorizer import (
    InvalidInputError,
    PatchedImage,
    StoreTarget,
    Vectorizer,
    list_image_files,
    provenance,
)

from .files import FileIds
from .stores import QdrantStore, Record, StoreError, local_qdrant

__all__ = ["FolderIndex", "Progress", "gallery_dir"]

#: Error messages a progress report keeps (the count is always exact).
KEEP_ERRORS = 20


@dataclass
class Progress:
    """Where a sync is: read by the page (``/api/status``) while the indexer thread updates it."""

    phase: str = "waiting"  # waiting, scanning, hashing, embedding, done, failed, stopped
    files: int = 0  # image files in the folder
    unchanged: int = 0  # already in the collection
    total: int = 0  # to embed
    done: int = 0  # embedded (or refused) so far
    failed: int = 0
    removed: int = 0  # points of files no longer in the folder
    errors: list[str] = field(default_factory=list)
    error: str | None = None  # why the whole sync failed
    started: float = field(default_factory=time.time)
    finished: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def update(self, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)

    def add_error(self, message: str) -> None:
        with self._lock:
            self.failed += 1
            if len(self.errors) < KEEP_ERRORS:
                self.errors.append(message)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            state = {f.name: copy.copy(getattr(self, f.name)) for f in fields(self) if not f.name.startswith("_")}
        elapsed = (self.finished or time.time()) - self.started
        state["elapsed_s"] = round(elapsed, 1)
        state["rate"] = round(self.done / elapsed, 1) if self.phase == "embedding" and elapsed > 0 else None
        return state


def gallery_dir(cache_dir: Path, folder: Path) -> Path:
    """The folder's index directory: readable name, plus a hash so two folders of one name do not collide."""
    folder = folder.resolve()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.name).strip("-.") or "folder"
    return cache_dir / "galleries" / f"{slug[:40]}-{hashlib.blake2b(str(folder).encode(), digest_size=6).hexdigest()}"


class GalleryStore(QdrantStore):
    """The folder index's collection: a hit's file is the one found in the folder by the last scan (a point keeps
    the path it was first embedded from; a duplicate or moved file serves it once that path is gone)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.paths: dict[str, Path] = {}

    def _record(self, point_id: Any, payload: dict[str, Any] | None) -> Record:
        path = self.paths.get(str(point_id))
        return Record(str(point_id), "image", source=str(path)) if path else super()._record(point_id, payload)


class FolderIndex:
    """One folder's index (see the module docstring); :meth:`sync` brings it up to date."""

    def __init__(self, folder: str | Path, cache_dir: str | Path, vectorizer: Vectorizer, file_ids: FileIds,
                 batch_size: int = 32) -> None:
        from bge_siglip_qdrant import BGESigLIPQdrant

        self.folder = Path(folder).expanduser().resolve()
        if not self.folder.is_dir():
            raise StoreError(f"--folder {folder}: no such folder")
        self.dir = gallery_dir(Path(cache_dir), self.folder)
        self._mark()
        self.vectorizer = vectorizer
        self.file_ids = file_ids
        self.batch_size = batch_size
        collection = f"gallery-{vectorizer.fingerprint[:16]}"
        target = StoreTarget("qdrant", str(self.dir / "qdrant"), collection)
        client = local_qdrant(target)
        try:
            if not client.collection_exists(collection):
                BGESigLIPQdrant(client, vectorizer=vectorizer).create_collection(collection)
            self.store = GalleryStore(client, collection, vectorizer, str(target))
        except BaseException:
            client.close()
            raise
        self.progress = Progress()
        self._stop = threading.Event()

    def _mark(self) -> None:
        """Say in the index directory which folder it indexes (for people; and refuse one made for another)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        marker = self.dir / "gallery.json"
        if marker.is_file():
            recorded = json.loads(marker.read_text(encoding="utf-8")).get("folder")
            if recorded != str(self.folder):
                raise StoreError(f"{self.dir} indexes {recorded}, not {self.folder}")
            return
        marker.write_text(json.dumps({"folder": str(self.folder), "made_by": "bge-siglip ui"}, indent=2) + "\n",
                          encoding="utf-8")

    def stop(self) -> None:
        """Ask a running sync to stop after its current batch (what is written stays written)."""
        self._stop.set()

    def sync(self, show_progress: bool | None = None) -> Progress:
        """Bring the collection up to date with the folder; progress in :attr:`progress` (and on the terminal)."""
        from qdrant_client import models
        from tqdm.auto import tqdm

        progress = self.progress
        progress.update(phase="scanning", started=time.time())
        try:
            files = list_image_files(self.folder)
            progress.update(phase="hashing", files=len(files), total=len(files), done=0)
            ids = self.file_ids.ids(files, on_file=lambda done: progress.update(done=done))
            wanted: dict[str, Path] = {}
            for item_id, path in zip(ids, files):
                if item_id is None:
                    progress.add_error(f"{path}: cannot be read")
                    continue
                wanted.setdefault(item_id, path)  # exact duplicates are one point, served from the first file
            stored = self.store.ids()
            self.store.paths = wanted
            gone = sorted(stored - wanted.keys())
            self.store.delete(gone)
            todo = [(item_id, path) for item_id, path in wanted.items() if item_id not in stored]
            progress.update(phase="embedding", unchanged=len(wanted) - len(todo), total=len(todo), done=0,
                            removed=len(gone))
            show = sys.stderr.isatty() if show_progress is None else show_progress
            with tqdm(total=len(todo), unit="image", desc=f"indexing {self.folder.name}", disable=not show,
                      file=sys.stderr) as bar:
                for chunk, vectors, kept in self._embedded(todo):
                    points = [models.PointStruct(id=item_id, vector=vector.tolist(), payload=provenance(path, "image"))
                              for (item_id, path), vector in zip(kept, vectors)]
                    if points:
                        self.store.upsert(points)
                    progress.update(done=progress.done + len(chunk))
                    bar.update(len(chunk))
                    bar.set_postfix(failed=progress.failed, refresh=False)
                    if self._stop.is_set():
                        progress.update(phase="stopped", finished=time.time())
                        return progress
            progress.update(phase="done", finished=time.time())
        except Exception as exc:  # noqa: BLE001 - shown on the page; the collection keeps what was written
            progress.update(phase="failed", error=f"{type(exc).__name__}: {exc}", finished=time.time())
            raise
        return progress

    def _embedded(self, todo: list[tuple[str, Path]]):
        """``(chunk, vectors, kept)`` per batch: the next batch decodes while this one is in the model."""
        chunks = [todo[start : start + self.batch_size] for start in range(0, len(todo), self.batch_size)]
        preparer = self.vectorizer.preparer
        with ThreadPoolExecutor(self.vectorizer.num_workers, thread_name_prefix="bge-siglip-ui-decode") as pool:
            def submit(chunk: list[tuple[str, Path]]) -> list[Future]:
                return [pool.submit(preparer.prepare, path) for _, path in chunk]

            pending = submit(chunks[0]) if chunks else []
            for index, chunk in enumerate(chunks):
                futures = pending
                pending = submit(chunks[index + 1]) if index + 1 < len(chunks) else []
                kept: list[tuple[str, Path]] = []
                prepared: list[PatchedImage] = []
                for entry, future in zip(chunk, futures):
                    try:
                        prepared.append(future.result())
                        kept.append(entry)
                    except InvalidInputError as exc:
                        self.progress.add_error(str(exc.at(None)))
                yield chunk, self.vectorizer.encode_prepared(prepared, self.batch_size), kept
                if self._stop.is_set():
                    for future in pending:
                        future.cancel()
                    return

    def close(self) -> None:
        self.stop()
        self.store.close()
