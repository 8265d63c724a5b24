"""2. End-to-end ingest through the adapters vs the pure model forward on the same batches.

The files are the photos scenario's (12 and 48 MP phone JPEGs, 1080p frames, 2560x1440 PNG screenshots, in turn):
what users ingest, decoded with the default reduced decoding.

* ``pure forward``: the core backend's ``run_images`` on tensors made *before* timing, in exactly the batches the
  Vectorizer forms (sorted by patch count, ``batch_size`` per forward): the cost of the model alone.
* ``Chroma``: ``collection.add(ids, uris=paths)`` on a ``PersistentClient`` collection with
  ``BGESigLIPEmbeddingFunction`` + ``ImageURILoader``: files -> decode -> preprocess -> encode -> write.
* ``Qdrant``: ``BGESigLIPQdrant.add_images(collection, paths)`` on a local-mode ``QdrantClient(path=...)``.
* ``Milvus``: ``BGESigLIPMilvus.add_images(collection, paths)`` on a milvus-lite file (``MilvusClient("x.db")``).
* ``LanceDB``: ``table.add([{"id", "source": path}])`` on a ``lancedb.connect(dir)`` table whose ``source`` column is
  embedded by the registered ``"bge-siglip"`` function (LanceDB's own path; ``add_images`` shares the core ingest
  measured through Qdrant and Milvus).

Every round writes into a fresh collection. The ratio ingest / pure forward says how much of the model's speed
reaches the database; the stored vectors are checked against the pure forward's.
"""

from __future__ import annotations

import itertools

import numpy as np

from .. import data
from ..common import ScenarioResult, cosines, interleaved, log, measured
from ..context import BenchContext

NAME, NUMBER = "ingest", 2
TITLE = "End-to-end ingest (files -> Chroma / Qdrant / Milvus / LanceDB) vs pure model forward"
TARGET = 0.90


