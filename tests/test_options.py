"""Options declared once: the parser derived from a dataclass gives back the dataclass."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from bge_siglip_vectorizer import add_options, option, options_from_args


@dataclass(frozen=True, kw_only=True)
class _Run:
    cluster: str | None = option(None, nargs="?", const="local", metavar="ADDRESS", help="run on a cluster")


def test_an_optional_value_flag_has_a_bare_form():
    parser = add_options(argparse.ArgumentParser(), _Run)
    assert options_from_args(_Run, parser.parse_args([])).cluster is None
    assert options_from_args(_Run, parser.parse_args(["--cluster"])).cluster == "local"
    assert options_from_args(_Run, parser.parse_args(["--cluster", "10.0.0.1:6379"])).cluster == "10.0.0.1:6379"
