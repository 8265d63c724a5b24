"""Fixtures for the Chroma adapter tests: client settings and a real ``chroma run`` server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
from chromadb.config import Settings

SERVER_START_TIMEOUT_S = 60.0


def _new_settings() -> Settings:
    return Settings(anonymized_telemetry=False)


@pytest.fixture(scope="session")
def chroma_settings() -> Callable[[], Settings]:
    """A factory of client settings (no telemetry: tests run offline).

    A factory, not one object: chromadb's client constructors MUTATE the Settings they are given
    (``PersistentClient`` sets ``persist_directory``, ``HttpClient`` sets ``chroma_api_impl`` and the host), so one
    shared object silently turns a later ``PersistentClient`` into an HTTP client of an earlier server.
    """
    return _new_settings


@dataclass(frozen=True)
class ChromaServer:
    host: str
    port: int
    path: Path
    pid: int


def _chroma_cli() -> str:
    # The CLI ships with the chromadb wheel, next to the interpreter of the environment it is installed in.
    candidate = Path(sys.executable).parent / "chroma"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("chroma")
    if found is None:
        pytest.fail("the `chroma` CLI (shipped with the chromadb wheel) is neither next to sys.executable nor on PATH")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """A real Chroma server (``chroma run``) on a free port, stopped by its process id at the end."""
    path = tmp_path_factory.mktemp("chroma-server")
    port = _free_port()
    log = (path / "server.log").open("wb")
    process = subprocess.Popen(
        [_chroma_cli(), "run", "--path", str(path / "data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                log_tail = (path / "server.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"chroma server exited with {process.returncode}: {log_tail}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"chroma server did not answer within {SERVER_START_TIMEOUT_S}s")
            time.sleep(0.2)
        yield ChromaServer("127.0.0.1", port, path / "data", process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
