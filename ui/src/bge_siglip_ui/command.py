"""``bge-siglip ui``: the options (declared once, below) and the command; parsing imports nothing heavy."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from bge_siglip_vectorizer import Command, VectorizerOptions, add_options, check_options, option, options_from_args

__all__ = ["UIOptions", "COMMAND"]

DESCRIPTION = """\
A search page for your images, in the browser, on this machine: type in any language, drop / paste / choose an
image, or both (a slider weighs them), and see the hits as thumbnails; click one for the full image or "more like
this".

  bge-siglip ui --model my-model --folder ~/Pictures        # index the folder (only new files), then serve
  bge-siglip ui --model my-model --store qdrant:./qdrant#photos   # chroma:, milvus:, lancedb:, or a server URL

--folder keeps its index in the cache folder (--cache-dir), never in the image folder. --store opens a collection
written by the Chroma / Qdrant / Milvus / LanceDB adapters or `bge-siglip ingest`. Served on 127.0.0.1 unless --host
says otherwise.
"""


@dataclass(frozen=True, kw_only=True)
class UIOptions:
    """What ``bge-siglip ui`` and :func:`bge_siglip_ui.server.serve` take besides the model's own options."""

    model: str = option(help="BGE-SigLIP model directory (or hub repo id)")
    folder: str | None = option(None, metavar="DIR",
                                help="a folder of images to index (searched recursively; only new or changed files "
                                     "are embedded) and search")
    store: str | None = option(None, metavar="TARGET",
                               help="an existing collection instead: qdrant:PATH#collection, chroma:PATH#collection, "
                                    "milvus:FILE.db#collection, lancedb:PATH#table (or a server's http://HOST:PORT "
                                    "as PATH)")
    host: str = option("127.0.0.1", help="address to listen on (0.0.0.0: every interface; anyone who reaches it "
                                         "can search and see the images)")
    port: int = option(7860, min=0, max=65535, help="port (0: any free one)")
    cache_dir: str | None = option(None, metavar="DIR",
                                   help="where folder indexes and thumbnails are kept (default: the user cache "
                                        "folder + bge-siglip/ui, e.g. ~/.cache/bge-siglip/ui)")
    batch_size: int = option(32, min=1, help="images per model batch while indexing")
    progress: bool | None = option(None, help="show the indexing progress bar on the terminal (default: on a "
                                              "terminal)")

    def __post_init__(self) -> None:
        check_options(self)
        if self.folder is not None and self.store is not None:
            raise ValueError("give --folder (index a folder) or --store (open a collection), not both")


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, UIOptions)
    add_options(parser, VectorizerOptions)


def _run(args: argparse.Namespace) -> int:
    from .server import serve

    try:
        options = options_from_args(UIOptions, args)
    except ValueError as exc:
        print(f"bge-siglip ui: {exc}", file=sys.stderr)
        return 2
    return serve(options, options_from_args(VectorizerOptions, args))


COMMAND = Command(
    help="a local search page for a folder of images or a Chroma / Qdrant / Milvus / LanceDB collection",
    description=DESCRIPTION,
    add_arguments=_add_arguments,
    run=_run,
)
