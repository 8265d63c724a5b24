"""Chroma quickstart: index a folder of images with BGE-SigLIP, then search it by text and by image.

    pip install ./ ./integrations/chroma        # from a checkout of the repository (not on PyPI yet)
    python examples/chroma_quickstart.py --model DIR --images photos/ --db ./chroma-db \
        --query "ein Hund am Strand" --query "a red car"

The collection stores the embedding function's config, so a second run (or any process that does
``import bge_siglip_chroma``) reopens it with ``client.get_collection(...)`` and no embedding function argument.
Try it without trained weights on a tiny random model (results are then arbitrary, the mechanics are real):

    bge-siglip make-tiny tiny
"""

from __future__ import annotations

import argparse
from pathlib import Path

import chromadb
from chromadb.errors import NotFoundError

from bge_siglip_chroma import BGESigLIPEmbeddingFunction, ImageURILoader
from bge_siglip_vectorizer import InvalidImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def open_collection(client: chromadb.ClientAPI, name: str, model: str, device: str | None) -> chromadb.Collection:
    # ImageURILoader hands file paths to the core undecoded: EXIF rotation, limits and typed errors come from it.
    loader = ImageURILoader()
    try:
        collection = client.get_collection(name, data_loader=loader)  # rebuilt from the stored config
        print(f"reopened collection {name!r}: {collection.configuration_json['embedding_function']['config']}")
    except NotFoundError:
        function = BGESigLIPEmbeddingFunction(model=model, device=device)
        collection = client.create_collection(name, embedding_function=function, data_loader=loader)
        print(f"created collection {name!r} with {function!r}")
    return collection


def index_folder(collection: chromadb.Collection, folder: Path, chunk: int) -> None:
    folder = folder.resolve()  # URIs are stored absolute, so queries work from any working directory
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    for start in range(0, len(files), chunk):
        # ids are paths relative to the folder; files indexed by an earlier run are skipped (to re-embed changed
        # files, call collection.upsert(ids=..., uris=...): with bge_siglip_chroma imported, that embeds them too).
        ids = {str(p.relative_to(folder)): p for p in files[start : start + chunk]}
        known = set(collection.get(ids=list(ids), include=[])["ids"])
        batch = [(i, p) for i, p in ids.items() if i not in known]
        while batch:
            try:
                collection.add(ids=[i for i, _ in batch], uris=[str(p) for _, p in batch])
                break
            except InvalidImageError as error:  # the core names the bad item; nothing of this batch was written
                print(f"skipping {batch[error.index][1]}: {error.reason}")
                del batch[error.index]
    print(f"{collection.count()} images in the collection")


def show(title: str, result: chromadb.QueryResult) -> None:
    print(f"\n{title}")
    for rank, (item_id, distance) in enumerate(zip(result["ids"][0], result["distances"][0]), 1):
        print(f"  {rank}. {item_id}  (cosine distance {distance:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="BGE-SigLIP model directory or hub id")
    parser.add_argument("--images", required=True, type=Path, help="folder of images to index (recursively)")
    parser.add_argument("--db", default="./chroma-db", help="PersistentClient directory")
    parser.add_argument("--collection", default="photos")
    parser.add_argument("--query", action="append", help="text query (repeatable); default: two examples")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the core's choice)")
    parser.add_argument("-k", type=int, default=5, help="results per query")
    parser.add_argument("--chunk", type=int, default=256, help="images per upsert call")
    args = parser.parse_args()

    client = chromadb.PersistentClient(path=args.db)
    collection = open_collection(client, args.collection, args.model, args.device)
    index_folder(collection, args.images, args.chunk)
    if collection.count() == 0:
        raise SystemExit(f"no readable images under {args.images}")
    k = min(args.k, collection.count())

    for text in args.query or ["a dog on the beach", "ein Hund am Strand"]:
        show(f"text -> images: {text!r}", collection.query(query_texts=[text], n_results=k))
    # The first indexed image as the query: it should find itself first (distance ~0).
    first = collection.get(limit=1, include=["uris"])
    show(f"image -> images: {first['ids'][0]!r}", collection.query(query_uris=first["uris"], n_results=k))


if __name__ == "__main__":
    main()
