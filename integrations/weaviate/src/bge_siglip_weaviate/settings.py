"""Server settings: declared once, as the fields of :class:`ServerSettings`.

The command line (``bge-siglip serve --help``) and the ``BGE_SIGLIP_<OPTION>`` environment variables are derived
from these fields (:mod:`bge_siglip_vectorizer.options`), so a container needs no command line and a new setting
needs no second declaration. The model options (device, dtype, backend, max_num_patches, max_image_pixels, ...)
are the core's :class:`~bge_siglip_vectorizer.VectorizerOptions`, inherited.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from bge_siglip_vectorizer import VectorizerOptions, check_options, option

__all__ = ["ServerSettings", "ENV_PREFIX", "DEFAULT_MAX_IMAGE_PIXELS"]

ENV_PREFIX = "BGE_SIGLIP_"
#: The server's decompression-bomb guard: 40 megapixels (the core's library default is PIL's ~89 MP).
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


def _mebibytes(text: str) -> int:
    return int(float(text) * 2**20)


@dataclass(frozen=True, kw_only=True)
class ServerSettings(VectorizerOptions):
    """Everything the inference server needs.

    ``api_key``: when set, ``/vectorize`` and ``/meta`` require ``Authorization: Bearer <key>`` or
    ``X-API-Key: <key>``; the probes ``/.well-known/*`` stay open. Weaviate's multi2vec-clip module sends no
    credentials, so only set it when something in between (a proxy) adds the header, or for direct clients.

    ``max_queue_wait_s``: a request not taken by the batch worker within this many seconds of its admission is
    answered 503 instead of computed. Weaviate gives up after ``MODULES_CLIENT_TIMEOUT`` (50 s by default), so
    work older than that would be computed for nobody.
    """

    model: str = option(help="model directory (from `bge-siglip` save/convert/train) or hub id")
    host: str = option("127.0.0.1", group="process", help="bind address; 0.0.0.0 in a container")
    port: int = option(8080, min=1, max=65535, group="process", help="port (8080, like the reference container)")
    # A server decodes what remote callers send: lower than the core's default, see DEFAULT_MAX_IMAGE_PIXELS.
    max_image_pixels: int | None = option(DEFAULT_MAX_IMAGE_PIXELS, min=1, group="limits",
                                          help="refuse larger images with 413, checked before decoding "
                                               "(decompression-bomb guard)")
    # Images reach the server as base64 only; it never opens paths or URLs for a remote caller.
    allow_urls: bool = option(False, cli=False, help="never: the server decodes base64 images only")
    url_timeout_s: float | None = option(None, cli=False, help="unused: no URLs")
    max_batch_size: int = option(32, min=1, group="cross-request batching",
                                 help="most items (texts + images) encoded together")
    max_wait_ms: float = option(5.0, min=0, group="cross-request batching",
                                help="how long a batch waits for more requests once it has one")
    batching: bool = option(True, group="cross-request batching",
                            help="no batching: one request per forward round, like the reference container "
                                 "(for benchmarks)")
    max_queue_items: int = option(1024, min=1, flag="--max-queue", group="limits",
                                  help="items admitted and unanswered before answering 503")
    max_items_per_request: int = option(256, min=1, group="limits", help="texts + images in one request, else 413")
    max_body_bytes: int = option(64 * 2**20, min=1, flag="--max-body-mb", parse=_mebibytes, metavar="MB",
                                 show=lambda size: f"{size / 2**20:g}", group="limits",
                                 help="request body size limit in MiB, else 413")
    max_queue_wait_s: float = option(45.0, above=0, group="limits",
                                     help="answer 503 instead of computing a request that waited longer for the "
                                          "batch worker; keep it below Weaviate's MODULES_CLIENT_TIMEOUT (50s)")
    max_concurrent_decodes: int | None = option(None, min=1, group="limits",
                                                help="images decoded at full size at once, across all requests "
                                                     "(default: the number of CPUs)")
    api_key: str | None = option(None, group="security",
                                 help="require 'Authorization: Bearer KEY' or 'X-API-Key: KEY' on /vectorize and "
                                      "/meta (Weaviate itself sends none; default off)")
    graceful_timeout: float = option(30.0, min=0, group="process",
                                     help="seconds in-flight requests get to finish on SIGTERM")
    log_level: str = option("info", choices=("critical", "error", "warning", "info", "debug"), group="process",
                            help="log level")

    def __post_init__(self) -> None:
        check_options(self)
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

    def vectorizer_options(self) -> VectorizerOptions:
        """The core options among these settings (what the model is loaded with)."""
        return VectorizerOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(VectorizerOptions)})
