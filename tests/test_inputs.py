"""Every accepted image input kind, and every class of bad input: typed errors that name the item."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bge_siglip_vectorizer import (
    ImageFetchError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidTextError,
    UnsupportedImageTypeError,
    Vectorizer,
)
from bge_siglip_vectorizer.inputs import ImageLimits, list_image_files, load_image
from bge_siglip_vectorizer.testing.images import encode_image, sample_image


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    return sample_image(120, 80, seed=11)


@pytest.fixture(scope="module")
def png(picture) -> bytes:
    return encode_image(picture, "PNG")


def test_every_input_kind_gives_the_same_vector(bge_siglip_vectorizer, picture, png, tmp_path, image_server):
    path = tmp_path / "picture.png"
    path.write_bytes(png)
    b64 = base64.b64encode(png).decode()
    inputs = [
        picture,
        np.asarray(picture),
        png,
        bytearray(png),
        memoryview(png),
        str(path),
        path,
        path.as_uri(),
        b64,
        f"data:image/png;base64,{b64}",
        f"  data:image/png;base64,{b64[:40]}\n{b64[40:]}  ",  # wrapped and padded, as pasted
        np.dstack([np.asarray(picture), np.full(picture.size[::-1], 255, np.uint8)]),  # opaque RGBA array
    ]
    vectors = bge_siglip_vectorizer.encode_images(inputs)
    assert vectors.shape == (len(inputs), bge_siglip_vectorizer.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, np.broadcast_to(vectors[0], vectors.shape), atol=1e-6)
    # A URL served over real HTTP decodes to the served file's image (the test server is on loopback: allowed here).
    local = Vectorizer(bge_siglip_vectorizer.components, allow_private_urls=["127.0.0.1"])
    served = local.encode_images([f"{image_server}/ok.png", sample_image(96, 64, seed=7)])
    np.testing.assert_allclose(served[0], served[1], atol=1e-6)


def test_grayscale_arrays_and_modes_convert_to_rgb(bge_siglip_vectorizer):
    gray = np.asarray(sample_image(50, 40, "L", seed=2))
    vectors = bge_siglip_vectorizer.encode_images([gray, gray[:, :, None], Image.fromarray(gray).convert("RGB")])
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)
    np.testing.assert_allclose(vectors[1], vectors[2], atol=1e-6)


def test_exif_orientation_is_applied(bge_siglip_vectorizer, tmp_path):
    upright = sample_image(60, 100, seed=4)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # pixels as a sideways camera stores them
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation 6: the viewer rotates 90 degrees clockwise, undoing ROTATE_90
    path = tmp_path / "rotated.png"
    stored.save(path, exif=exif)
    decoded = load_image(str(path))
    assert decoded.size == upright.size
    vectors = bge_siglip_vectorizer.encode_images([path, upright, stored])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    assert not np.allclose(vectors[0], vectors[2], atol=1e-4)


def test_list_image_files_expands_folders(tmp_path, png):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.JPG", "sub/c.webp", "notes.txt"):
        (tmp_path / name).write_bytes(png)
    names = [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)]
    assert names == ["a.JPG", "b.png", "sub/c.webp"]
    assert list_image_files(tmp_path, recursive=False) == [tmp_path / "a.JPG", tmp_path / "b.png"]


# ------------------------------------------------------------------------------------------------ bad input
def _fails(vectorizer, items, error, index, *fragments):
    with pytest.raises(error) as info:
        vectorizer.encode_images(items)
    assert info.value.index == index
    message = str(info.value)
    assert message.startswith(f"image #{index}")
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def test_missing_file(bge_siglip_vectorizer, png):
    _fails(bge_siglip_vectorizer, [png, "nope/missing.jpg"], InvalidImageError, 1, "no such file", "nope/missing.jpg")


def test_directory_is_not_an_image(bge_siglip_vectorizer, png, tmp_path):
    _fails(bge_siglip_vectorizer, [png, tmp_path], InvalidImageError, 1, "directory", str(tmp_path))


def test_sockets_are_not_image_files(bge_siglip_vectorizer, png, tmp_path):
    # Only regular files are opened (FIFOs, devices: tests/test_hostile_inputs.py).
    import socket

    path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    try:
        _fails(bge_siglip_vectorizer, [png, png, str(path)], InvalidImageError, 2, "not a regular file (a socket)",
               str(path))
    finally:
        sock.close()



def test_not_an_image(bge_siglip_vectorizer, png, tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("hello, I am text")
    _fails(bge_siglip_vectorizer, [png, path], InvalidImageError, 1, "not an image", "notes.jpg")
    _fails(bge_siglip_vectorizer, [b"GIF89a garbage"], InvalidImageError, 0)


def test_truncated_image(bge_siglip_vectorizer, png, tmp_path):
    jpeg = encode_image(sample_image(300, 200, seed=1), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg[: len(jpeg) // 2])
    _fails(bge_siglip_vectorizer, [png, path], InvalidImageError, 1, "truncated", "cut.jpg")
    _fails(bge_siglip_vectorizer, [png[: len(png) // 2]], InvalidImageError, 0)


def test_decompression_bomb_guard_is_configurable(bge_siglip_model_dir, png):
    strict = Vectorizer.from_pretrained(bge_siglip_model_dir, max_image_pixels=5000)
    error = _fails(strict, [encode_image(sample_image(50, 50), "PNG"), png], ImageTooLargeError, 1, "9,600 pixels")
    assert isinstance(error, InvalidImageError)
    assert strict.encode_images([encode_image(sample_image(50, 50), "PNG")]).shape == (1, strict.dim)


def test_unsupported_url_scheme(bge_siglip_vectorizer, png):
    _fails(bge_siglip_vectorizer, [png, "ftp://example.com/a.png"], ImageFetchError, 1, "unsupported URL scheme 'ftp'")


LOOPBACK = ImageLimits(allow_private_urls=("127.0.0.1",))  # the test server's address, allowed explicitly


def test_url_errors(bge_siglip_model_dir, image_server):
    local = Vectorizer.from_pretrained(bge_siglip_model_dir, allow_private_urls=True)
    _fails(local, [f"{image_server}/missing.png"], ImageFetchError, 0, "HTTP 404", "/missing.png")


def test_url_too_large(image_server):
    image = load_image(f"{image_server}/big.png", 0, LOOPBACK)
    assert image.size == (900, 900)
    with pytest.raises(ImageTooLargeError) as info:
        load_image(f"{image_server}/big.png", 4, ImageLimits(max_download_bytes=10_000, allow_private_urls=True))
    assert "exceeds the cap of 10,000 bytes" in str(info.value) and info.value.index == 4


def test_url_too_slow(image_server):
    with pytest.raises(ImageFetchError) as info:
        load_image(f"{image_server}/slow.png", 0, ImageLimits(url_timeout_s=0.5, allow_private_urls=True))
    assert "timed out" in str(info.value)


def test_urls_can_be_disabled(bge_siglip_model_dir, image_server):
    offline = Vectorizer.from_pretrained(bge_siglip_model_dir, allow_urls=False)
    _fails(offline, [f"{image_server}/ok.png"], ImageFetchError, 0, "disabled")


def test_bad_base64(bge_siglip_vectorizer, png):
    _fails(bge_siglip_vectorizer, [png, "data:image/png;base64,@@@not*base64@@@"], InvalidImageError, 1, "bad base64")
    _fails(bge_siglip_vectorizer, ["data:image/png,rawbytes"], InvalidImageError, 0, "not base64-encoded")
    # Valid base64 that is not an image.
    _fails(bge_siglip_vectorizer, [base64.b64encode(b"x" * 300).decode()], InvalidImageError, 0, "not an image")


def test_unsupported_types_and_arrays(bge_siglip_vectorizer, png):
    _fails(bge_siglip_vectorizer, [png, 42], UnsupportedImageTypeError, 1, "int")
    _fails(bge_siglip_vectorizer, [np.zeros((8, 8, 3), np.float32)], InvalidImageError, 0, "uint8")
    _fails(bge_siglip_vectorizer, [np.zeros((8, 8, 5), np.uint8)], InvalidImageError, 0, "shape")
    _fails(bge_siglip_vectorizer, [np.zeros((0, 8, 3), np.uint8)], InvalidImageError, 0, "no pixels")


def test_errors_are_value_errors_and_name_the_first_bad_item(bge_siglip_vectorizer, png):
    with pytest.raises(ValueError) as info:
        bge_siglip_vectorizer.encode_images([png] * 70 + [b"bad"] + [png] * 5 + ["missing.png"])
    assert info.value.index == 70


def test_bad_texts(bge_siglip_vectorizer):
    for texts, index, fragment in ((["ok", ""], 1, "empty text"), (["ok", "ok", " \n\t"], 2, "empty text"), ([None], 0, "expected a string")):
        with pytest.raises(InvalidTextError) as info:
            bge_siglip_vectorizer.encode_texts(texts)
        assert info.value.index == index and str(info.value).startswith(f"text #{index}: {fragment}")


def test_a_single_item_instead_of_a_list_is_refused(bge_siglip_vectorizer, png):
    with pytest.raises(ValueError, match="wrap it in a list"):
        bge_siglip_vectorizer.encode_texts("just one")
    with pytest.raises(ValueError, match="wrap it in a list"):
        bge_siglip_vectorizer.encode_images(png)


def test_long_text_is_truncated_not_refused(bge_siglip_vectorizer):
    long = "ein sehr langer Satz " * 2000
    vectors = bge_siglip_vectorizer.encode_texts([long, long + " mit mehr Text am Ende"])
    # Both are cut at the tower's limit before the tails differ, so their vectors are the same.
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    assert bge_siglip_vectorizer.text_max_length == 512


def test_empty_lists_give_empty_arrays(bge_siglip_vectorizer):
    assert bge_siglip_vectorizer.encode_images([]).shape == (0, bge_siglip_vectorizer.dim)
    assert bge_siglip_vectorizer.encode_texts([]).shape == (0, bge_siglip_vectorizer.dim)


def test_path_objects_are_supported(tmp_path, png):
    path = Path(tmp_path) / "x.png"
    path.write_bytes(png)
    assert load_image(path).size == (120, 80)


def test_load_base64_image_never_opens_paths_or_urls(png, tmp_path, image_server):
    from bge_siglip_vectorizer.inputs import load_base64_image

    b64 = base64.b64encode(png).decode()
    assert load_base64_image(b64).size == load_base64_image(f"data:image/png;base64,{b64}").size == (120, 80)
    url_safe = base64.urlsafe_b64encode(png).decode().rstrip("=")
    assert load_base64_image(url_safe).size == (120, 80)
    path = tmp_path / "secret.png"
    path.write_bytes(png)
    for remote_controlled in (str(path), path.as_uri(), f"{image_server}/ok.png", "http://127.0.0.1:1/x.png"):
        with pytest.raises(InvalidImageError, match="bad base64"):
            load_base64_image(remote_controlled, 0)
    with pytest.raises(InvalidImageError, match="expected a base64 string"):
        load_base64_image(b"bytes", 0)
    with pytest.raises(InvalidImageError, match="empty image string"):
        load_base64_image("data:image/png;base64,", 0)


def test_malformed_urls_are_typed_errors(bge_siglip_vectorizer, png):
    _fails(bge_siglip_vectorizer, [png, "http://[::1/x.png"], ImageFetchError, 1, "malformed URL")
    _fails(bge_siglip_vectorizer, ["http://\x00/x.png"], ImageFetchError, 0, "malformed URL", "invalid host")


def test_unencodable_text_is_a_typed_error_naming_the_item(bge_siglip_vectorizer):
    for bad in ("a\ud800b", "\udfff"):
        with pytest.raises(InvalidTextError) as info:
            bge_siglip_vectorizer.encode_texts(["fine", bad])
        assert info.value.index == 1 and "surrogate" in str(info.value)


# ------------------------------------------------------------------------------------------------ formats users have
def test_heic_avif_and_large_png_screenshots_decode(bge_siglip_vectorizer, tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")  # in the test extra; what the [heif] extra adds for users

    from bge_siglip_vectorizer.testing.images import photo_image

    photo = photo_image(640, 480, seed=5)
    heic = tmp_path / "photo.heic"
    pillow_heif.from_pillow(photo).save(heic, quality=95)  # written without registering PIL's opener
    avif = tmp_path / "photo.avif"
    photo.save(avif, quality=95)
    screenshot = tmp_path / "screen.png"
    photo_image(2560, 1440, "RGBA", seed=6).save(screenshot)
    vectors = bge_siglip_vectorizer.encode_images([photo, heic, avif, screenshot])
    assert (vectors[0] @ vectors[1]) > 0.99 and (vectors[0] @ vectors[2]) > 0.99  # lossy copies of one picture
    assert load_image(screenshot).size == (2560, 1440)


def test_a_missing_heif_plugin_is_named(bge_siglip_vectorizer, monkeypatch):
    from PIL import Image as PILImage

    from bge_siglip_vectorizer import inputs

    heic = b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    monkeypatch.setattr(inputs, "_register_heif", lambda: False)  # as without pillow-heif
    monkeypatch.setattr(PILImage, "ID", [name for name in PILImage.ID if name != "HEIF"])
    _fails(bge_siglip_vectorizer, [heic], InvalidImageError, 0, "HEIC/HEIF images need pillow-heif",
           "bge-siglip-vectorizer[heif]")


def test_decode_base64_gives_the_file_bytes_and_never_opens_paths(bge_siglip_vectorizer, png, tmp_path):
    from bge_siglip_vectorizer import decode_base64

    b64 = base64.b64encode(png).decode()
    assert decode_base64(b64) == decode_base64(f"data:image/png;base64,{b64}") == png
    path = tmp_path / "secret.png"
    path.write_bytes(png)
    with pytest.raises(InvalidImageError, match="bad base64"):
        decode_base64(str(path), 3)
    # What a server does with it: bytes through the normal path (reduced decoding, pixel budget).
    vectors = bge_siglip_vectorizer.encode_images([decode_base64(b64), png])
    np.testing.assert_array_equal(vectors[0], vectors[1])


def test_decode_threads_follow_the_usable_cpus(tmp_path, monkeypatch):
    from bge_siglip_vectorizer import available_cpus

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr("pathlib.Path.read_text", _fake_cgroup(tmp_path, Path.read_text))
    assert available_cpus(tmp_path / "none") == 8  # no cgroup files: the affinity mask
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cpu.max").write_text("150000 100000\n")  # a quota of 1.5 CPUs
    assert available_cpus(tmp_path / "v2") == 2
    (tmp_path / "v2" / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path / "v2") == 8
    (tmp_path / "v1" / "cpu").mkdir(parents=True)
    (tmp_path / "v1" / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "v1" / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path / "v1") == 3


def _fake_cgroup(root, read_text):
    """/proc/self/cgroup as in a container (its own cgroup namespace: "0::/"); other files as they are."""

    def fake(self, *args, **kwargs):
        if str(self) == "/proc/self/cgroup":
            return "0::/\n"
        return read_text(self, *args, **kwargs)

    return fake
