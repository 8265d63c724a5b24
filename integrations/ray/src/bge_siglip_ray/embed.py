"""``embed_dataset``: BGE-SigLIP vectors for a Ray Dataset, in two stages.

1. **Decode** (image rows only): plain Ray tasks (``map_batches`` with a function), as many as the cluster has
   CPUs. Each row's image (bytes, a path or a URL) goes through the core's :class:`ImagePreparer` (decode, validate,
   NaFlex resize, ``uint8`` patches) and leaves as a small binary column of patches; the image bytes stay behind.
2. **Model**: an actor pool (``map_batches`` with a callable class, ``compute=ActorPoolStrategy``), one model load
   per actor, ``num_gpus`` each. Image rows go through ``Vectorizer.encode_prepared``, text rows through
   ``Vectorizer.encode_texts``: the same calls as in one process, so the vectors equal ``encode_images`` /
   ``encode_texts`` of the same inputs.

A bad item never fails the job (unless ``on_error="raise"``): its row keeps every column, gets a null vector and,
in the ``error`` column, the typed error's name and message with the item's source (its path or URL, or the value of
``source_column``). The model stage encodes a batch whole or fails it whole: no row gets a vector from a half-run
batch.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from bge_siglip_vectorizer import (
    ImagePreparer,
    InvalidImageError,
    InvalidInputError,
    PatchedImage,
    Vectorizer,
    VectorizerOptions,
    content_id,
    validate_text,
)

if TYPE_CHECKING:
    import ray.data

OnError = Literal["record", "raise"]

# Columns that exist only between the two stages.
_PATCHES = "__bge_siglip_patches"
_GRID_H = "__bge_siglip_grid_h"
_GRID_W = "__bge_siglip_grid_w"


@dataclass(frozen=True)
class Columns:
    """Which columns the stages read and write (one picklable value shipped to every task and actor)."""

    image: str | None = None
    text: str | None = None
    output: str = "embedding"
    error: str = "error"
    source: str | None = "path"
    id: str | None = None
    keep_image_bytes: bool = False
    on_error: OnError = "record"

    def __post_init__(self) -> None:
        if self.image is None and self.text is None:
            raise ValueError("give image_column and/or text_column")
        if self.on_error not in ("record", "raise"):
            raise ValueError(f"on_error must be 'record' or 'raise', got {self.on_error!r}")
        names = [n for n in (self.output, self.error, self.id) if n is not None]
        if len(set(names)) < len(names) or set(names) & {self.image, self.text}:
            raise ValueError(f"output, error and id columns must be new, distinct names (got {names})")


def _source(table: pa.Table, columns: Columns, row: int, value: Any) -> str | None:
    if columns.source is not None and columns.source in table.column_names:
        found = table.column(columns.source)[row].as_py()
        if found is not None:
            return str(found)
    return value if isinstance(value, str) and len(value) < 4096 else None  # a path or URL, not a base64 payload


def _addressed(error: InvalidInputError, source: str | None) -> InvalidInputError:
    """The error named by the row's source instead of a position (positions mean nothing in a sharded dataset)."""
    return type(error)(error.reason, index=None, source=source if source is not None else error.source)


def describe(error: InvalidInputError) -> str:
    """What the ``error`` column holds: the typed error's class name, then its message (which names the source)."""
    return f"{type(error).__name__}: {error}"


def _set(table: pa.Table, name: str, values: pa.Array | list) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


