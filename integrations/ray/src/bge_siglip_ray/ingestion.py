"""``bge-siglip ingest SOURCE --into TARGET``: files or rows of paths / URLs / captions into a vector store.

The same stages run in both modes, so both give the same vectors, ids and payloads, and both write as they go
(one upsert per batch; a run stopped mid-way leaves the batches written so far, and a re-run completes them):

* in-process (default): decode + patchify a batch in the core's thread pool (the next batch decodes while the
  current one is in the model), encode, write through the adapter;
* ``--ray [ADDRESS]``: :func:`~bge_siglip_ray.embed_dataset` (CPU decode tasks, model actors) into a
  :class:`~bge_siglip_ray.StoreDatasink`, on the local machine or a cluster.

Sources: a folder (searched recursively for images), a glob (``'photos/**/*.jpg'``), or a ``.jsonl`` / ``.parquet``
file whose rows hold an image path or URL (relative paths are relative to the file) and/or a text; every other
field of a row is stored with its vector. Ids are content-derived, so a re-run (after a crash, ``kill -9`` or
Ctrl-C) overwrites what was written and the store ends with one point per distinct item.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import logging
import math
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bge_siglip_vectorizer import (
    BGESigLIPError,
    Command,
    VectorizerOptions,
    add_options,
    list_image_files,
    option,
    options_from_args,
)

if TYPE_CHECKING:
    import pyarrow as pa

IMAGE_COLUMNS = ("image", "path", "url", "uri", "file")
TEXT_COLUMNS = ("text", "caption", "document")
_TABLE_SUFFIXES = (".jsonl", ".ndjson", ".parquet")
#: The columns --sparse and --multivector fill (and the stores read).
SPARSE_COLUMN, MULTIVECTOR_COLUMN = "sparse", "multivector"
#: The stores that hold each text output (see the sinks).
_HOLDS = {"sparse": ("milvus",), "multivector": ("lancedb",)}
#: On Ray the source is cut into blocks of one model batch each (so rows reach the model and the store as they are
#: decoded: one decode task's rows leave it together), in at most this many blocks.
MAX_BLOCKS = 10_000


@dataclass(frozen=True, kw_only=True)
class IngestOptions:
    """What ``bge-siglip ingest`` and :func:`ingest` take besides the model's own options."""

    source: str = option(help="a folder (searched recursively), a glob ('photos/**/*.jpg'), or a .jsonl / .parquet "
                              "file of rows with an image path/URL and/or a text")
    into: str = option(metavar="TARGET", help="the store: qdrant:PATH#collection, qdrant:http://HOST:6333#collection, "
                                             "chroma:PATH#collection, chroma:http://HOST:8000#collection, "
                                             "milvus:FILE.db#collection, milvus:http://HOST:19530#collection or "
                                             "lancedb:DIR#table")
    model: str = option(help="BGE-SigLIP model directory (or hub repo id)")
    ray: str | None = option(None, nargs="?", const="local", metavar="ADDRESS",
                             help="run on Ray: bare --ray starts one on this machine; --ray ADDRESS joins a cluster "
                                  "(e.g. auto, ray://head:10001)")
    image_column: str | None = option(None, help=f"the image column of a table source (default: the first of "
                                                 f"{', '.join(IMAGE_COLUMNS)})")
    text_column: str | None = option(None, help=f"the text column of a table source (default: the first of "
                                                f"{', '.join(TEXT_COLUMNS)}); a row with an image is embedded from "
                                                "its image and keeps its text as payload")
    batch_size: int = option(32, min=1, help="rows per model batch and per write")
    on_error: str = option("record", choices=("record", "raise"),
                           help="record: a bad item is left out and reported, the rest is written; raise: the first "
                                "bad item stops the run")
    sparse: bool = option(False, help="text rows also get BGE-M3's lexical weights, from the same forward pass; "
                                       "Milvus only: a new collection gets a sparse field (and then holds texts only)")
    multivector: bool = option(False, help="text rows also get BGE-M3's ColBERT vectors, from the same forward pass; "
                                            "LanceDB only: a 'multivector' column (LanceDB's multi-vector type)")
    concurrency: int = option(1, min=1, help="with --ray: model actors")
    num_gpus: float = option(0.0, min=0, help="with --ray: GPUs per model actor")
    progress: bool | None = option(None, help="show a progress bar (default: only on a terminal)")
    ray_logs: bool = option(False, help="with --ray: keep Ray Data's own console output (execution plans, its "
                                         "progress bars, driver logs); by default only our progress bar shows")

    def __post_init__(self) -> None:
        from bge_siglip_vectorizer import check_options

        check_options(self)