def _photo_mix(ctx: BenchContext, n: int) -> list:
    """``n`` files of the photos scenario, taking the groups in turn (12 and 48 MP JPEGs, 1080p, PNG screenshots)."""
    groups = list(data.photo_files(ctx.images_dir, -(-n // len(data.PHOTO_GROUPS)), ctx.quick).values())
    return [path for row in itertools.zip_longest(*groups) for path in row if path is not None][:n]


def run(ctx: BenchContext) -> ScenarioResult:
    import chromadb
    import lancedb
    from bge_siglip_chroma import BGESigLIPEmbeddingFunction, ImageURILoader
    from bge_siglip_lancedb import create_table
    from bge_siglip_milvus import BGESigLIPEmbeddingFunction as MilvusFunction
    from bge_siglip_milvus import BGESigLIPMilvus
    from bge_siglip_qdrant import BGESigLIPQdrant
    from lancedb.embeddings import get_registry
    from pymilvus import MilvusClient
    from qdrant_client import QdrantClient

    from bge_siglip_vectorizer.preprocess import collate

    plan = ctx.plan
    batch = plan.ingest_batch
    vectorizer = ctx.vectorizer
    paths = [str(p) for p in _photo_mix(ctx, plan.ingest_images)]
    result = ScenarioResult(NAME, NUMBER, f"{TITLE} ({len(paths)} files, batch {batch})")

    # The pure forward's inputs: prepared and collated outside the timing, in the Vectorizer's batch order.
    prepared = vectorizer.prepare_images(paths, show_progress=False)
    order = sorted(range(len(prepared)), key=lambda i: prepared[i].num_patches, reverse=True)
    batches = [order[s : s + batch] for s in range(0, len(order), batch)]
    tensors = [collate([prepared[i] for i in rows], vectorizer.preprocessing) for rows in batches]

    def pure_forward() -> np.ndarray:
        out = np.empty((len(paths), vectorizer.dim), dtype=np.float32)
        for rows, arrays in zip(batches, tensors):
            out[rows] = vectorizer.backend.run_images(*arrays)
        return out

    chroma = chromadb.PersistentClient(path=str(ctx.workdir("chroma")))
    function = BGESigLIPEmbeddingFunction(model=str(ctx.model_dir), device=ctx.device, batch_size=batch)
    if function.vectorizer is not vectorizer:  # one model in memory, and the same weights as the pure forward
        raise RuntimeError("the Chroma adapter did not get the shared Vectorizer")
    qdrant = BGESigLIPQdrant(QdrantClient(path=str(ctx.workdir("qdrant"))), vectorizer=vectorizer, batch_size=batch)
    milvus = BGESigLIPMilvus(MilvusClient(str(ctx.workdir("milvus") / "bench.db")),
                             MilvusFunction(vectorizer=vectorizer, batch_size=batch))
    lance = lancedb.connect(str(ctx.workdir("lancedb")))
    lance_function = get_registry().get("bge-siglip").create(model=str(ctx.model_dir), device=ctx.device,
                                                             batch_size=batch)
    if lance_function.vectorizer is not vectorizer:
        raise RuntimeError("the LanceDB function did not get the shared Vectorizer")
    counter = itertools.count()
    ids = [f"img{i}" for i in range(len(paths))]

    def chroma_ingest(items: list[str] = paths):
        collection = chroma.create_collection(f"ingest{next(counter)}", embedding_function=function,
                                              data_loader=ImageURILoader())
        collection.add(ids=ids[: len(items)], uris=items)
        return collection

    def qdrant_ingest(items: list[str] = paths):
        name = f"ingest{next(counter)}"
        qdrant.create_collection(name)
        return name, qdrant.add_images(name, items, show_progress=False)

    def milvus_ingest(items: list[str] = paths):
        name = f"ingest{next(counter)}"
        milvus.create_collection(name)
        return name, milvus.add_images(name, items, show_progress=False)

    def lance_ingest(items: list[str] = paths):
        table = create_table(lance, f"ingest{next(counter)}", lance_function)
        table.add([{"id": i, "modality": "image", "source": p} for i, p in zip(ids, items)])
        return table

    # Collections are created inside the timed call (a few ms, next to seconds of forward): ingest as a user runs it.
    forward = "pure model forward (pre-made tensors)"
    contenders = {forward: pure_forward,
                  "Chroma add(uris=files) via BGESigLIPEmbeddingFunction": chroma_ingest,
                  "Qdrant add_images(files) via BGESigLIPQdrant": qdrant_ingest,
                  "Milvus add_images(files) via BGESigLIPMilvus (milvus-lite)": milvus_ingest,
                  "LanceDB table.add(source=files) via the bge-siglip registry function": lance_ingest}
    ingests = [chroma_ingest, qdrant_ingest, milvus_ingest, lance_ingest]
    warmups = {forward: lambda: vectorizer.backend.run_images(*collate([prepared[order[0]]], vectorizer.preprocessing)),
               **{name: (lambda ingest=ingest: ingest(paths[:1])) for name, ingest in zip(list(contenders)[1:], ingests)}}
    log(f"{NAME}: {len(paths)} files x {len(contenders)} paths x {plan.reps} rounds")
    runs, last = interleaved(contenders, plan.reps, plan.warmup, warmups,
                                on_round=lambda r: log(f"{NAME}: round {r + 1}/{plan.reps} done"))
    names = list(contenders)
    timings = [result.add(measured(runs[name], len(paths), "img/s")) for name in names]
    result.compare("Chroma ingest / pure forward", timings[1], timings[0], TARGET)
    result.compare("Qdrant ingest / pure forward", timings[2], timings[0], TARGET)
    result.compare("Milvus ingest / pure forward", timings[3], timings[0], TARGET)
    result.compare("LanceDB ingest / pure forward", timings[4], timings[0], TARGET)

    reference = last[names[0]]
    stored = last[names[1]].get(ids=ids, include=["embeddings"])
    chroma_vectors = np.asarray([stored["embeddings"][stored["ids"].index(i)] for i in ids])
    name, ingest = last[names[2]]
    points = {str(p.id): p.vector for p in qdrant.client.retrieve(name, ids=ingest.ids, with_vectors=True)}
    qdrant_vectors = np.asarray([points[str(i)] for i in ingest.ids])
    name, ingest = last[names[3]]
    rows = {row["id"]: row["vector"] for row in milvus.client.query(name, ids=ingest.ids, output_fields=["vector"])}
    milvus_vectors = np.asarray([rows[i] for i in ingest.ids])
    lance_rows = {row["id"]: row["vector"] for row in last[names[4]].to_arrow().to_pylist()}
    lance_vectors = np.asarray([lance_rows[i] for i in ids])
    result.checks["stored vectors vs pure forward"] = {
        "chroma_min_cosine": min(cosines(chroma_vectors, reference)),
        "qdrant_min_cosine": min(cosines(qdrant_vectors, reference)),
        "milvus_min_cosine": min(cosines(milvus_vectors, reference)),
        "lancedb_min_cosine": min(cosines(lance_vectors, reference)),
    }
    result.details.update({
        "files": [p.rsplit("/", 1)[-1] for p in paths],
        "patches_per_image": [int(p.num_patches) for p in prepared],
        "forward_batches": [len(rows) for rows in batches],
    })
    result.notes.append(
        "All paths run the same forward passes; ingest adds file decoding, preprocessing, the adapters and the "
        "database writes. The ratio is bounded above by 1.0: the forward itself (seconds per image on 2 cores) is "
        "the floor of all."
    )
    return result
