"""Milvus quickstart: ingest a folder of images into milvus-lite, then search it by text (two languages) and by an image.

    pip install "bge-siglip-milvus[lite]"
    python examples/milvus_quickstart.py --model path/or/hub-id --images photos/ --db ./photos.db

Running it again re-uses the stored rows (ids come from file contents, so nothing doubles). ``--uri
http://localhost:19530`` talks to a Milvus server instead of a local file, with the same code.
"""

from __future__ import annotations

import argparse

from pymilvus import MilvusClient

from bge_siglip_milvus import BGESigLIPEmbeddingFunction, BGESigLIPMilvus


def show(title: str, hits: list[dict]) -> None:
    print(f"\n{title}")
    for hit in hits:
        entity = hit["entity"]
        print(f"  {hit['distance']:+.3f}  {entity.get('source') or entity.get('text')}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="BGE-SigLIP model directory or hub id")
    parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--db", default="./photos.db", help="milvus-lite database file")
    parser.add_argument("--uri", help="Milvus server URI (instead of --db)")
    parser.add_argument("--collection", default="photos")
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument(
        "--text", nargs="+", default=["a dog playing on the beach", "ein Hund spielt am Strand"],
        help="text queries (any language)",
    )
    args = parser.parse_args(argv)

    client = MilvusClient(uri=args.uri) if args.uri else MilvusClient(args.db)
    db = BGESigLIPMilvus(client, BGESigLIPEmbeddingFunction(model=args.model))
    try:
        if not client.has_collection(args.collection):
            db.create_collection(args.collection)  # id, vector (COSINE), modality, source, text; model recorded

        # Batches with a progress bar (on a terminal); ids come from file contents. on_error="skip": a broken file
        # is reported and left out instead of stopping the run.
        result = db.add_images(args.collection, args.images, on_error="skip")
        stored = client.query(args.collection, filter='modality == "image"', output_fields=["count(*)"])
        print(f"added {result.written} images; the collection holds {stored[0]['count(*)']} images")
        for error in result.skipped:
            print(f"  skipped {error}")

        fields = ["source", "text"]
        for text in args.text:
            show(f"text: {text!r}", db.search(args.collection, texts=[text], limit=args.limit, output_fields=fields)[0])
        first = next((hit for hit in db.search(args.collection, texts=[args.text[0]], limit=1,
                                               output_fields=["source"])[0]), None)
        if first is not None and first["entity"].get("source"):
            source = first["entity"]["source"]
            show(f"image: {source}", db.search(args.collection, images=[source], limit=args.limit,
                                               output_fields=fields)[0])
    finally:
        client.close()


if __name__ == "__main__":
    main()
