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
  bge-siglip demo                                  # offline: make a small model, train it, index, search
  bge-siglip make-tiny ./tiny                      # a small random model, for trying things out
  bge-siglip encode --model ./tiny --images photos/ --texts "a dog" --out vectors.jsonl

Making a model (no projector weights are published):
  bge-siglip train captions.jsonl --out my-model   # align the public towers on your image-caption data
  bge-siglip eval --model my-model held-out.jsonl
  bge-siglip convert model_checkpoint.pt --out my-model   # or convert the research checkpoint
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


# ---------------------------------------------------------------------------------------------------------- making
def _make_shapes_parser(sub) -> None:
    p = sub.add_parser(
        "make-shapes",
        help="generate a synthetic captioned image set (coloured shapes and patterns)",
        description="Write DIR/images/*.png and DIR/train.jsonl, DIR/val.jsonl: coloured discs, stripes, "
        "checkerboards and dots with captions in several languages, for trying training end to end.",
    )
    p.add_argument("directory", type=Path)
    p.add_argument("--n", type=int, default=600, help="number of images (default 600)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--languages", default="en,de,fr,es", help="comma-separated caption languages (en,de,fr,es)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make_shapes)


def _make_shapes(args: argparse.Namespace) -> int:
    from .training.shapes import make_shapes

    root = make_shapes(args.directory, n=args.n, val_fraction=args.val_fraction, seed=args.seed,
                       languages=tuple(filter(None, args.languages.split(","))))
    print(f"wrote {args.n} images with captions to {root} (train.jsonl, val.jsonl)")
    return 0


def _train_parser(sub) -> None:
    from .training.trainer import TrainConfig

    defaults = TrainConfig(train_data="", out="")
    p = sub.add_parser(
        "train",
        help="align a vision tower to a frozen text tower on your image-caption data",
        description="Train the projector (and the last vision layers) with the SigLIP sigmoid loss so that images "
        "land on their captions' text vectors. Data: JSON lines or CSV with image and caption columns (paths "
        "relative to the file), or a folder of images with same-named .txt captions. Caption vectors are computed "
        "once by the frozen text tower and cached. Start from --model DIR, or from --vision/--text towers with a "
        "new projector. The output directory is a model directory (load it with Vectorizer.from_pretrained).",
    )
    p.add_argument("data", help="training data: .jsonl, .csv/.tsv, or a folder with sidecar .txt captions")
    p.add_argument("--out", required=True, help="output model directory (checkpoints go inside it)")
    p.add_argument("--val", dest="val_data", help="validation data (default: hold out --val-fraction of data)")
    p.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    p.add_argument("--model", help="a BGE-SigLIP directory to continue from")
    p.add_argument("--vision", default=defaults.vision, help="vision tower when starting fresh (hub id or dir)")
    p.add_argument("--text", default=defaults.text, help="frozen text tower when starting fresh (hub id or dir)")
    p.add_argument("--text-pooling", choices=["cls", "mean"], default=defaults.text_pooling)
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr, help="learning rate of the projector and logit scale/bias")
    p.add_argument("--vision-lr", type=float, default=defaults.vision_lr, help="learning rate of the unfrozen vision layers")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--warmup-fraction", type=float, default=defaults.warmup_fraction)
    p.add_argument("--trainable-vision-layers", type=int, default=defaults.trainable_vision_layers,
                   help="unfreeze the last N vision layers (0: projector only; all: the whole tower)")
    p.add_argument("--grad-clip", type=float, default=defaults.grad_clip)
    p.add_argument("--loss", choices=["sigmoid", "research"], default="sigmoid",
                   help="'research' reproduces the original script's broken loss, for comparison only")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--eval-every", type=int, default=0, help="validate every N steps (default: every epoch)")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (default: only at the end)")
    p.add_argument("--resume", help="a checkpoint directory, or 'latest'")
    p.add_argument("--device", default=None)
    p.add_argument("--max-num-patches", type=int, default=None)
    p.add_argument("--cache-dir", default=None, help="caption-vector cache (default OUT/cache)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from .training.trainer import TrainConfig, train

    config = TrainConfig(
        train_data=args.data, out=args.out, model=args.model, vision=args.vision, text=args.text,
        text_pooling=args.text_pooling, val_data=args.val_data, val_fraction=args.val_fraction, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, vision_lr=args.vision_lr, weight_decay=args.weight_decay,
        warmup_fraction=args.warmup_fraction, trainable_vision_layers=args.trainable_vision_layers,
        grad_clip=args.grad_clip, loss=args.loss, seed=args.seed, eval_every=args.eval_every,
        save_every=args.save_every, device=args.device, max_num_patches=args.max_num_patches,
        cache_dir=args.cache_dir, resume=args.resume, show_progress=False if args.no_progress else None,
    )
    result = train(config)
    print(f"wrote model to {result.output_dir} after {result.steps} steps")
    if result.final is not None:
        print(result.final.table())
    return 0


def _eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="recall@1/5/10 for text->image and image->text on held-out data",
        description="Encode a held-out set's images and captions and report retrieval recall@k in both directions "
        "(rows with the same 'label', or else the same caption, count as matches).",
    )
    _add_model_options(p)
    p.add_argument("data", help="evaluation data: .jsonl, .csv/.tsv, or a folder with sidecar .txt captions")
    p.add_argument("--out", type=Path, help="write the metrics as JSON here")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from .training.data import read_examples
    from .training.evaluate import evaluate

    examples = read_examples(args.data)
    report = evaluate(_load(args), examples, batch_size=args.batch_size)
    print(report.table())
    if args.out:
        report.write_json(args.out)
        print(f"wrote {args.out}")
    return 0


