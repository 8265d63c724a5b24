"""Weaviate quickstart: images in, text queries in two languages and an image query out.

1. Start Weaviate (stock ``multi2vec-clip`` module) and the BGE-SigLIP inference server::

       export BGE_SIGLIP_MODEL_DIR=/absolute/path/to/bge-siglip     # a model directory
       docker compose -f integrations/weaviate/docker-compose.yml up -d --build

2. Install the client side and run this script on a folder of photos::

       pip install ./integrations/weaviate          # bge-siglip-weaviate (pulls weaviate-client)
       python examples/weaviate_quickstart.py photos/*.jpg

Module mode (default): Weaviate vectorises every object and every query by calling our server's ``/vectorize``.
``--client-side MODEL_DIR``: for a Weaviate without the module (e.g. Weaviate Cloud) — vectors are computed in this
process and sent with the objects; queries are ``near_vector``. Same model, same vectors, same results.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import weaviate
from weaviate.classes.config import DataType, Property
from weaviate.classes.query import MetadataQuery

from bge_siglip_weaviate import ClientSideCollection, create_multi2vec_collection

QUERIES = [
    "a dog playing on the beach",  # English
    "ein Hund, der am Strand spielt",  # German: the same question, same vector space
]


def module_mode(client: weaviate.WeaviateClient, photos: list[Path]) -> None:
    if client.collections.exists("Photos"):
        client.collections.delete("Photos")
    collection = create_multi2vec_collection(
        client,
        "Photos",
        image_fields=["image"],  # BLOB property: Weaviate sends it to /vectorize as base64
        # Per-collection server (Weaviate >= 1.24.2); leave out to use CLIP_INFERENCE_API.
        inference_url="http://bge-siglip:8080",
        extra_properties=[Property(name="filename", data_type=DataType.TEXT, skip_vectorization=True)],
    )
    # One /vectorize request per object, several in flight: the server batches them across requests.
    with collection.batch.fixed_size(batch_size=64, concurrent_requests=2) as batch:
        for path in photos:
            batch.add_object(properties={"image": base64.b64encode(path.read_bytes()).decode(), "filename": path.name})
    if collection.batch.failed_objects:
        raise SystemExit(f"{len(collection.batch.failed_objects)} objects failed: {collection.batch.failed_objects[0].message}")
    print(f"inserted {len(collection)} photos")

    for query in QUERIES:
        result = collection.query.near_text(query=query, limit=3, return_properties=["filename"],
                                            return_metadata=MetadataQuery(distance=True))
        _show(f"near_text {query!r}", result)
    result = collection.query.near_image(near_image=photos[0], limit=3, return_properties=["filename"],
                                         return_metadata=MetadataQuery(distance=True))
    _show(f"near_image {photos[0].name}", result)  # the photo itself comes first, at distance ~0


def client_side_mode(client: weaviate.WeaviateClient, photos: list[Path], model: str) -> None:
    if client.collections.exists("PhotosLocal"):
        client.collections.delete("PhotosLocal")
    collection = ClientSideCollection.create(
        client, "PhotosLocal", model, text_property=None,
        extra_properties=[Property(name="filename", data_type=DataType.TEXT)],
    )
    collection.add_images(photos, properties=[{"filename": p.name} for p in photos])
    print(f"inserted {len(collection.collection)} photos (vectors computed locally)")
    for query in QUERIES:
        _show(f"near_text {query!r}", collection.near_text(query, limit=3, return_properties=["filename"]))
    _show(f"near_image {photos[0].name}", collection.near_image(photos[0], limit=3, return_properties=["filename"]))


def _show(title: str, result) -> None:
    print(title)
    for obj in result.objects:
        print(f"   {obj.metadata.distance:.3f}  {obj.properties['filename']}")


def main() -> None:
    parser = argparse.ArgumentParser(description="BGE-SigLIP + Weaviate quickstart")
    parser.add_argument("photos", nargs="+", type=Path, help="image files")
    parser.add_argument("--client-side", metavar="MODEL_DIR", help="compute vectors here instead of in Weaviate")
    parser.add_argument("--host", default="localhost")
    args = parser.parse_args()
    with weaviate.connect_to_local(host=args.host) as client:
        if args.client_side:
            client_side_mode(client, args.photos, args.client_side)
        else:
            module_mode(client, args.photos)


if __name__ == "__main__":
    main()
