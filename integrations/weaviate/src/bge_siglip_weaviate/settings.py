"""Server settings: one frozen dataclass, filled from command-line options or ``BGE_SIGLIP_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ServerSettings", "ENV_PREFIX", "DEFAULT_MAX_IMAGE_PIXELS"]

ENV_PREFIX = "BGE_SIGLIP_"
#: The server's decompression-bomb guard: 40 megapixels (the core's library default is PIL's ~89 MP).
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


@dataclass(frozen=True)
class ServerSettings:
    """Everything the inference server needs besides host and port.

    ``api_key``: when set, ``/vectorize`` and ``/meta`` require ``Authorization: Bearer <key>`` or
    ``X-API-Key: <key>``; the probes ``/.well-known/*`` stay open. Weaviate's multi2vec-clip module sends no
    credentials, so only set it when something in between (a proxy) adds the header, or for direct clients.

    ``max_image_pixels``: images above it are refused with 413 before their pixels are decoded. Lower than the
    core's default (PIL's ~89 MP): a server decodes what remote callers send, up to ``max_concurrent_decodes``
    full-size images at once (a 40 MP RGB image is 120 MB decoded).

    ``max_queue_wait_s``: a request not taken by the batch worker within this many seconds of its admission is
    answered 503 instead of computed. Weaviate gives up after ``MODULES_CLIENT_TIMEOUT`` (50 s by default), so
    work older than that would be computed for nobody.

    ``max_concurrent_decodes``: images decoded (full size, before patchifying) at once across all requests;
    ``None``: the number of CPUs.
    """

    model: str
    device: str | None = None
    dtype: str | None = None
    max_num_patches: int | None = None
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    batching: bool = True
    max_queue_items: int = 1024
    max_items_per_request: int = 256
    max_body_bytes: int = 64 * 1024 * 1024
    max_queue_wait_s: float = 45.0
    max_concurrent_decodes: int | None = None
    api_key: str | None = None

    def __post_init__(self) -> None:
        checks = {
            "max_batch_size": self.max_batch_size >= 1,
            "max_wait_ms": self.max_wait_ms >= 0,
            "max_queue_items": self.max_queue_items >= 1,
            "max_items_per_request": self.max_items_per_request >= 1,
            "max_body_bytes": self.max_body_bytes >= 1,
            "max_queue_wait_s": self.max_queue_wait_s > 0,
            "max_image_pixels": self.max_image_pixels is None or self.max_image_pixels >= 1,
            "max_concurrent_decodes": self.max_concurrent_decodes is None or self.max_concurrent_decodes >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name} out of range: {getattr(self, name)!r}")
        if self.max_items_per_request > self.max_queue_items:
            # A request bigger than the whole queue could never be admitted: it would get 503 forever.
            raise ValueError(
                f"max_items_per_request ({self.max_items_per_request}) must not exceed max_queue_items "
                f"({self.max_queue_items})"
            )
        if self.api_key == "":
            object.__setattr__(self, "api_key", None)

    @property
    def decode_slots(self) -> int:
        """How many images may be decoded at full size at once."""
        return self.max_concurrent_decodes or os.cpu_count() or 1


def env(name: str, default: str | None = None) -> str | None:
    """``BGE_SIGLIP_<NAME>`` from the environment (container-friendly defaults for every option)."""
    return os.environ.get(ENV_PREFIX + name.upper(), default)
