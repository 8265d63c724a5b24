"""Configuration declared once: dataclass fields carry their help, flag, environment variable and range.

A settings class declares each option one time, as a field made by :func:`option`; command-line options
(:func:`add_options`), environment defaults and range checks (:func:`check_options`) are derived from it, so a
new field appears on the command line, in the environment and in the checks without another line::

    @dataclass(frozen=True, kw_only=True)
    class ServerSettings:
        port: int = option(8080, help="port", min=1, max=65535)

        def __post_init__(self) -> None:
            check_options(self)

    add_options(parser, ServerSettings, env_prefix="BGE_SIGLIP_")   # --port, $BGE_SIGLIP_PORT, [8080]
    settings = options_from_args(ServerSettings, parser.parse_args())

Booleans that default to ``True`` become ``--no-<name>`` flags. Types come from the field annotations
(``int``, ``float``, ``str``, ``bool``, ``X | None``); anything else needs ``parse=``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Callable, Iterable

__all__ = [
    "option", "OptionSpec", "add_options", "options_from_args", "check_options", "option_fields", "parse_bool",
    "vector_option_names",
]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class OptionSpec:
    """What a field's metadata says about it as an option."""

    help: str
    flag: str | None = None  # default: --field-name (--no-field-name for booleans that default to True)
    choices: tuple[Any, ...] | None = None
    min: float | None = None  # inclusive
    above: float | None = None  # exclusive lower bound
    max: float | None = None
    cli: bool = True  # False: a library option only, not on the command line
    env: bool = True  # read a default from the environment when add_options is given a prefix
    metavar: str | None = None
    group: str | None = None  # argparse argument group title
    parse: Callable[[str], Any] | None = None  # text -> value, for types other than int/float/str/bool
    nargs: str | None = None
    const: Any = None  # with nargs="?": the value of the bare flag (e.g. ``--ray`` alone = "local")
    show: Callable[[Any], str] | None = None  # how the default is shown in --help (e.g. bytes as MiB)
    # True: the value changes the vectors a model computes (not the space: the fingerprint stays). Stores that
    # persist an embedding function's settings (Chroma's collection config, ...) must persist these, so a reopened
    # collection embeds exactly as the process that wrote it did.
    vectors: bool = False


