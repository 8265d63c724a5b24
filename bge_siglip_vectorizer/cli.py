"""The ``bge-siglip`` command. Each subcommand parses arguments and calls library functions; no logic of its own."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from . import __version__
from .errors import BGESigLIPError

DESCRIPTION = """\
BGE-SigLIP: search images with text in 100+ languages (and images with images).
A SigLIP-2 vision tower is projected into BGE-M3's text embedding space; this tool
makes, converts, inspects and runs such models.

Typical first steps:
  bge-siglip make-tiny ./tiny                      # a small random model, for trying things out
  bge-siglip encode --model ./tiny --images photos/ --texts "a dog" --out vectors.jsonl
  bge-siglip info ./tiny
"""


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="BGE-SigLIP model directory (or hub repo id)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: float32 on CPU)")
    parser.add_argument(
        "--max-num-patches", type=int, default=None, help="image detail budget in 16px patches (default: saved, 256)"
    )
    parser.add_argument(
        "--backend", choices=["torch", "onnx", "onnx-int8"], default="torch",
        help="inference backend (onnx needs `bge-siglip export-onnx` first)",
    )


def _load(args: argparse.Namespace):
    from .vectorizer import Vectorizer

    return Vectorizer.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, max_num_patches=args.max_num_patches, backend=args.backend
    )


# ---------------------------------------------------------------------------------------------------------- encode
def _encode_parser(sub) -> None:
    p = sub.add_parser(
        "encode",
        help="encode images and/or texts to vectors (.npy or JSON lines)",
        description="Encode images and/or texts. Images are files, folders (searched recursively), URLs, "
        "or data URIs. Output: .npy (rows: images first, then texts, in the order given) or JSON lines "
        "(one {kind, input, vector} object per item; the default, to stdout).",
    )
    _add_model_options(p)
    p.add_argument("--images", nargs="*", default=[], metavar="PATH", help="image files, folders or URLs")
    p.add_argument("--texts", nargs="*", default=[], metavar="TEXT", help="texts to encode")
    p.add_argument("--texts-file", type=Path, help="a UTF-8 file with one text per line")
    p.add_argument("--out", type=Path, help="output file: *.npy or *.jsonl (default: JSON lines to stdout)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_encode)


def _encode(args: argparse.Namespace) -> int:
    import numpy as np

    from .inputs import list_image_files

    images = [
        str(path)
        for item in args.images
        for path in ([item] if "://" in item or item.startswith("data:") else list_image_files(item))
    ]
    texts = list(args.texts)
    if args.texts_file:
        texts += [line for line in args.texts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not images and not texts:
        print("nothing to encode: give --images and/or --texts", file=sys.stderr)
        return 2
    vectorizer = _load(args)
    progress = False if args.no_progress else None
    image_vectors = vectorizer.encode_images(images, batch_size=args.batch_size, show_progress=progress)
    text_vectors = vectorizer.encode_texts(texts, batch_size=args.batch_size, show_progress=progress)
    if args.out is not None and args.out.suffix == ".npy":
        np.save(args.out, np.concatenate([image_vectors, text_vectors]))
        print(
            f"wrote {args.out}: {len(images)} image rows then {len(texts)} text rows, dim {vectorizer.dim}",
            file=sys.stderr,
        )
        return 0
    stream = args.out.open("w", encoding="utf-8") if args.out is not None else sys.stdout
    try:
        for kind, inputs, vectors in (("image", images, image_vectors), ("text", texts, text_vectors)):
            for item, vector in zip(inputs, vectors):
                stream.write(json.dumps({"kind": kind, "input": item, "vector": vector.tolist()}, ensure_ascii=False))
                stream.write("\n")
    finally:
        if stream is not sys.stdout:
            stream.close()
    if args.out is not None:
        print(f"wrote {args.out}: {len(images) + len(texts)} vectors, dim {vectorizer.dim}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------------------- models
def _make_tiny_parser(sub) -> None:
    p = sub.add_parser(
        "make-tiny",
        help="write a tiny random model (for tests and trying the tools; no semantic meaning)",
        description="Build a tiny random BGE-SigLIP in the real on-disk format. Its vectors are deterministic "
        "but meaningless: use it to test pipelines, not to search.",
    )
    p.add_argument("directory", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dim", type=int, default=32, help="vector size (the tiny text tower's hidden size)")
    p.set_defaults(func=_make_tiny)


def _make_tiny(args: argparse.Namespace) -> int:
    from .testing.tiny import make_tiny_model

    path = make_tiny_model(args.directory, seed=args.seed, dim=args.dim)
    print(f"wrote tiny model to {path}")
    return 0


def _convert_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert the research model_checkpoint.pt into a model directory",
        description="Convert the original research checkpoint (keys vision_model.*, projector.0.*, projector.2.*, "
        "logit_scale, logit_bias) into a BGE-SigLIP directory. The vision tower and projector are written; the "
        "frozen text tower is referenced by hub id or path.",
    )
    p.add_argument("checkpoint", type=Path, help="path to model_checkpoint.pt")
    p.add_argument("--out", type=Path, required=True, help="output model directory")
    p.add_argument("--text-tower", default="BAAI/bge-m3", help="hub id or directory of the text tower")
    p.add_argument(
        "--vision-config",
        default=None,
        help="hub id or directory whose config describes the vision tower (default: inferred from the weights)",
    )
    p.add_argument("--text-pooling", choices=["cls", "mean"], default="cls")
    p.add_argument("--max-num-patches", type=int, default=256)
    p.set_defaults(func=_convert)


def _convert(args: argparse.Namespace) -> int:
    from .loading import convert_research_checkpoint

    out = convert_research_checkpoint(
        args.checkpoint,
        args.out,
        text_tower=args.text_tower,
        vision_config=args.vision_config,
        text_pooling=args.text_pooling,
        max_num_patches=args.max_num_patches,
    )
    print(f"wrote {out} (text tower: {args.text_tower})")
    return 0


def _export_onnx_parser(sub) -> None:
    p = sub.add_parser(
        "export-onnx",
        help="export both towers to ONNX (optionally int8) for backend='onnx'",
        description="Write OUT/onnx/{vision,text}.onnx (and *.int8.onnx with --int8) next to a copy of the model; "
        "OUT may be the model directory itself. Load with Vectorizer.from_pretrained(OUT, backend='onnx').",
    )
    p.add_argument("model", help="BGE-SigLIP model directory (or hub repo id)")
    p.add_argument("--out", type=Path, required=True, help="output model directory")
    p.add_argument("--int8", action="store_true", help="also write int8 dynamically quantised graphs")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.set_defaults(func=_export_onnx)


def _export_onnx(args: argparse.Namespace) -> int:
    from .onnx_export import export_onnx

    out = export_onnx(args.model, args.out, int8=args.int8, opset=args.opset)
    print(f"wrote {out / 'onnx'} (load with backend='onnx'{' or onnx-int8' if args.int8 else ''})")
    return 0


def _info_parser(sub) -> None:
    p = sub.add_parser("info", help="describe a model directory", description="Load a model and print its settings.")
    p.add_argument("model", help="model directory or hub repo id")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    from .vectorizer import Vectorizer

    description = Vectorizer.from_pretrained(args.model, device="cpu").describe()
    if args.json:
        print(json.dumps(description, indent=2))
    else:
        width = max(len(key) for key in description)
        for key, value in description.items():
            print(f"{key:<{width}}  {value}")
    return 0


# ---------------------------------------------------------------------------------------------------------- serve
def _serve_parser(sub) -> None:
    # Options are parsed by the server package itself (imported only when serving: it pulls in the web stack).
    p = sub.add_parser(
        "serve",
        add_help=False,
        help="run the Weaviate multi2vec-clip compatible inference server (bge-siglip serve --help)",
        description="Serve /vectorize, /meta and /.well-known/{ready,live} as Weaviate's multi2vec-clip module "
        "expects (needs the bge-siglip-weaviate package).",
    )
    p.add_argument("server_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    try:
        from bge_siglip_weaviate.server import main as serve_main
    except ImportError:
        print("the server lives in the bge-siglip-weaviate package: pip install ./integrations/weaviate", file=sys.stderr)
        return 2
    return int(serve_main(args.server_args) or 0)


_PARSERS: list[Callable] = [
    _encode_parser, _make_tiny_parser, _convert_parser, _export_onnx_parser, _info_parser, _serve_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bge-siglip", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _PARSERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BGESigLIPError as exc:
        # Typed errors already say what and where; a traceback would only bury that.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
