"""--folder: the folder's own index, embedded once per content, kept in sync with the files, the folder untouched."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from bge_siglip_ui.files import FileIds, default_cache_dir
from bge_siglip_ui.gallery import FolderIndex
from bge_siglip_ui.stores import StoreError
from bge_siglip_vectorizer import content_id


def _index(folder: Path, cache: Path, vectorizer) -> FolderIndex:
    return FolderIndex(folder, cache, vectorizer, FileIds(cache / "files.sqlite"), batch_size=3)


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_first_sync_embeds_each_content_once_and_reports_the_bad_file(gallery, tmp_path, bge_siglip_vectorizer):
    before = bge_siglip_vectorizer.stats.images
    folder_before = _tree(gallery)
    index = _index(gallery, tmp_path / "cache", bge_siglip_vectorizer)
    try:
        progress = index.sync(show_progress=False)
        assert progress.phase == "done" and progress.files == 10
        # 8 distinct images (the copy is the same content: one point), the broken file left out and named.
        assert index.store.count() == 8 and bge_siglip_vectorizer.stats.images - before == 8
        assert progress.failed == 1 and "broken.jpg" in progress.errors[0] and "not" in progress.errors[0]
        # The stored vectors are the core's encode_images of the files; the ids are the core's content ids.
        files = sorted(p for p in gallery.rglob("photo*"))
        expected = bge_siglip_vectorizer.encode_images(files)
        for path, vector in zip(files, expected):
            stored = index.store.vector(content_id(path))
            np.testing.assert_allclose(stored, vector, atol=1e-5)
            assert index.store.record(content_id(path)).local_file == path
    finally:
        index.close()
    # Only the cache directory was written; the folder is as it was.
    assert _tree(gallery) == folder_before
    assert index.dir.is_relative_to(tmp_path / "cache" / "galleries")


def test_reruns_embed_only_new_or_changed_files_and_drop_deleted_ones(gallery, tmp_path, bge_siglip_vectorizer,
                                                                     write_image):
    cache = tmp_path / "cache"
    index = _index(gallery, cache, bge_siglip_vectorizer)
    index.sync(show_progress=False)
    index.close()

    def rerun() -> tuple[FolderIndex, int]:
        before = bge_siglip_vectorizer.stats.images
        again = _index(gallery, cache, bge_siglip_vectorizer)
        again.sync(show_progress=False)
        return again, bge_siglip_vectorizer.stats.images - before

    # Nothing changed: nothing is embedded, and no unchanged file is even read again.
    again, embedded = rerun()
    assert embedded == 0 and again.file_ids.hashed == 0 and again.progress.unchanged == 8
    assert again.progress.failed == 1  # the broken file is tried again (and refused again)
    again.close()

    # A new file, an edited file, a deleted file, and a moved file.
    write_image(gallery / "new.png", seed=99)
    edited = gallery / "photo2.png"
    old_id = content_id(edited)
    write_image(edited, seed=98)
    os.utime(edited, ns=(1, 1))  # a new mtime even on file systems with a coarse clock
    (gallery / "photo5.png").unlink()
    shutil.move(gallery / "photo6.png", gallery / "trips" / "photo6-moved.png")
    again, embedded = rerun()
    try:
        assert embedded == 2  # new.png and the edited photo2.png; the moved file keeps its id and vector
        assert again.progress.removed == 2  # photo5's point and the edited file's old one
        assert again.store.count() == 8
        assert again.store.vector(old_id) is None and again.store.vector(content_id(edited)) is not None
        moved = again.store.record(content_id(gallery / "trips" / "photo6-moved.png"))
        assert moved.local_file == gallery / "trips" / "photo6-moved.png"
    finally:
        again.close()


def test_a_duplicate_still_serves_the_image_when_the_first_copy_is_gone(gallery, tmp_path, bge_siglip_vectorizer):
    cache = tmp_path / "cache"
    first = _index(gallery, cache, bge_siglip_vectorizer)
    first.sync(show_progress=False)
    first.close()
    item_id = content_id(gallery / "photo0.png")
    (gallery / "photo0.png").unlink()
    index = _index(gallery, cache, bge_siglip_vectorizer)
    try:
        index.sync(show_progress=False)
        assert index.store.record(item_id).local_file == gallery / "trips" / "copy-of-photo0.png"
    finally:
        index.close()


def test_searches_run_while_a_folder_is_indexed(gallery, tmp_path, bge_siglip_vectorizer):
    """The indexer writes batch by batch under the store's lock; a search in between sees what is written."""
    index = _index(gallery, tmp_path / "cache", bge_siglip_vectorizer)
    query = bge_siglip_vectorizer.encode_query(text="a photo")
    seen: list[int] = []
    done = threading.Event()

    def search_until_done() -> None:
        while not done.is_set():
            seen.append(len(index.store.search(query, 0, 50)))

    searcher = threading.Thread(target=search_until_done)
    searcher.start()
    try:
        index.sync(show_progress=False)
    finally:
        done.set()
        searcher.join()
        index.close()
    assert seen and max(seen) <= 8 and all(a <= b for a, b in zip(seen, seen[1:]))


def test_a_folder_open_in_another_page_is_a_clear_error(gallery, tmp_path, bge_siglip_vectorizer):
    first = _index(gallery, tmp_path / "cache", bge_siglip_vectorizer)
    try:
        with pytest.raises(StoreError, match="open in another process"):
            _index(gallery, tmp_path / "cache", bge_siglip_vectorizer)
    finally:
        first.close()


def test_a_missing_folder_and_a_foreign_index_directory_are_refused(tmp_path, gallery, bge_siglip_vectorizer):
    with pytest.raises(StoreError, match="no such folder"):
        _index(tmp_path / "nope", tmp_path / "cache", bge_siglip_vectorizer)
    index = _index(gallery, tmp_path / "cache", bge_siglip_vectorizer)
    index.close()
    marker = index.dir / "gallery.json"
    marker.write_text('{"folder": "/somewhere/else"}', encoding="utf-8")
    with pytest.raises(StoreError, match="indexes /somewhere/else"):
        _index(gallery, tmp_path / "cache", bge_siglip_vectorizer)


def test_the_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if os.name == "posix" and os.uname().sysname == "Linux":
        assert default_cache_dir() == tmp_path / "bge-siglip" / "ui"
