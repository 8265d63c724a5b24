"""Hostile inputs: every item is bounded in time and memory, refused destinations are never contacted, and every
failure is a typed error naming the item.

A local HTTP server on 127.0.0.1 plays the hostile server (slow headers, slow redirects, endless bodies, a gzip
bomb, redirects to loopback or file://). Private destinations other than loopback are tested through an injected
resolver that maps names to those addresses: the refusal happens before any connection, so no traffic leaves
loopback. Wall-time bounds are the configured timeout plus a few seconds (the machine is shared).
"""

from __future__ import annotations

import gzip
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bge_siglip_vectorizer import ImageFetchError, ImageTooLargeError, InvalidImageError, Vectorizer
from bge_siglip_vectorizer.inputs import ImageLimits, PixelBudget, load_image, open_image
from bge_siglip_vectorizer.testing.images import encode_image, sample_image

SLACK_S = 3.0  # on top of a timeout: other sessions load the CPUs
OK_PNG = encode_image(sample_image(96, 64, seed=7), "PNG")
BOMB = gzip.compress(bytes(64 * 2**20), compresslevel=9)  # 64 MiB of zeros in ~64 KB


class _Hostile(BaseHTTPRequestHandler):
    hits: Counter = Counter()
    stop = threading.Event()  # set at teardown: every trickling handler ends

    def do_GET(self):  # noqa: N802 - http.server API
        path = self.path.split("?")[0]
        self.hits[path] += 1
        route = path.strip("/").split("/")
        try:
            getattr(self, "route_" + route[0].replace("-", "_"), self.route_missing)(*route[1:])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as these tests want

    def _trickle(self, data: bytes, pause: float) -> None:
        for byte in data:
            if self.stop.wait(pause):
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()

    def route_ok(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(OK_PNG)))
        self.end_headers()
        self.wfile.write(OK_PNG)

    def route_missing(self, *_: str) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def route_slow_headers(self) -> None:
        # One byte of the status line and headers every 0.5 s: each read is quick, the response never completes.
        self._trickle(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Padding: " + b"a" * 400 + b"\r\n\r\n", 0.5)

    def _redirect(self, location: str, delay: float = 0.0) -> None:
        if delay and self.stop.wait(delay):
            return
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def route_slow_redirect(self, n: str = "0") -> None:
        self._redirect(f"/slow-redirect/{int(n) + 1}", delay=1.5)

    def route_redirect(self, n: str = "0") -> None:
        self._redirect(f"/redirect/{int(n) + 1}")

    def route_to_loopback(self) -> None:
        self._redirect(f"http://127.0.0.1:{self.server.server_address[1]}/ok")

    def route_to_file(self) -> None:
        self._redirect("file:///etc/passwd")

    def route_endless(self, pace: str = "fast") -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()  # no length: the body never ends
        chunk = bytes(64 * 1024 if pace == "fast" else 512)
        while not self.stop.wait(0 if pace == "fast" else 0.1):
            self.wfile.write(chunk)

    def route_gzip_bomb(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(BOMB)))
        self.end_headers()
        self.wfile.write(BOMB)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hostile():
    _Hostile.stop.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _Hostile.stop.set()
    server.shutdown()
    server.server_close()


NAMES = {  # what the injected resolver answers: no DNS, no traffic
    "images.test": ["127.0.0.1"],
    "internal.test": ["10.1.2.3"],
    "metadata.test": ["169.254.169.254"],
    "unique-local.test": ["fd12:3456::1"],
    "multicast.test": ["224.0.0.251"],
    "reserved.test": ["240.0.0.1"],
    "unspecified.test": ["0.0.0.0"],
    "mapped.test": ["::ffff:127.0.0.1"],
    "shared.test": ["100.64.0.1"],
    "rebinding.test": ["10.0.0.1", "192.168.1.1"],
}


def _resolve(host: str, port: int) -> list[str]:
    if host not in NAMES:
        raise AssertionError(f"unexpected lookup of {host!r}")
    return NAMES[host]


