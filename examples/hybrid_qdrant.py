"""Hybrid search in Qdrant: BGE-M3's dense, sparse and multi-vector text outputs, with images in the same collection.

    pip install ./ ./integrations/qdrant        # from a checkout of the repository (not on PyPI yet)
    python examples/hybrid_qdrant.py --model path/or/hub-id --db ./qdrant_hybrid [--images photos/] [--rerank]

A small product catalogue (descriptions with model numbers) is added with ``add_texts``, which fills the dense,
sparse and multi-vector of each text from one forward pass; images (optional) get the dense vector. Each query is
then run three ways, so you can see what each granularity contributes: dense only, sparse only (exact tokens such
as a model number), and hybrid (dense + sparse prefetch fused with RRF, optionally re-ranked by the multi-vector).
"""

from __future__ import annotations

import argparse

from qdrant_client import models

from bge_siglip_qdrant import MULTIVECTOR_MODEL_NAME, SPARSE_MODEL_NAME, BGESigLIPQdrant

MODEL = "bge-siglip"  # Document.model for dense vectors; + "-sparse" / "-multivector" for the other two
CATALOGUE = [
    "Trail running shoe, waterproof, model 7381",
    "Hiking boot with a stiff sole, model 4420",
    "Lightweight road running shoe, model 1596",
    "Wasserdichte Wanderjacke, Modell 2208",
    "Chaussure de course sur sentier, modèle 9034",
    "Insulated winter boot for snow, model 6617",
]


def show(label: str, response: models.QueryResponse) -> None:
    hits = [f"{hit.payload.get('text') or hit.payload.get('source')} ({hit.score:+.3f})" for hit in response.points]
    print(f"  {label:<13} " + (" | ".join(hits) if hits else "(nothing shares a token)"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="BGE-SigLIP model directory or hub id (with BGE-M3's heads)")
    parser.add_argument("--db", default="./qdrant_hybrid", help="storage folder for Qdrant local mode")
    parser.add_argument("--url", help="Qdrant server URL (instead of --db)")
    parser.add_argument("--images", help="a folder of images to add (dense vectors) beside the texts")
    parser.add_argument("--collection", default="shop")
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--rerank", action="store_true", help="re-rank the fused candidates by the multi-vector")
    parser.add_argument("--query", nargs="+", default=["7381", "a waterproof shoe for trails",
                                                       "ein wasserdichter Wanderschuh"])
    args = parser.parse_args(argv)

    where = {"url": args.url} if args.url else {"path": args.db}
    db = BGESigLIPQdrant(model=args.model, model_name=MODEL, **where)
    try:
        if not db.collection_exists(args.collection):
            # Named vectors "dense" (texts and images), "sparse" (texts) and "multivector" (texts, for re-ranking).
            db.create_collection(args.collection, hybrid=True, multivector=True)
        db.add_texts(args.collection, CATALOGUE)  # content-derived ids: running it again adds nothing
        if args.images:
            db.add_images(args.collection, args.images, on_error="skip")  # dense only
        print(f"the collection holds {db.count(args.collection).count} points")

        for text in args.query:
            print(f"\nquery: {text!r}")
            show("dense", db.query_points(args.collection, query=models.Document(text=text, model=MODEL),
                                          using="dense", limit=args.limit))
            show("sparse", db.query_points(args.collection, query=models.Document(text=text, model=SPARSE_MODEL_NAME),
                                           using="sparse", limit=args.limit))
            show("hybrid (rrf)", db.query_hybrid(args.collection, text, limit=args.limit, rerank=args.rerank))
        if args.rerank:
            print(f"\n(re-ranked by {MULTIVECTOR_MODEL_NAME!r}: images have no multi-vector and drop out)")
    finally:
        db.close()


if __name__ == "__main__":
    main()
