"""``embed_dataset``: BGE-SigLIP vectors for a Ray Dataset, in two stages.

1. **Decode** (image rows only): plain Ray tasks (``map_batches`` with a function), as many as the cluster has
   CPUs. Each row's image (bytes, a path or a URL) goes through the core's :class:`ImagePreparer` (decode, validate,
   NaFlex resize, ``uint8`` patches) and leaves as a small binary column of patches; the image bytes stay behind.
2. **Model**: an actor pool (``map_batches`` with a callable class, ``compute=ActorPoolStrategy``), one model load
   per actor, ``num_gpus`` each. Image rows go through ``Vectorizer.encode_prepared``, text rows through
   ``Vectorizer.encode_texts``: the same calls as in one process, so the vectors equal ``encode_images`` /
   ``encode_texts`` of the same inputs. With ``sparse_column`` / ``multivector_column``, text rows go through
   ``Vectorizer.encode_texts_all`` instead: BGE-M3's lexical weights and ColBERT vectors from the same forward pass
   as the dense vector.

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
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from bge_siglip_vectorizer import (
    ImagePreparer,
    InvalidImageError,
    InvalidInputError,
    MissingHeadError,
    PatchedImage,
    SparseEmbedding,
    Vectorizer,
    VectorizerOptions,
    content_id,
    model_reference,
    resolve_model_reference,
    validate_text,
)

if TYPE_CHECKING:
    import ray.data

OnError = Literal["record", "raise"]

# Columns that exist only between the two stages.
_PATCHES = "__bge_siglip_patches"
_GRID_H = "__bge_siglip_grid_h"
_GRID_W = "__bge_siglip_grid_w"

#: The Arrow type of a ``sparse_column``: one text's BGE-M3 lexical weights (token ids ascending, weights > 0), the
#: fields of :class:`~bge_siglip_vectorizer.SparseEmbedding`.
SPARSE_TYPE = pa.struct([("indices", pa.list_(pa.int64())), ("values", pa.list_(pa.float32()))])


def multivector_type(dim: int) -> pa.DataType:
    """The Arrow type of a ``multivector_column``: one text's ColBERT vectors, ``tokens - 1`` rows of ``dim``
    (LanceDB's multi-vector column type)."""
    return pa.list_(pa.list_(pa.float32(), dim))


def sparse_from_arrow(value: dict[str, Any]) -> SparseEmbedding:
    """A ``sparse_column`` value (``{"indices": [...], "values": [...]}``, as ``to_pylist`` gives it) as the core's
    :class:`~bge_siglip_vectorizer.SparseEmbedding`."""
    return SparseEmbedding(np.asarray(value["indices"], dtype=np.int64), np.asarray(value["values"], dtype=np.float32))


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
    sparse: str | None = None
    multivector: str | None = None

    def __post_init__(self) -> None:
        if self.image is None and self.text is None:
            raise ValueError("give image_column and/or text_column")
        if self.on_error not in ("record", "raise"):
            raise ValueError(f"on_error must be 'record' or 'raise', got {self.on_error!r}")
        if (self.sparse is not None or self.multivector is not None) and self.text is None:
            raise ValueError("sparse and multi-vector outputs are BGE-M3 text outputs: give text_column too")
        names = [n for n in (self.output, self.error, self.id, self.sparse, self.multivector) if n is not None]
        if len(set(names)) < len(names) or set(names) & {self.image, self.text}:
            raise ValueError(f"output, error, id, sparse and multi-vector columns must be new, distinct names "
                             f"(got {names})")


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

    ``model`` (a :func:`~bge_siglip_vectorizer.model_reference`, resolved on the worker's machine) and ``options``
    are what ``Vectorizer.from_pretrained`` takes; the model is loaded once, in the constructor, so a model without
    the heads that ``sparse`` / ``multivector`` columns need fails the job when the actor starts, not mid-way.
    :meth:`with_vectorizer` wraps an already loaded one (the in-process ingest).
    """

    def __init__(self, model: str, options: dict[str, Any], columns: Columns, batch_size: int) -> None:
        self._setup(Vectorizer.from_pretrained(resolve_model_reference(model), **options), columns, batch_size)

    @classmethod
    def with_vectorizer(cls, vectorizer: Vectorizer, columns: Columns, batch_size: int) -> "Embed":
        self = cls.__new__(cls)
        self._setup(vectorizer, columns, batch_size)
        return self

    def _setup(self, vectorizer: Vectorizer, columns: Columns, batch_size: int) -> None:
        self.vectorizer, self.columns, self.batch_size = vectorizer, columns, batch_size
        for output, column in (("sparse", columns.sparse), ("multivector", columns.multivector)):
            if column is not None and output not in vectorizer.text_outputs:
                raise MissingHeadError(f"column {column!r} needs BGE-M3's {output} head, which the model "
                                       f"{vectorizer.components.source} does not have (or its backend does not run)")

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
        lexical: list[dict[str, Any] | None] = [None] * n
        colbert: list[np.ndarray | None] = [None] * n
        if text_rows:
            batch = [texts[i] for i in text_rows]
            if columns.sparse is None and columns.multivector is None:
                vectors[text_rows] = self.vectorizer.encode_texts(batch, batch_size=self.batch_size,
                                                                  show_progress=False)
            else:  # one forward pass for the dense vector and the heads
                outputs = self.vectorizer.encode_texts_all(batch, batch_size=self.batch_size, show_progress=False,
                                                           sparse=columns.sparse is not None,
                                                           multivector=columns.multivector is not None)
                vectors[text_rows] = outputs.dense
                for row, weights in zip(text_rows, outputs.sparse or ()):
                    lexical[row] = {"indices": weights.indices, "values": weights.values}
                for row, matrix in zip(text_rows, outputs.multivector or ()):
                    colbert[row] = matrix
            has_vector[text_rows] = True

        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        embedding = pa.FixedSizeListArray.from_arrays(flat, self.vectorizer.dim, mask=pa.array(~has_vector))
        table = table.drop_columns([c for c in (_PATCHES, _GRID_H, _GRID_W) if c in names])
        table = _set(table, columns.output, embedding)
        if columns.sparse is not None:
            table = _set(table, columns.sparse, pa.array(lexical, type=SPARSE_TYPE))
        if columns.multivector is not None:
            table = _set(table, columns.multivector, _multivector_array(colbert, self.vectorizer.multivector_dim))
        if columns.id is not None:
            table = _set(table, columns.id, pa.array(ids, type=pa.string()))
        return _set(table, columns.error, pa.array(errors, type=pa.string()))


def _multivector_array(matrices: list[np.ndarray | None], dim: int) -> pa.Array:
    """Rows of ``(tokens, dim)`` float32 matrices (or None) as ``list<fixed_size_list<float32>[dim]>``, without a
    Python object per float."""
    lengths = np.array([0 if m is None else len(m) for m in matrices], dtype=np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    parts = [m.reshape(-1) for m in matrices if m is not None]
    flat = np.concatenate(parts).astype(np.float32) if parts else np.empty(0, dtype=np.float32)
    values = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), dim)
    return pa.ListArray.from_arrays(offsets, values, type=multivector_type(dim),
                                    mask=pa.array([m is None for m in matrices]))


#: Given to the decode stage's ``map_batches`` (``max_calls=0`` is Ray's default for CPU tasks: no limit), so its
#: remote arguments differ from the model stage's: Ray Data fuses a task stage into a following actor stage with the
#: same arguments, and the decoding would then run inside the model actors, one batch at a time, instead of on
#: every CPU of the cluster.
_UNFUSED = {"max_calls": 0}


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
    sparse_column: str | None = None,
    multivector_column: str | None = None,
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
        model: a BGE-SigLIP model directory (reachable from every worker; one under ``$BGE_SIGLIP_MODEL_DIR``
            travels as ``$BGE_SIGLIP_MODEL_DIR/<name>`` and is found under that variable on each worker, see
            :func:`~bge_siglip_vectorizer.model_reference`) or hub id.
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
        sparse_column: also write each text row's BGE-M3 lexical weights here (:data:`SPARSE_TYPE`:
            ``{indices: list<int64>, values: list<float32>}``, as ``Vectorizer.encode_texts_sparse``); null on image
            and error rows. Needs ``text_column`` and the model's sparse head. The Milvus sink writes it to a
            collection's sparse field.
        multivector_column: also write each text row's ColBERT vectors here (``list<fixed_size_list<float32>[d]>``,
            :func:`multivector_type`, as ``Vectorizer.encode_texts_multivector``; LanceDB's multi-vector column
            type). Both come from the same forward pass as the dense vector (``Vectorizer.encode_texts_all``).
        keep_image_bytes: keep a binary image column (by default it is dropped after decoding: the model stage and
            whatever follows get the small patches and the vector, not the photo). Path and URL columns always stay.
        batch_size: rows per model batch (and per forward pass). concurrency: model actors, ``n`` or ``(min, max)``
            for an autoscaling pool. num_gpus / num_cpus: per model actor.
        decode_batch_size / decode_num_cpus: rows per decode task, CPUs reserved by each decode task. A decode
            task's rows leave it together, when the last of them is decoded: keep it small (a few model batches at
            most) where rows should reach the model and a sink as they go, e.g. when some items are slow URLs.
        actor_options: further ``map_batches`` arguments for the model stage (``runtime_env``, ``memory``,
            ``accelerator_type``, ...).
        **options: :class:`~bge_siglip_vectorizer.VectorizerOptions` (``device``, ``dtype``, ``backend``,
            ``max_num_patches``, ``max_image_pixels``, ``allow_urls``, ``url_timeout_s``, ...), checked here, on the
            driver, before anything runs.

    Every other column passes through unchanged.
    """
    columns = Columns(image_column, text_column, output_column, error_column, source_column, id_column,
                      keep_image_bytes, on_error, sparse_column, multivector_column)
    settings = VectorizerOptions(**options)  # a wrong name or value fails here, not in a thousand workers
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    # Workers may run in another directory, or on another machine, than the driver: the reference travels.
    reference = model_reference(model)
    if image_column is not None:
        preparer = ImagePreparer.from_pretrained(resolve_model_reference(reference), **dataclasses.asdict(settings))
        ds = ds.map_batches(PrepareImages(preparer, columns), batch_format="pyarrow", batch_size=decode_batch_size,
                            num_cpus=decode_num_cpus, **_UNFUSED)
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