LOCAL = ImageLimits(allow_private_urls=("127.0.0.1",), resolver=_resolve)


def _fetch_fails(url: str, limits: ImageLimits, error=ImageFetchError, within: float = 2.0, *fragments: str):
    started = time.monotonic()
    with pytest.raises(error) as info:
        load_image(url, 3, limits)
    elapsed = time.monotonic() - started
    assert info.value.index == 3 and elapsed < within, (elapsed, str(info.value))
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    return info.value


# ------------------------------------------------------------------------------------------------ time
def test_trickled_headers_stop_at_the_total_deadline(hostile):
    _fetch_fails(f"{hostile}/slow-headers", ImageLimits(url_timeout_s=1.5, allow_private_urls=True),
                 ImageFetchError, 1.5 + SLACK_S, "timed out after 1.5s")


def test_slow_redirect_chain_stops_at_the_total_deadline(hostile):
    _fetch_fails(f"{hostile}/slow-redirect/0", ImageLimits(url_timeout_s=3, allow_private_urls=True),
                 ImageFetchError, 3 + SLACK_S, "timed out after 3s")


def test_a_hanging_name_lookup_stops_at_the_deadline():
    def stuck(host: str, port: int) -> list[str]:  # a resolver that answers after 5 s
        time.sleep(5)
        return ["93.184.216.34"]

    _fetch_fails("http://slow-dns.test/x.png", ImageLimits(url_timeout_s=1, resolver=stuck), ImageFetchError,
                 1 + SLACK_S, "timed out after 1s")


def test_redirects_are_capped_at_five_hops(hostile):
    _Hostile.hits.clear()
    _fetch_fails(f"{hostile}/redirect/0", LOCAL, ImageFetchError, SLACK_S, "too many redirects (more than 5)")
    assert sum(count for path, count in _Hostile.hits.items() if path.startswith("/redirect/")) == 6


def test_endless_bodies_stop_at_the_deadline_or_the_byte_cap(hostile):
    _fetch_fails(f"{hostile}/endless/slow", ImageLimits(url_timeout_s=1.5, allow_private_urls=True),
                 ImageFetchError, 1.5 + SLACK_S, "timed out")
    _fetch_fails(f"{hostile}/endless/fast", ImageLimits(max_download_bytes=2 * 2**20, allow_private_urls=True),
                 ImageTooLargeError, 10 + SLACK_S, "exceeds the cap of 2,097,152 bytes")


def test_gzip_bomb_inflates_no_further_than_the_byte_cap(hostile):
    cap = 2 * 2**20
    tracemalloc.start()
    try:
        _fetch_fails(f"{hostile}/gzip-bomb", ImageLimits(max_download_bytes=cap, allow_private_urls=True),
                     ImageTooLargeError, 10 + SLACK_S, "exceeds the cap")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * cap, f"{peak:,} bytes held while refusing a {len(BOMB):,}-byte gzip bomb of 64 MiB"


def test_slow_urls_delay_no_other_call(bge_siglip_model_dir, hostile):
    """4 URLs whose server trickles (in one thread) and an in-memory image and a fast URL in other calls: the
    unrelated calls finish in their own time (they waited ~40 s for the shared decode pool before)."""
    vectorizer = Vectorizer.from_pretrained(bge_siglip_model_dir, allow_private_urls=["127.0.0.1"], url_timeout_s=3)
    vectorizer.encode_images([sample_image(40, 30)])  # warm
    failures: list[BaseException] = []

    def slow_call() -> None:
        try:
            vectorizer.encode_images([f"{hostile}/slow-headers?{i}" for i in range(4)])
        except BaseException as exc:  # noqa: BLE001 - recorded and checked below
            failures.append(exc)

    thread = threading.Thread(target=slow_call)
    thread.start()
    try:
        time.sleep(0.5)  # the slow downloads are in flight
        for unrelated in ([sample_image(120, 80, seed=3)], [f"{hostile}/ok"]):
            started = time.monotonic()
            assert vectorizer.encode_images(unrelated).shape == (1, vectorizer.dim)
            assert time.monotonic() - started < 2.0, unrelated
    finally:
        thread.join(3 + SLACK_S)
    assert not thread.is_alive()
    assert len(failures) == 1 and isinstance(failures[0], ImageFetchError) and "timed out" in str(failures[0])


