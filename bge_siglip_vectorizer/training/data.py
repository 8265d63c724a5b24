"""Training/evaluation data: (image, caption[, label]) rows from JSON lines, CSV/TSV, or a folder with sidecars.

Every problem is a :class:`~bge_siglip_vectorizer.errors.DataError` naming the file and row (1-based, header = row 1
for CSV), so a bad row in a million-line file is one edit away.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..inputs import list_image_files, read_utf8

IMAGE_KEYS = ("image", "image_path", "path", "file", "url", "image_url")
CAPTION_KEYS = ("caption", "text", "title", "alt")


@dataclass(frozen=True)
class Example:
    image: str  # a resolved path or an http(s) URL
    caption: str
    label: str | None = None  # examples with the same label match each other (e.g. synthetic classes)
    origin: str = ""  # "file:row", for messages

    @property
    def key(self) -> str:
        """What makes two examples a positive pair: the label if given, else the caption."""
        return self.label if self.label is not None else self.caption


def read_examples(source: str | os.PathLike, check_files: bool = True) -> list[Example]:
    """Read a ``.jsonl``/``.json`` (one object per line), ``.csv``/``.tsv`` file, or a folder of images whose captions
    are in sidecar ``.txt`` files with the same stem."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        examples = _read_folder(path)
    elif path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        examples = _read_jsonl(path)
    elif path.suffix.lower() in (".csv", ".tsv"):
        examples = _read_csv(path)
    else:
        raise DataError(f"{path}: unsupported data file type {path.suffix!r} (use .jsonl, .csv, .tsv or a folder)")
    if not examples:
        raise DataError(f"{path}: no examples")
    if check_files:
        for example in examples:
            if not example.image.startswith(("http://", "https://")) and not Path(example.image).is_file():
                raise DataError(f"{example.origin}: image not found: {example.image}")
    return examples


def split_examples(examples: list[Example], val_fraction: float, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """A seeded random split; ``val_fraction`` 0 gives no validation set."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = int(round(len(examples) * val_fraction))
    return [examples[i] for i in order[n_val:]], [examples[i] for i in order[:n_val]]


def _resolve(image: str, base: Path) -> str:
    if image.startswith(("http://", "https://")):
        return image
    path = Path(image).expanduser()
    return str(path if path.is_absolute() else base / path)


def _pick(row: dict, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _example(row: dict, base: Path, origin: str) -> Example:
    image = _pick(row, IMAGE_KEYS)
    text = _pick(row, CAPTION_KEYS)
    if image is None:
        raise DataError(f"{origin}: no image column (one of {', '.join(IMAGE_KEYS)})")
    if text is None:
        raise DataError(f"{origin}: missing or empty caption (one of {', '.join(CAPTION_KEYS)})")
    label = row.get("label")
    return Example(_resolve(image, base), text, str(label) if label not in (None, "") else None, origin)


def _read_jsonl(path: Path) -> list[Example]:
    examples = []
    with io.StringIO(read_utf8(path, DataError)) as handle:  # a byte that is not UTF-8: DataError naming the line
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            origin = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{origin}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{origin}: expected a JSON object, got {type(row).__name__}")
            examples.append(_example(row, path.parent, origin))
    return examples


def _read_csv(path: Path) -> list[Example]:
    with io.StringIO(read_utf8(path, DataError), newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        if not reader.fieldnames:
            raise DataError(f"{path}:1: missing header row")
        return [_example(row, path.parent, f"{path}:{number}") for number, row in enumerate(reader, start=2)]


def _read_folder(path: Path) -> list[Example]:
    examples = []
    for image in list_image_files(path):
        sidecar = image.with_suffix(".txt")
        if not sidecar.is_file():
            raise DataError(f"{image}: no caption file {sidecar.name} beside it")
        text = read_utf8(sidecar, DataError).strip()
        if not text:
            raise DataError(f"{sidecar}: empty caption")
        examples.append(Example(str(image), text, None, str(sidecar)))
    return examples