def _demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="offline end-to-end demo: build, train, index into Chroma and Qdrant, search in two languages",
        description="Builds a small model (tiny SigLIP-2 vision tower + all-MiniLM-L6-v2 text tower, both local), "
        "generates captioned images, trains, indexes the held-out images into embedded Chroma and Qdrant through "
        "the adapters, and runs text queries in English and German and an image query. With --model DIR the "
        "towers of that model are used instead.",
    )
    p.add_argument("--workdir", type=Path, default=Path("bge-siglip-demo"), help="where everything is written (replaced)")
    p.add_argument("--model", default=None, help="use this model's towers instead of the small offline ones")
    p.add_argument("--n", type=int, default=640, help="number of generated images")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.workdir, model=args.model, n_images=args.n, epochs=args.epochs, seed=args.seed)
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
    # Listed here for `bge-siglip --help`; main() hands `serve ...` to the server package, which parses its own
    # options (imported only when serving: it pulls in the web stack).
    sub.add_parser(
        "serve",
        add_help=False,
        help="run the Weaviate multi2vec-clip compatible inference server (bge-siglip serve --help)",
    )


def _bench_parser(sub) -> None:
    # Listed for `bge-siglip --help`; main() hands `bench ...` to bge_siglip_vectorizer.bench, which parses its own.
    sub.add_parser(
        "bench",
        add_help=False,
        help="benchmarks: ours vs the reference paths, side by side, ratios (bge-siglip bench --help)",
    )


def _serve(argv: list[str]) -> int:
    try:
        from bge_siglip_weaviate.server import main as serve_main
    except ImportError:
        print("the server lives in the bge-siglip-weaviate package: pip install ./integrations/weaviate", file=sys.stderr)
        return 2
    return int(serve_main(argv, prog="bge-siglip serve") or 0)


_PARSERS: list[Callable] = [
    _demo_parser, _encode_parser, _make_tiny_parser, _make_shapes_parser, _train_parser, _eval_parser, _convert_parser,
    _export_onnx_parser, _info_parser, _serve_parser, _bench_parser,
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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return _serve(argv[1:])
    if argv[:1] == ["bench"]:
        from .bench import main as bench_main

        return int(bench_main(argv[1:]) or 0)
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