# ------------------------------------------------------------------------------------------------ destinations
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "127.1", "0x7f.1", "[::1]", "0.0.0.0"])
def test_loopback_urls_are_refused_before_connecting(hostile, host):
    port = hostile.rsplit(":", 1)[1]
    _Hostile.hits.clear()
    error = _fetch_fails(f"http://{host}:{port}/ok", ImageLimits(), ImageFetchError, SLACK_S, "refused",
                         "allow_private_urls")
    assert "loopback" in str(error) or "unspecified" in str(error)
    assert _Hostile.hits["/ok"] == 0  # not one request reached the server


@pytest.mark.parametrize("name, kind", [
    ("internal.test", "private"), ("metadata.test", "link-local"), ("unique-local.test", "unique-local"),
    ("multicast.test", "multicast"), ("reserved.test", "reserved"), ("unspecified.test", "unspecified"),
    ("mapped.test", "loopback"), ("shared.test", "non-public"), ("rebinding.test", "private"),
    ("images.test", "loopback"),
])
def test_names_resolving_to_internal_addresses_are_refused(name, kind):
    limits = ImageLimits(resolver=_resolve)
    error = _fetch_fails(f"http://{name}/x.png", limits, ImageFetchError, SLACK_S, f"{name} resolves to",
                         f"a {kind} address", "allow_private_urls=True")
    assert error.source == f"http://{name}/x.png"


def test_redirects_are_checked_hop_by_hop(hostile):
    port = hostile.rsplit(":", 1)[1]
    # The first host is allowed by name; its redirect to a loopback address is not.
    by_name = ImageLimits(allow_private_urls=("images.test",), resolver=_resolve)
    assert load_image(f"http://images.test:{port}/ok", 0, by_name).size == (96, 64)
    _Hostile.hits.clear()
    _fetch_fails(f"http://images.test:{port}/to-loopback", by_name, ImageFetchError, SLACK_S, "redirect refused",
                 "127.0.0.1, a loopback address")
    assert (_Hostile.hits["/to-loopback"], _Hostile.hits["/ok"]) == (1, 0)
    _fetch_fails(f"{hostile}/to-file", LOCAL, ImageFetchError, SLACK_S, "only http and https")


def test_private_destinations_can_be_allowed_by_host_or_network(hostile):
    port = hostile.rsplit(":", 1)[1]
    for allowance in (True, ("127.0.0.0/8",), ("127.0.0.1",), ["localhost"], "10.0.0.0/8,127.0.0.1"):
        assert load_image(f"http://localhost:{port}/ok", 0, ImageLimits(allow_private_urls=allowance)).size == (96, 64)
    for not_enough in (("10.0.0.0/8",), ("images.test",), False):
        _fetch_fails(f"http://localhost:{port}/ok", ImageLimits(allow_private_urls=not_enough), ImageFetchError,
                     SLACK_S, "refused")
    with pytest.raises(ValueError, match="neither a host name nor an IP network"):
        ImageLimits(allow_private_urls=("not a host!",))


def test_options_keep_allow_private_urls_hashable(bge_siglip_model_dir):
    from bge_siglip_vectorizer import VectorizerOptions

    options = VectorizerOptions(allow_private_urls=["Images.Internal", "10.0.0.0/8"])
    assert options.allow_private_urls == ("images.internal", "10.0.0.0/8") and hash(options)
    assert options.limits().allow_private_urls == ("images.internal", "10.0.0.0/8")
    assert VectorizerOptions(allow_private_urls=[]).allow_private_urls is False


