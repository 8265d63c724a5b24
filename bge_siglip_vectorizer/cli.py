"""The ``bge-siglip`` command. Each subcommand parses arguments and calls library functions; no logic of its own.

Other distributions add subcommands (``serve`` from bge-siglip-weaviate, ``demo`` and ``bench`` from
bge-siglip-tools, ...) through the entry-point group ``bge_siglip.commands``: each entry point names a
:class:`Command`. A user who installs only the core sees only the core's commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

from ._version import __version__
from .errors import BGESigLIPError
from .options import add_options, options_from_args

#: The entry-point group through which other distributions add subcommands.
COMMAND_GROUP = "bge_siglip.commands"
# Where the commands of this project's other distributions come from, for a helpful "not installed" message.
_PROVIDED_BY = {
    "serve": "bge-siglip-weaviate (pip install ./integrations/weaviate)",
    "demo": "bge-siglip-tools (pip install ./tools)",
    "bench": "bge-siglip-tools (pip install ./tools)",
}


@dataclass(frozen=True)
class Command:
    """A ``bge-siglip`` subcommand that another distribution provides.

    Register it in that distribution's ``pyproject.toml``::

        [project.entry-points."bge_siglip.commands"]
        serve = "bge_siglip_weaviate.server:COMMAND"

    ``add_arguments`` and the module holding the command must import only what parsing needs (``--help`` loads
    every command); ``run`` imports the rest.
    """

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], Any]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


def plugin_commands() -> dict[str, Command]:
    """The installed distributions' commands, by name (one that fails to load is skipped with a warning)."""
    found: dict[str, Command] = {}
    for entry in sorted(metadata.entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        try:
            command = entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not take the core's commands down
            warnings.warn(f"bge-siglip: command {entry.name!r} ({entry.value}) failed to load: {exc}", stacklevel=2)
            continue
        if isinstance(command, Command):
            found.setdefault(entry.name, command)
    return found

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
    from .vectorizer import VectorizerOptions

    parser.add_argument("--model", required=True, help="BGE-SigLIP model directory (or hub repo id)")
    add_options(parser, VectorizerOptions)


def _load(args: argparse.Namespace):
    from .vectorizer import Vectorizer, VectorizerOptions

    return Vectorizer.from_pretrained(args.model, **dataclasses.asdict(options_from_args(VectorizerOptions, args)))


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
        from .errors import InvalidTextError
        from .inputs import read_utf8

        # Bad bytes: a typed error naming the file and line (main prints it), not a UnicodeDecodeError traceback.
        texts += [line for line in read_utf8(args.texts_file, InvalidTextError).splitlines() if line.strip()]
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
    from .testing import make_tiny_model

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
    from .convert import convert_research_checkpoint, text_tower_outputs

    out = convert_research_checkpoint(
        args.checkpoint,
        args.out,
        text_tower=args.text_tower,
        vision_config=args.vision_config,
        text_pooling=args.text_pooling,
        max_num_patches=args.max_num_patches,
    )
    outputs = text_tower_outputs(args.text_tower)
    gives = "its BGE-M3 heads load with it" if outputs is None else f"text outputs: {', '.join(outputs)}"
    print(f"wrote {out} (text tower: {args.text_tower}; {gives})")
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
    from .export import export_onnx

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
    import shlex

    from .training.shapes import make_shapes

    root = make_shapes(args.directory, n=args.n, val_fraction=args.val_fraction, seed=args.seed,
                       languages=tuple(filter(None, args.languages.split(","))))
    print(f"wrote {args.n} images with captions to {root} (train.jsonl, val.jsonl); train on them with:")
    # The data are the JSON-lines files (the folder itself holds no sidecar captions); quoted for the shell.
    print("  bge-siglip train " + shlex.join([str(root / "train.jsonl"), "--val", str(root / "val.jsonl"),
                                              "--out", f"{root}-model"]))
    print("(the default towers come from the hub; add --vision DIR --text DIR for local ones)")
    return 0


def _train_parser(sub) -> None:
    from .training.trainer import TrainConfig

    p = sub.add_parser(
        "train",
        help="align a vision tower to a frozen text tower on your image-caption data",
        description="Train the projector (and the last vision layers) with the SigLIP sigmoid loss so that images "
        "land on their captions' text vectors. Data: JSON lines or CSV with image and caption columns (paths "
        "relative to the file), or a folder of images with same-named .txt captions. Caption vectors are computed "
        "once by the frozen text tower and cached. Start from --model DIR, or from --vision/--text towers with a "
        "new projector. The output directory is a model directory (load it with Vectorizer.from_pretrained).",
    )
    add_options(p, TrainConfig, positional=("train_data",))
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from .training.trainer import TrainConfig, train

    result = train(options_from_args(TrainConfig, args))
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


def _info_parser(sub) -> None:
    p = sub.add_parser(
        "info",
        help="describe a model directory",
        description="Load a model and print its settings: towers, sizes, the text outputs it gives (dense, and "
        "BGE-M3's sparse and multi-vector where the text tower has their heads) and the fingerprints stores compare.",
    )
    p.add_argument("model", help="model directory or hub repo id")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    from .vectorizer import Vectorizer

    vectorizer = Vectorizer.from_pretrained(args.model, device="cpu")
    # The fingerprints are what stores compare (one per granularity); describe() is also the server's /meta.
    description = {**vectorizer.describe(), "fingerprints": vectorizer.fingerprints}
    if args.json:
        print(json.dumps(description, indent=2))
    else:
        width = max(len(key) for key in description)
        for key, value in description.items():
            if isinstance(value, list):
                value = ", ".join(map(str, value))
            elif isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            print(f"{key:<{width}}  {value}")
    return 0


_PARSERS: list[Callable] = [
    _encode_parser, _make_tiny_parser, _make_shapes_parser, _train_parser, _eval_parser, _convert_parser,
    _export_onnx_parser, _info_parser,
]


def build_parser(commands: dict[str, Command] | None = None) -> argparse.ArgumentParser:
    """The whole command line: the core's subcommands, then those of the installed distributions."""
    parser = argparse.ArgumentParser(
        prog="bge-siglip", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _PARSERS:
        add(sub)
    for name, command in (plugin_commands() if commands is None else commands).items():
        if name in sub.choices:
            continue  # the core's own command wins
        p = sub.add_parser(name, help=command.help, description=command.description or command.help,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] and not argv[0].startswith("-") and argv[0] in _PROVIDED_BY:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
        if argv[0] not in sub.choices:
            print(f"bge-siglip: the {argv[0]!r} command comes with {_PROVIDED_BY[argv[0]]}", file=sys.stderr)
            return 2
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
    # Run the canonical module's main: plug-ins import Command from bge_siglip_vectorizer.cli, not from __main__.
    from bge_siglip_vectorizer.cli import main as _main

    sys.exit(_main())