@dataclass
class IngestReport:
    """What a run did: rows read, written and refused (with the first error messages), and the store's count."""

    rows: int
    written: int
    failed: int
    errors: list[str] = field(default_factory=list)
    count: int | None = None


# ------------------------------------------------------------------------------------------------------ sources
def _source_table(source: str, image_column: str | None, text_column: str | None) -> tuple["pa.Table", str | None, str | None]:
    """The source as an Arrow table with a ``modality`` column, and its image and text column names."""
    import pyarrow as pa

    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() in _TABLE_SUFFIXES:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.json as pj

            table = pj.read_json(path)
        image_column = image_column or next((c for c in IMAGE_COLUMNS if c in table.column_names), None)
        text_column = text_column or next((c for c in TEXT_COLUMNS if c in table.column_names), None)
        for given in (image_column, text_column):
            if given is not None and given not in table.column_names:
                raise BGESigLIPError(f"{path} has no column {given!r} (columns: {', '.join(table.column_names)})")
        if image_column is None and text_column is None:
            raise BGESigLIPError(f"{path} has none of the columns {IMAGE_COLUMNS + TEXT_COLUMNS}; name them with "
                                 "--image-column / --text-column")
        if image_column is not None:
            base = path.parent
            values = [_relative_to(v, base) for v in table.column(image_column).to_pylist()]
            table = table.set_column(table.column_names.index(image_column), image_column, pa.array(values, pa.string()))
    else:
        if path.is_dir():
            files = list_image_files(path)
        elif any(ch in source for ch in "*?["):
            files = [Path(p) for p in sorted(glob.glob(os.path.expanduser(source), recursive=True)) if os.path.isfile(p)]
        else:
            raise BGESigLIPError(f"source {source!r} is neither a folder, a glob, nor a {'/'.join(_TABLE_SUFFIXES)} file")
        # Absolute: Ray workers may run in another directory. "source" as in the Qdrant adapter's payloads.
        table = pa.table({"source": pa.array([str(p.resolve()) for p in files], pa.string())})
        image_column, text_column = "source", None
    images = table.column(image_column).to_pylist() if image_column else [None] * table.num_rows
    modality = ["image" if value is not None else "text" for value in images]
    table = table.append_column("modality", pa.array(modality, pa.string())) if "modality" not in table.column_names \
        else table
    return table, image_column, text_column


