"""LanceDB quickstart: images and texts in one table, searched by text (two languages) and by an image.

    pip install bge-siglip-lancedb
    python examples/lancedb_quickstart.py --model path/or/hub-id --images photos/ --db ./lancedb

``import bge_siglip_lancedb`` registers "bge-siglip" in LanceDB's embedding registry; the table records the function,
so a later ``lancedb.connect(...).open_table("photos")`` searches without any set-up. Running it again re-uses the
stored rows (ids come from the contents, so nothing doubles).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lancedb
from lancedb.embeddings import get_registry

import bge_siglip_lancedb

CAPTIONS = ["a dog playing on the beach", "eine Katze schläft auf dem Sofa"]


def show(title: str, hits: list[dict]) -> None:
    print(f"\n{title}")
    for hit in hits:
        print(f"  {1 - hit['_distance']:+.3f}  {hit['source'] or hit['text']}")  # cosine distance -> similarity


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="BGE-SigLIP model directory or hub id")
    parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--db", default="./lancedb", help="LanceDB directory")
    parser.add_argument("--table", default="photos")
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument(
        "--text", nargs="+", default=["a dog playing on the beach", "ein Hund spielt am Strand"],
        help="text queries (any language)",
    )
    args = parser.parse_args(argv)

    func = get_registry().get("bge-siglip").create(model=args.model)
    db = lancedb.connect(args.db)
    # id, modality, source (image path: the function's source column), text, vector; an existing table is
    # opened after checking it was embedded with this model.
    table = bge_siglip_lancedb.create_table(db, args.table, func, exist_ok=True)

    # Batches with a progress bar (on a terminal); upserts on content ids. on_error="skip": a broken file is
    # reported and left out instead of stopping the run.
    result = bge_siglip_lancedb.add_images(table, args.images, on_error="skip")
    for error in result.skipped:
        print(f"  skipped {error}")
    bge_siglip_lancedb.add_texts(table, CAPTIONS)
    images = table.count_rows("modality = 'image'")
    print(f"added {result.written} images; the table holds {images} images and {table.count_rows() - images} texts")

    for text in args.text:
        show(f"text: {text!r}", table.search(text).limit(args.limit).to_list())  # LanceDB embeds the query
    first = next((row for row in table.search(args.text[0]).where("modality = 'image'").limit(1).to_list()), None)
    if first is not None:
        show(f"image: {first['source']}", table.search(Path(first["source"])).limit(args.limit).to_list())


if __name__ == "__main__":
    main()
