"""Qdrant quickstart: ingest a folder of images, then search it by text (two languages) and by an image.

    pip install ./ ./integrations/qdrant        # from a checkout of the repository (not on PyPI yet)
    python examples/qdrant_quickstart.py --model path/or/hub-id --images photos/ --db ./qdrant_db

Queries are the stock qdrant-client types, ``models.Document`` / ``models.Image`` naming our model; the wrapper embeds
them with BGE-SigLIP. Running it again re-uses the stored points (ids come from file contents, so nothing doubles).
Use ``--url http://localhost:6333`` for a Qdrant server instead of local mode.
"""

from __future__ import annotations

import argparse

from qdrant_client import models

from bge_siglip_qdrant import BGESigLIPQdrant
from bge_siglip_vectorizer import list_image_files

MODEL = "bge-siglip"  # the model name our wrapper answers to in Document.model / Image.model


def show(title: str, response: models.QueryResponse) -> None:
    print(f"\n{title}")
    for hit in response.points:
        print(f"  {hit.score:+.3f}  {hit.payload.get('source')}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="BGE-SigLIP model directory or hub id")
    parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--db", default="./qdrant_db", help="storage folder for Qdrant local mode")
    parser.add_argument("--url", help="Qdrant server URL (instead of --db)")
    parser.add_argument("--collection", default="photos")
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument(
        "--text", nargs="+", default=["a dog playing on the beach", "ein Hund spielt am Strand"],
        help="text queries (any language)",
    )
    args = parser.parse_args(argv)

    # A QdrantClient itself: url= for a server, path= for local mode (or wrap a client you already have).
    where = {"url": args.url} if args.url else {"path": args.db}
    db = BGESigLIPQdrant(model=args.model, model_name=MODEL, **where)
    try:
        if not db.collection_exists(args.collection):  # qdrant-client's own method
            db.create_collection(args.collection)  # size = model dim, cosine distance; records the model

        # Batches with a progress bar (on a terminal); the payload records the source path and the modality; ids come
        # from file contents. on_error="skip": a broken file is reported and left out instead of stopping the run.
        files = list_image_files(args.images)
        result = db.add_images(args.collection, files, on_error="skip")
        print(f"added {result.written} images; the collection holds {db.count(args.collection).count} points")
        for error in result.skipped:
            print(f"  skipped {error}")

        for text in args.text:
            show(f"text: {text!r}", db.query_points(
                args.collection, query=models.Document(text=text, model=MODEL), limit=args.limit
            ))

        added = [path for path, point_id in zip(files, result.ids) if point_id is not None]
        if added:
            show(f"image: {added[0]}", db.query_points(
                args.collection, query=models.Image(image=str(added[0]), model=MODEL), limit=args.limit
            ))
    finally:
        db.close()


if __name__ == "__main__":
    main()
