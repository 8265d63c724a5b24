"""The ``bge-siglip-serve`` command: options, environment defaults, and a real server process end to end."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from bge_siglip_weaviate.server import add_arguments, settings_from_args


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_add_arguments_mounts_as_a_subcommand() -> None:
    # How the core CLI uses it: `bge-siglip serve --model DIR ...`
    parser = argparse.ArgumentParser(prog="bge-siglip")
    sub = parser.add_subparsers(dest="command", required=True)
    add_arguments(sub.add_parser("serve"))
    args = parser.parse_args(
        ["serve", "--model", "/models/x", "--host", "0.0.0.0", "--port", "9000", "--no-batching", "--max-batch-size",
         "8", "--max-wait-ms", "2.5", "--max-queue", "64", "--max-items-per-request", "16", "--max-body-mb", "1",
         "--api-key", "k", "--max-queue-wait-s", "20", "--max-image-pixels", "1000000", "--max-concurrent-decodes",
         "3", "--allow-urls", "--header-timeout-s", "4", "--body-timeout-s", "9", "--max-pending-body-mb", "8",
         "--served-model-name", "mine", "--adaptive-max-batch-size", "16", "--batch-gain-margin", "0.1",
         "--batch-probe-budget-s", "5"]
    )
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 9000)
    settings = settings_from_args(args)
    assert settings.model == "/models/x"
    assert settings.batching is False
    assert (settings.max_batch_size, settings.max_wait_ms, settings.max_queue_items) == (8, 2.5, 64)
    assert settings.max_items_per_request == 16
    assert settings.max_body_bytes == 2**20
    assert settings.api_key == "k"
    assert (settings.max_queue_wait_s, settings.max_image_pixels, settings.decode_slots) == (20.0, 10**6, 3)
    assert (settings.allow_urls, settings.header_timeout_s, settings.body_timeout_s) == (True, 4.0, 9.0)
    assert (settings.max_pending_body_bytes, settings.served_model_name) == (8 * 2**20, "mine")
    assert (settings.adaptive_max_batch_size, settings.batch_gain_margin, settings.batch_probe_budget_s) == (16, 0.1, 5)
    defaults = settings_from_args(add_arguments(argparse.ArgumentParser()).parse_args(["--model", "m"]))
    # The core's image limit (a server refuses no image the library accepts); batch sizes measured; no URLs.
    assert (defaults.max_queue_wait_s, defaults.max_image_pixels, defaults.max_batch_size) == (45.0, None, None)
    assert defaults.allow_urls is False and defaults.vectorizer_options().allow_urls is False
    assert defaults.max_concurrent_decodes is None and defaults.decode_slots == (os.cpu_count() or 1)


def test_environment_variables_are_defaults(monkeypatch) -> None:
    monkeypatch.setenv("BGE_SIGLIP_MODEL", "/models/from-env")
    monkeypatch.setenv("BGE_SIGLIP_API_KEY", "env-key")
    monkeypatch.setenv("BGE_SIGLIP_MAX_BATCH_SIZE", "12")
    monkeypatch.setenv("BGE_SIGLIP_PORT", "8123")
    args = add_arguments(argparse.ArgumentParser()).parse_args([])  # --model not required when the env names it
    settings = settings_from_args(args)
    assert (settings.model, settings.api_key, settings.max_batch_size, args.port) == ("/models/from-env", "env-key", 12, 8123)
    assert settings_from_args(add_arguments(argparse.ArgumentParser()).parse_args(["--max-batch-size", "3"])).max_batch_size == 3


def test_model_is_required_without_env(monkeypatch, capsys) -> None:
    monkeypatch.delenv("BGE_SIGLIP_MODEL", raising=False)
    with pytest.raises(SystemExit):
        add_arguments(argparse.ArgumentParser()).parse_args([])
    assert "--model" in capsys.readouterr().err


def _serve(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("BGE_SIGLIP_API_KEY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "bge_siglip_weaviate.server", "--log-level", "warning", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )


def test_server_process_serves_and_exits_cleanly_on_sigterm(bge_siglip_model_dir) -> None:
    port = _free_port()
    process = _serve("--model", str(bge_siglip_model_dir), "--host", "127.0.0.1", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                if httpx.get(url + "/.well-known/ready", timeout=2).status_code == 204:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server process not ready"
            time.sleep(0.2)
        response = httpx.post(url + "/vectorize", json={"texts": ["hello"], "images": []}, timeout=60)
        assert response.status_code == 200 and len(response.json()["textVectors"]) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output


def test_server_process_exits_1_when_the_model_cannot_load(tmp_path) -> None:
    process = _serve("--model", str(tmp_path / "missing"), "--port", str(_free_port()))
    try:
        output = process.communicate(timeout=120)[0].decode()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    assert "failed to load" in output


def test_serve_joins_the_core_command_through_its_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "bge_siglip_vectorizer", "serve", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: bge-siglip serve") and "--max-batch-size" in result.stdout