class PrepareImages:
    """Stage 1, a Ray task per batch (``batch_format="pyarrow"``): image -> patches, or the row's error.

    ``threads`` > 1 decodes a batch's rows in a thread pool (PIL releases the GIL); the in-process ingest uses that,
    while on Ray each task is one CPU and parallelism comes from the number of tasks.
    """

    def __init__(self, preparer: ImagePreparer, columns: Columns, threads: int = 1) -> None:
        self.preparer = preparer
        self.columns = columns
        self.threads = threads

    def _one(self, value: Any) -> PatchedImage | InvalidInputError | None:
        if value is None:
            return None
        try:
            return self.preparer.prepare(value)
        except InvalidInputError as exc:
            return exc

    def __call__(self, table: pa.Table) -> pa.Table:
        columns = self.columns
        values = table.column(columns.image).to_pylist()
        if self.threads > 1 and len(values) > 1:
            with ThreadPoolExecutor(min(self.threads, len(values))) as pool:
                results = list(pool.map(self._one, values))
        else:
            results = [self._one(value) for value in values]
        has_text = columns.text is not None and columns.text in table.column_names
        texts = table.column(columns.text).to_pylist() if has_text else [None] * len(values)
        patches: list[bytes | None] = []
        grid_h: list[int | None] = []
        grid_w: list[int | None] = []
        errors: list[str | None] = []
        ids: list[str | None] = []
        for row, (value, result) in enumerate(zip(values, results)):
            if result is None and texts[row] is None:
                # No image and no text to fall back on: the row is an error, like any other bad item.
                result = InvalidImageError(f"no image in column {columns.image!r}")
            if isinstance(result, InvalidInputError):
                error = _addressed(result, _source(table, columns, row, value))
                if columns.on_error == "raise":
                    raise error
                patches.append(None), grid_h.append(None), grid_w.append(None), ids.append(None)
                errors.append(describe(error))
                continue
            errors.append(None)
            if result is None:  # a text row: the model stage embeds (and names) it
                patches.append(None), grid_h.append(None), grid_w.append(None), ids.append(None)
                continue
            patches.append(result.to_bytes())
            grid_h.append(result.grid[0])
            grid_w.append(result.grid[1])
            # The id is derived here, where the raw bytes are at hand (they do not travel to the model stage).
            ids.append(content_id(value, "image") if columns.id is not None else None)
        image_type = table.schema.field(columns.image).type
        if not columns.keep_image_bytes and (pa.types.is_binary(image_type) or pa.types.is_large_binary(image_type)):
            table = table.drop_columns([columns.image])
        table = _set(table, _PATCHES, pa.array(patches, type=pa.binary()))
        table = _set(table, _GRID_H, pa.array(grid_h, type=pa.int32()))
        table = _set(table, _GRID_W, pa.array(grid_w, type=pa.int32()))
        if columns.id is not None:
            table = _set(table, columns.id, pa.array(ids, type=pa.string()))
        return _set(table, columns.error, pa.array(errors, type=pa.string()))


class Embed:
    """Stage 2, the model: one instance per Ray actor (``map_batches(Embed, compute=ActorPoolStrategy(...))``).

    ``model`` and ``options`` are what ``Vectorizer.from_pretrained`` takes; the model is loaded once, in the
    constructor. :meth:`with_vectorizer` wraps an already loaded one (the in-process ingest).
    """

    def __init__(self, model: str, options: dict[str, Any], columns: Columns, batch_size: int) -> None:
        self.vectorizer = Vectorizer.from_pretrained(model, **options)
        self.columns = columns
        self.batch_size = batch_size

    @classmethod
    def with_vectorizer(cls, vectorizer: Vectorizer, columns: Columns, batch_size: int) -> "Embed":
        self = cls.__new__(cls)
        self.vectorizer, self.columns, self.batch_size = vectorizer, columns, batch_size
        return self

    def __call__(self, table: pa.Table) -> pa.Table:
        columns = self.columns
        n = table.num_rows
        names = table.column_names
        errors = table.column(columns.error).to_pylist() if columns.error in names else [None] * n
        ids = table.column(columns.id).to_pylist() if columns.id in names else [None] * n
        patches = table.column(_PATCHES).to_pylist() if _PATCHES in names else [None] * n
        texts = table.column(columns.text).to_pylist() if columns.text in names else [None] * n
        vectors = np.zeros((n, self.vectorizer.dim), dtype=np.float32)
        has_vector = np.zeros(n, dtype=bool)

        image_rows = [i for i in range(n) if patches[i] is not None]
        if image_rows:
            grid_h = table.column(_GRID_H).to_pylist()
            grid_w = table.column(_GRID_W).to_pylist()
            prepared = [PatchedImage.from_bytes(patches[i], (grid_h[i], grid_w[i])) for i in image_rows]
            vectors[image_rows] = self.vectorizer.encode_prepared(prepared, batch_size=self.batch_size)
            has_vector[image_rows] = True

        text_rows = []
        for i in range(n):
            if patches[i] is not None or errors[i] is not None:
                continue
            try:
                validate_text(texts[i])
            except InvalidInputError as exc:
                error = _addressed(exc, _source(table, columns, i, None))
                if columns.on_error == "raise":
                    raise error from None
                errors[i] = describe(error)
                continue
            text_rows.append(i)
            if columns.id is not None:
                ids[i] = content_id(texts[i], "text")
        if text_rows:
            vectors[text_rows] = self.vectorizer.encode_texts(
                [texts[i] for i in text_rows], batch_size=self.batch_size, show_progress=False
            )
            has_vector[text_rows] = True

        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        embedding = pa.FixedSizeListArray.from_arrays(flat, self.vectorizer.dim, mask=pa.array(~has_vector))
        table = table.drop_columns([c for c in (_PATCHES, _GRID_H, _GRID_W) if c in names])
        table = _set(table, columns.output, embedding)
        if columns.id is not None:
            table = _set(table, columns.id, pa.array(ids, type=pa.string()))
        return _set(table, columns.error, pa.array(errors, type=pa.string()))