def option(
    default: Any = MISSING,
    *,
    help: str,  # noqa: A002 - the argparse word
    default_factory: Any = MISSING,
    **spec: Any,
) -> Any:
    """A dataclass field that is also an option (see :class:`OptionSpec` for the keywords)."""
    metadata = {"option": OptionSpec(help=help, **spec)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_fields(cls: type) -> list[tuple[dataclasses.Field, OptionSpec, Any]]:
    """``(field, spec, resolved type)`` of every option field of a dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    return [
        (f, f.metadata["option"], hints[f.name])
        for f in dataclasses.fields(cls)
        if "option" in f.metadata
    ]


def vector_option_names(cls: type) -> tuple[str, ...]:
    """Names of the option fields of ``cls`` declared with ``vectors=True`` (see :class:`OptionSpec`)."""
    return tuple(f.name for f, spec, _ in option_fields(cls) if spec.vectors)


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected a boolean (1/0, true/false, yes/no, on/off), got {text!r}")


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """``(type, optional)`` of an annotation such as ``int | None``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        return (args[0] if len(args) == 1 else annotation), optional
    return annotation, False


def _parser_for(spec: OptionSpec, annotation: Any) -> Callable[[str], Any]:
    if spec.parse is not None:
        return spec.parse
    base, optional = _base_type(annotation)
    if base is bool:
        convert: Callable[[str], Any] = parse_bool
    elif base in (int, float, str):
        convert = base
    else:
        raise TypeError(f"option of type {annotation!r} needs parse=")
    if optional and base is not str:
        return lambda text: None if text.strip().lower() in ("", "none") else convert(text)
    return convert


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return MISSING


def _flag(f: dataclasses.Field, spec: OptionSpec, base: Any) -> str:
    if spec.flag:
        return spec.flag
    name = f.name.replace("_", "-")
    return f"--no-{name}" if base is bool and _default(f) is True else f"--{name}"


def env_name(prefix: str, flag: str) -> str:
    """``--max-batch-size`` -> ``BGE_SIGLIP_MAX_BATCH_SIZE``."""
    return prefix + flag.lstrip("-").replace("-", "_").upper()


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    env_prefix: str | None = None,
    exclude: Iterable[str] = (),
    positional: Iterable[str] = (),
    defaults: dict[str, Any] | None = None,
    environ: typing.Mapping[str, str] | None = None,
) -> argparse.ArgumentParser:
    """Add one command-line option per option field of ``cls`` (dest = field name).

    ``env_prefix``: each option's default is read from ``<prefix><FLAG>`` when set (a required option is then no
    longer required). ``positional``: fields taken as positional arguments. ``defaults``: other defaults than the
    dataclass's, for this parser only.
    """
    environ = os.environ if environ is None else environ
    skip, positional = set(exclude), set(positional)
    groups: dict[str, Any] = {}
    for f, spec, annotation in option_fields(cls):
        if not spec.cli or f.name in skip:
            continue
        base, _ = _base_type(annotation)
        flag = _flag(f, spec, base)
        default = (defaults or {}).get(f.name, _default(f))
        convert = _parser_for(spec, annotation)
        env = env_name(env_prefix, flag) if env_prefix and spec.env else None
        if env and environ.get(env) not in (None, ""):
            try:
                value = convert(environ[env])
            except ValueError as exc:
                raise ValueError(f"${env}: {exc}") from None
            # A --no-x flag's variable says "no": BGE_SIGLIP_NO_BATCHING=1 means batching=False.
            default = (not value) if flag.startswith("--no-") and base is bool else value
        hidden = default is MISSING or default is None or isinstance(default, bool)  # a flag's help says it all
        shown = "" if hidden else f" [{(spec.show or str)(default)}]"
        where = f" [env {env}]" if env else ""
        target = parser
        if spec.group:
            target = groups.get(spec.group) or groups.setdefault(spec.group, parser.add_argument_group(spec.group))
        kwargs: dict[str, Any] = {"help": (spec.help + shown + where).replace("%", "%%")}
        if f.name in positional:
            target.add_argument(f.name, type=convert, metavar=spec.metavar or f.name.upper(),
                                nargs=spec.nargs or ("?" if default is not MISSING else None),
                                **({} if default is MISSING else {"default": default}), **kwargs)
            continue
        if base is bool and spec.parse is None:
            says = not flag.startswith("--no-")
            if default is None:  # None = "decide by itself" (e.g. progress bars on a terminal); the flag decides
                target.add_argument(flag, dest=f.name, action="store_const", const=says, default=None, **kwargs)
            else:
                action = "store_true" if says else "store_false"
                target.add_argument(flag, dest=f.name, action=action, default=bool(default), **kwargs)
            continue
        if spec.choices is not None:
            kwargs["choices"] = list(spec.choices)
        if spec.nargs is not None:
            kwargs["nargs"] = spec.nargs
        if spec.const is not None:
            kwargs["const"] = spec.const
        target.add_argument(
            flag, dest=f.name, type=convert, metavar=spec.metavar,
            required=default is MISSING, default=None if default is MISSING else default, **kwargs,
        )
    return parser


def options_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """An instance of ``cls`` from a namespace filled by :func:`add_options` (fields it lacks keep defaults)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values = {name: getattr(args, name) for name in names if hasattr(args, name)}
    values.update(overrides)
    return cls(**values)


def check_options(obj: Any) -> None:
    """Raise ``ValueError`` naming the first option field whose value is outside its declared range or choices."""
    for f, spec, _ in option_fields(type(obj)):
        value = getattr(obj, f.name)
        if value is None or isinstance(value, bool):
            continue
        if spec.choices is not None and value not in spec.choices:
            raise ValueError(f"{f.name} must be one of {list(spec.choices)}, got {value!r}")
        if not isinstance(value, (int, float)):
            continue
        if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max) or (
            spec.above is not None and value <= spec.above
        ):
            bounds = []
            if spec.min is not None:
                bounds.append(f">= {spec.min:g}")
            if spec.above is not None:
                bounds.append(f"> {spec.above:g}")
            if spec.max is not None:
                bounds.append(f"<= {spec.max:g}")
            raise ValueError(f"{f.name} out of range: {value!r} (must be {' and '.join(bounds)})")
