"""The ``bge-siglip demo`` and ``bge-siglip bench`` subcommands (registered in pyproject.toml).

Import-light: parsing imports only argparse; each command's ``run`` imports its stack.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bge_siglip_vectorizer import Command

from . import bench


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", type=Path, default=Path("bge-siglip-demo"),
                   help="where everything is written (replaced) [%(default)s]")
    p.add_argument("--model", default=None, help="use this model's towers instead of the small offline ones")
    p.add_argument("--n", type=int, default=640, help="number of generated images [%(default)s]")
    p.add_argument("--epochs", type=int, default=15, help="[%(default)s]")
    p.add_argument("--seed", type=int, default=0)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.workdir, model=args.model, n_images=args.n, epochs=args.epochs, seed=args.seed)
    return 0


DEMO = Command(
    help="offline end-to-end demo: build, train, index into Chroma and Qdrant, search in two languages",
    description="Builds a small model (tiny SigLIP-2 vision tower + all-MiniLM-L6-v2 text tower, both local), "
    "generates captioned images, trains, indexes the held-out images into embedded Chroma and Qdrant through "
    "the adapters, and runs text queries in English and German and an image query. With --model DIR the "
    "towers of that model are used instead.",
    add_arguments=_demo_arguments,
    run=_demo,
)

BENCH = Command(
    help="benchmarks: ours vs the reference paths, side by side, ratios",
    description=bench.DESCRIPTION,
    add_arguments=bench.add_arguments,
    run=bench.run,
)