def _relative_to(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or "://" in value[:16] or value.startswith("data:") or os.path.isabs(value):
        return value
    candidate = base / value
    return str(candidate.resolve()) if candidate.exists() else value


# ------------------------------------------------------------------------------------------------------ running
def run_ingest(options: IngestOptions, model_options: VectorizerOptions | None = None) -> IngestReport:
    """Run one ingest (see the module docstring); typed errors of the core stop it with their own message."""
    from .embed import Columns
    from .sinks import Target

    target = Target.parse(options.into)  # a wrong target fails before any model loads
    for output, wanted in (("sparse", options.sparse), ("multivector", options.multivector)):
        if wanted and target.scheme not in _HOLDS[output]:
            raise BGESigLIPError(f"--{output}: {target.scheme} has no place for {output} vectors here "
                                 f"(supported: {', '.join(_HOLDS[output])})")
    table, image_column, text_column = _source_table(options.source, options.image_column, options.text_column)
    if options.sparse and image_column is not None and table.column(image_column).null_count < table.num_rows:
        raise BGESigLIPError("--sparse: a Milvus collection with a sparse field holds texts only, and this source "
                             "has image rows (pymilvus writes no null vectors); ingest the images without --sparse")
    if (options.sparse or options.multivector) and text_column is None:
        raise BGESigLIPError(f"--sparse / --multivector are text outputs, and {options.source} has no text column")
    columns = Columns(image=image_column, text=text_column, source=None, id="id",
                      on_error=options.on_error,  # type: ignore[arg-type]
                      sparse=SPARSE_COLUMN if options.sparse else None,
                      multivector=MULTIVECTOR_COLUMN if options.multivector else None)
    settings = {k: v for k, v in dataclasses.asdict(model_options or VectorizerOptions()).items() if v is not None}
    show = options.progress if options.progress is not None else sys.stderr.isatty()
    if options.ray is None:
        report = _in_process(options, table, columns, settings, show)
    else:
        report = _on_ray(options, table, columns, settings, show)
    return report


def _row_columns(columns):
    from .sinks import RowColumns

    return RowColumns(image=columns.image, text=columns.text, sparse=columns.sparse, multivector=columns.multivector)


def _progress(total: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="row", desc="ingest", disable=not show, file=sys.stderr, mininterval=0.2)


def _in_process(options: IngestOptions, table: "pa.Table", columns, settings: dict[str, Any], show: bool) -> IngestReport:
    from bge_siglip_vectorizer import ImagePreparer, model_reference, resolve_model_reference, shared_vectorizer

    from .embed import Embed, PrepareImages
    from .sinks import MODEL_OPTIONS, WriteResult, open_writer, write_table

    model = resolve_model_reference(model_reference(options.model))
    # The model with the options the adapters load it with: the instance the writer's adapter gets too (one model in
    # memory); decoding and fetching options go to the preparer, which needs no weights.
    vectorizer = shared_vectorizer(model, **{k: v for k, v in settings.items() if k in MODEL_OPTIONS})
    writer = open_writer(options.into, model, settings, sparse=options.sparse)
    prepare = None
    if columns.image:
        preparer = ImagePreparer.from_pretrained(model, **settings)
        prepare = PrepareImages(preparer, columns, threads=settings.get("num_workers") or vectorizer.num_workers)
    embed = Embed.with_vectorizer(vectorizer, columns, options.batch_size)
    chunks = [table.slice(start, options.batch_size) for start in range(0, table.num_rows, options.batch_size)]
    total = WriteResult()
    try:
        with _progress(table.num_rows, show) as bar, ThreadPoolExecutor(1, thread_name_prefix="ingest-prefetch") as ahead:
            step = (lambda chunk: prepare(chunk)) if prepare else (lambda chunk: chunk)
            pending = ahead.submit(step, chunks[0]) if chunks else None
            for index in range(len(chunks)):
                prepared = pending.result()  # type: ignore[union-attr]
                # Decode the next chunk while this one is in the model.
                pending = ahead.submit(step, chunks[index + 1]) if index + 1 < len(chunks) else None
                result = write_table(writer, embed(prepared), _row_columns(columns))
                total.add(result)
                bar.update(result.written + result.failed)
                bar.set_postfix(errors=total.failed, refresh=False)
        count = writer.count()
    finally:
        writer.close()
    return IngestReport(table.num_rows, total.written, total.failed, total.errors, count)


def _typed(error: BaseException) -> BaseException:
    """A clean copy of the core's input error that Ray raised as ``RayTaskError(InvalidImageError)`` (whose message
    is a remote traceback), else ``error`` itself."""
    from bge_siglip_vectorizer import InvalidInputError

    original = getattr(error, "cause", error)  # RayTaskError keeps the exception raised in the task as .cause
    if isinstance(original, InvalidInputError):
        return type(original)(original.reason, index=original.index, source=original.source)
    return error


def _on_ray(options: IngestOptions, table: "pa.Table", columns, settings: dict[str, Any], show: bool) -> IngestReport:
    import ray

    from .embed import embed_dataset
    from .quiet import quiet_ray_data
    from .sinks import WRITE_TASK_ARGS, StoreDatasink

    if not ray.is_initialized():
        ray.init(address=None if options.ray == "local" else options.ray, include_dashboard=False,
                 **({} if options.ray_logs else {"log_to_driver": False, "logging_level": logging.WARNING}))
    # One model batch per block, so each decode task holds one batch and its rows go on to the model and the
    # store as soon as they are decoded (a task's rows leave it together: with bigger tasks a few slow items, e.g.
    # URLs, would hold back everything decoded beside them and nothing would be written meanwhile).
    batches_per_block = max(1, math.ceil(table.num_rows / (options.batch_size * MAX_BLOCKS)))
    rows_per_block = options.batch_size * batches_per_block
    blocks = [table.slice(s, rows_per_block) for s in range(0, table.num_rows, rows_per_block)] or [table]
    sink = StoreDatasink(options.into, options.model, columns=_row_columns(columns), sparse=options.sparse,
                         **settings)
    done = threading.Event()

    def poll(bar) -> None:
        while not done.wait(0.5):
            written, failed = sink.progress()
            bar.update(written + failed - bar.n)
            bar.set_postfix(errors=failed, refresh=False)

    with (contextlib.nullcontext() if options.ray_logs else quiet_ray_data()), _progress(table.num_rows, show) as bar:
        ds = embed_dataset(
            ray.data.from_arrow(blocks), options.model, image_column=columns.image, text_column=columns.text,
            source_column=None, id_column="id", sparse_column=columns.sparse, multivector_column=columns.multivector,
            on_error=columns.on_error, batch_size=options.batch_size, decode_batch_size=options.batch_size,
            concurrency=options.concurrency, num_gpus=options.num_gpus, **settings,
        )
        watcher = threading.Thread(target=poll, args=(bar,), daemon=True)
        watcher.start()
        try:
            sink.start()  # the store is opened (and its model checked) before any row is embedded
            ds.write_datasink(sink, ray_remote_args=WRITE_TASK_ARGS)
        except Exception as exc:  # noqa: BLE001 - unwrapped to the typed error of the item, if that is the cause
            typed = _typed(exc)
            if typed is exc:
                raise
            raise typed from None
        finally:
            done.set()
            watcher.join()
        bar.update(sink.result.written + sink.result.failed - bar.n)
    # The count is the writer actor's, read just before it closed the store: no second client, no second model.
    return IngestReport(table.num_rows, sink.result.written, sink.result.failed, sink.result.errors, sink.result.count)


def ingest(source: str | os.PathLike, into: str, model: str | os.PathLike, **kwargs: Any) -> IngestReport:
    """Python form of ``bge-siglip ingest``: ``kwargs`` are :class:`IngestOptions` fields (``ray="local"`` or an
    address for Ray, ``batch_size``, ``on_error``, ...) and VectorizerOptions fields (``device``, ...)."""
    names = {f.name for f in dataclasses.fields(IngestOptions)}
    mine = {k: v for k, v in kwargs.items() if k in names}
    model_options = VectorizerOptions(**{k: v for k, v in kwargs.items() if k not in names})
    return run_ingest(IngestOptions(source=os.fspath(source), into=into, model=os.fspath(model), **mine), model_options)


# ------------------------------------------------------------------------------------------------------ command
def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, IngestOptions, positional=("source",))
    add_options(parser, VectorizerOptions)


def _run(args: argparse.Namespace) -> int:
    report = run_ingest(options_from_args(IngestOptions, args), options_from_args(VectorizerOptions, args))
    for message in report.errors[:20]:
        print(f"skipped: {message}", file=sys.stderr)
    if report.failed > len(report.errors[:20]):
        print(f"... and {report.failed - len(report.errors[:20])} more", file=sys.stderr)
    print(f"{report.written} of {report.rows} rows written to {args.into}"
          f"{f', {report.failed} skipped' if report.failed else ''}; the store holds {report.count}")
    return 1 if report.failed and not report.written else 0


COMMAND = Command(
    help="embed a folder, glob, JSONL or Parquet of images/captions into Qdrant, Chroma, Milvus or LanceDB "
         "(in-process or on Ray)",
    add_arguments=_add_arguments,
    run=_run,
    description=__doc__,
)