def test_allow_urls_false_refuses_file_uris_too(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(OK_PNG)
    offline = ImageLimits(allow_urls=False)
    for item in (path.as_uri(), "http://example.com/x.png"):
        with pytest.raises(ImageFetchError, match=r"allow_urls=False"):
            load_image(item, 0, offline)
    assert load_image(path, 0, offline).size == (96, 64)  # plain paths are allow_local_files' business


# ------------------------------------------------------------------------------------------------ local paths
def _path_fails(path, fragment: str, limits: ImageLimits = ImageLimits(), error=InvalidImageError) -> None:
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            load_image(str(path), 5, limits)
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)  # a regression that blocks fails here, not hangs
    started = time.monotonic()
    thread.start()
    thread.join(SLACK_S)
    assert not thread.is_alive(), f"reading {path} blocked"
    assert time.monotonic() - started < SLACK_S
    assert len(outcome) == 1 and isinstance(outcome[0], error), outcome
    assert outcome[0].index == 5 and fragment in str(outcome[0]), str(outcome[0])


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_devices_are_refused_without_reading(device):
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist on this system")
    _path_fails(device, "a character device")


def test_fifo_socket_directory_and_symlinks_to_devices_are_refused(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    _path_fails(fifo, "a FIFO")
    sock_path = tmp_path / "sock.png"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        _path_fails(sock_path, "a socket")
    finally:
        sock.close()
    _path_fails(tmp_path, "is a directory")
    link = tmp_path / "zero.png"
    link.symlink_to("/dev/zero")
    _path_fails(link, "a character device")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still there, never opened for reading


def test_file_size_cap_and_disabled_local_files(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(OK_PNG)
    _path_fails(path, "exceeds the cap of 100", ImageLimits(max_file_bytes=100), ImageTooLargeError)
    no_files = ImageLimits(allow_local_files=False)
    _path_fails(path, "allow_local_files=False", no_files)
    # A missing file reads the same: the file system is not asked, so nothing can be learnt about it.
    _path_fails(tmp_path / "missing.png", "allow_local_files=False", no_files)
    with pytest.raises(InvalidImageError, match="allow_local_files=False"):
        load_image(Path(path), 0, no_files)
    with pytest.raises(InvalidImageError, match="allow_local_files=False"):
        load_image(path.as_uri(), 0, no_files)


# ------------------------------------------------------------------------------------------------ memory
def test_pixel_limit_applies_to_arrays_and_pil_images(bge_siglip_model_dir):
    strict = Vectorizer.from_pretrained(bge_siglip_model_dir, max_image_pixels=10_000)
    for item in (np.zeros((101, 100, 3), np.uint8), np.zeros((101, 100), np.uint8), Image.new("RGB", (101, 100))):
        with pytest.raises(ImageTooLargeError, match="10,100 pixels exceeds the limit of 10,000"):
            strict.encode_images([np.zeros((100, 100, 3), np.uint8), item])
    assert strict.encode_images([np.zeros((100, 100, 3), np.uint8)]).shape == (1, strict.dim)


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose header claims ``width`` x ``height``: a bomb as far as any size check can tell."""
    data = bytearray(encode_image(sample_image(64, 48), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_pillows_own_guard_follows_max_image_pixels():
    claimed = _jpeg_claiming(16000, 12500)  # 200 MP: over twice Pillow's default, where Pillow itself refuses
    pillow_default = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageTooLargeError, match="exceeds the limit of 89,478,485"):
        open_image(claimed, 0)
    generous = ImageLimits(max_pixels=250_000_000)
    with open_image(claimed, 0, generous) as opened:  # Pillow's open-time guard let it through: the limit is ours
        opened.reduce_for(lambda w, h: (w // 8, h // 8))
        assert opened.pixels == 2000 * 1563  # and reduced decoding bounds what it would decode
    with pytest.raises(ImageTooLargeError, match="exceeds the limit of 1,000,000"):
        open_image(claimed, 0, ImageLimits(max_pixels=1_000_000))
    # Outside our decodes Pillow behaves as it always did, and its global setting was never changed.
    assert Image.MAX_IMAGE_PIXELS == pillow_default
    import io

    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(claimed))


def test_pixel_budget_bounds_pixels_in_flight_and_lets_a_huge_image_run_alone():
    budget = PixelBudget(100)
    in_flight, peak, lock = [0], [0], threading.Lock()

    def work(pixels: int) -> None:
        with budget.reserve(pixels):
            with lock:
                in_flight[0] += min(pixels, 100)
                peak[0] = max(peak[0], in_flight[0])
            time.sleep(0.02)
            with lock:
                in_flight[0] -= min(pixels, 100)

    threads = [threading.Thread(target=work, args=(p,)) for p in [40, 40, 40, 500, 30, 70, 10] * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert peak[0] <= 100 and budget.in_use == 0 and not any(t.is_alive() for t in threads)


_MEMORY_CHILD = r"""
import resource, sys
from PIL import Image
from bge_siglip_vectorizer import Vectorizer
from bge_siglip_vectorizer.testing.images import encode_image
model, budget = sys.argv[1], int(sys.argv[2])
vectorizer = Vectorizer.from_pretrained(model, device="cpu", num_workers=4, decode_budget_pixels=budget)
big = [encode_image(Image.new("RGB", (4000, 4000), (40 * i, 90, 200 - 30 * i)), "PNG") for i in range(4)]
vectorizer.encode_images([Image.new("RGB", (64, 64))])  # warm: model, pools and allocator
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
vectorizer.encode_images(big)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_decode_budget_bounds_memory_whatever_the_batch(bge_siglip_model_dir):
    """Four 16 MP PNGs in one call, four decode threads: with a budget of one image's pixels, the peak memory grows
    by about one decoded image (64 MB of RGBX; measured +64 MB, and +250 MB without the budget), not four."""
    result = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(bge_siglip_model_dir), str(16_000_000)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    grown_mb = float(result.stdout.split()[-1])
    assert grown_mb < 160, f"peak RSS grew by {grown_mb:.0f} MB for 4 x 16 MP with a one-image budget"


# ------------------------------------------------------------------------------------------------ text files
def test_non_utf8_texts_file_is_a_typed_error_naming_file_and_line(bge_siglip_model_dir, tmp_path, capsys):
    from bge_siglip_vectorizer.cli import main

    texts = tmp_path / "texts.txt"
    texts.write_bytes("eins\nzwei\nKäse\n".encode("latin-1"))  # 'ä' as one byte 0xe4: not UTF-8
    assert main(["encode", "--model", str(bge_siglip_model_dir), "--texts-file", str(texts)]) == 1
    assert f"{texts}:3: not valid UTF-8 (byte 0xe4 at column 2)" in capsys.readouterr().err


@pytest.mark.parametrize("name, content", [
    ("captions.jsonl", b'{"image": "a.png", "caption": "ok"}\n\n{"image": "a.png", "caption": "caf\xe9"}\n'),
    ("captions.csv", b"image,caption\na.png,ok\na.png,caf\xe9\n"),
])
def test_non_utf8_training_files_are_data_errors_naming_file_and_line(tmp_path, name, content):
    from bge_siglip_vectorizer.errors import DataError
    from bge_siglip_vectorizer.training.data import read_examples

    (tmp_path / "a.png").write_bytes(OK_PNG)
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=rf"{name}:3: not valid UTF-8 \(byte 0xe9 at column"):
        read_examples(tmp_path / name)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "x.png").write_bytes(OK_PNG)
    (folder / "x.txt").write_bytes(b"\xff\xfe caption")
    with pytest.raises(DataError, match=r"x.txt:1: not valid UTF-8 \(byte 0xff at column 1\)"):
        read_examples(folder)
