"""`bge-siglip ui`: registered with the core's command, options declared once, refused combinations."""

from __future__ import annotations

import socket

import pytest

from bge_siglip_ui.command import UIOptions
from bge_siglip_vectorizer.cli import build_parser, main, plugin_commands


def test_the_command_joins_bge_siglip_with_its_fixed_options():
    assert "ui" in plugin_commands()
    args = build_parser().parse_args(["ui", "--model", "m", "--folder", "pics"])
    assert (args.model, args.folder, args.store, args.host, args.port) == ("m", "pics", None, "127.0.0.1", 7860)
    args = build_parser().parse_args(["ui", "--model", "m", "--store", "qdrant:./db#p", "--host", "::1", "--port",
                                      "0", "--max-num-patches", "64"])
    assert (args.store, args.host, args.port, args.max_num_patches) == ("qdrant:./db#p", "::1", 0, 64)


def test_bad_option_values_are_refused(capsys):
    with pytest.raises(ValueError, match="not both"):
        UIOptions(model="m", folder="a", store="qdrant:./db#p")
    with pytest.raises(ValueError, match="port out of range"):
        UIOptions(model="m", port=70000)
    assert main(["ui", "--model", "m", "--folder", "a", "--store", "qdrant:./db#p"]) == 2
    assert "not both" in capsys.readouterr().err


def test_a_port_in_use_is_a_clear_error(capsys, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["ui", "--model", str(tmp_path), "--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