def _model_reference(model: str | os.PathLike) -> str:
    # Workers may run in another directory than the driver: a local model directory travels as an absolute path.
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else os.fspath(model)


def _actor_pool(concurrency: int | tuple[int, int]):
    from ray.data import ActorPoolStrategy

    if isinstance(concurrency, tuple):
        low, high = concurrency
        return ActorPoolStrategy(min_size=low, max_size=high)
    return ActorPoolStrategy(size=concurrency)


def embed_dataset(
    ds: "ray.data.Dataset",
    model: str | os.PathLike,
    *,
    image_column: str | None = None,
    text_column: str | None = None,
    output_column: str = "embedding",
    error_column: str = "error",
    on_error: OnError = "record",
    source_column: str | None = "path",
    id_column: str | None = None,
    keep_image_bytes: bool = False,
    batch_size: int = 32,
    concurrency: int | tuple[int, int] = 1,
    num_gpus: float = 0,
    num_cpus: float | None = None,
    decode_batch_size: int = 16,
    decode_num_cpus: float = 1,
    actor_options: dict[str, Any] | None = None,
    **options: Any,
) -> "ray.data.Dataset":
    """Add a column of BGE-SigLIP vectors to ``ds`` (lazily: Ray runs it when the result is consumed or written).

    Args:
        ds: any Ray Dataset, e.g. ``ray.data.read_binary_files(folder, include_paths=True)`` (columns ``bytes``,
            ``path``), or rows of paths / URLs / captions from ``read_parquet`` / ``read_json`` / ``from_items``.
        model: a BGE-SigLIP model directory (reachable from every worker) or hub id.
        image_column: the column of images: bytes, file paths, ``http(s)``/``file``/``data:`` URIs (anything
            ``Vectorizer.encode_images`` takes that Arrow can hold).
        text_column: the column of texts. With both columns, a row is embedded from its image when it has one and
            from its text otherwise (chain two calls with different ``output_column`` for both vectors per row).
        output_column: ``fixed_size_list<float32>[dim]``; null on a row whose item was bad.
        error_column: null, or ``"<ErrorType>: <message naming the source>"`` for a bad item (``on_error="record"``,
            the default). ``on_error="raise"``: the first bad item fails the job with its typed error (as Ray raises
            task errors: an instance of both ``RayTaskError`` and, e.g., ``InvalidImageError``).
        source_column: a column naming each row's item in error messages (default ``path``, if the dataset has it).
        id_column: also write each row's content-derived id (:func:`bge_siglip_vectorizer.content_id` of the image's
            bytes / file, or of the text) here: the ids the sinks use, so re-runs overwrite instead of duplicating.
        keep_image_bytes: keep a binary image column (by default it is dropped after decoding: the model stage and
            whatever follows get the small patches and the vector, not the photo). Path and URL columns always stay.
        batch_size: rows per model batch (and per forward pass). concurrency: model actors, ``n`` or ``(min, max)``
            for an autoscaling pool. num_gpus / num_cpus: per model actor.
        decode_batch_size / decode_num_cpus: rows per decode task, CPUs reserved by each decode task.
        actor_options: further ``map_batches`` arguments for the model stage (``runtime_env``, ``memory``,
            ``accelerator_type``, ...).
        **options: :class:`~bge_siglip_vectorizer.VectorizerOptions` (``device``, ``dtype``, ``backend``,
            ``max_num_patches``, ``max_image_pixels``, ``allow_urls``, ``url_timeout_s``, ...), checked here, on the
            driver, before anything runs.

    Every other column passes through unchanged.
    """
    columns = Columns(image_column, text_column, output_column, error_column, source_column, id_column,
                      keep_image_bytes, on_error)
    settings = VectorizerOptions(**options)  # a wrong name or value fails here, not in a thousand workers
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    reference = _model_reference(model)
    if image_column is not None:
        preparer = ImagePreparer.from_pretrained(reference, **dataclasses.asdict(settings))
        # max_retries (Ray's default for tasks, given explicitly) makes the remote args differ from the model
        # stage's: Ray Data fuses a task stage into a following actor stage with equal args, and the decoding would
        # then run inside the model actors, one batch at a time, instead of on every CPU of the cluster.
        ds = ds.map_batches(PrepareImages(preparer, columns), batch_format="pyarrow", batch_size=decode_batch_size,
                            num_cpus=decode_num_cpus, max_retries=3)
    ds = ds.map_batches(
        Embed,
        fn_constructor_args=(reference, dataclasses.asdict(settings), columns, batch_size),
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=_actor_pool(concurrency),
        num_gpus=num_gpus,
        num_cpus=num_cpus,
        **(actor_options or {}),
    )
    if on_error == "raise":
        # Ray Data would wrap the item's error in a UserCodeException that drops it on the way to the driver.
        ds.context.raise_original_map_exception = True
    return ds
