"""Server settings: declared once, as the fields of :class:`ServerSettings`.

The command line (``bge-siglip serve --help``) and the ``BGE_SIGLIP_<OPTION>`` environment variables are derived
from these fields (:mod:`bge_siglip_vectorizer.options`), so a container needs no command line and a new setting
needs no second declaration. The model options (device, dtype, backend, max_num_patches, max_image_pixels, ...)
are the core's :class:`~bge_siglip_vectorizer.VectorizerOptions`, inherited with the core's defaults: the server
refuses no image the library accepts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bge_siglip_vectorizer import MODEL_NAME, VectorizerOptions, available_cpus, option

__all__ = ["ServerSettings", "ENV_PREFIX"]

ENV_PREFIX = "BGE_SIGLIP_"


def _mebibytes(text: str) -> int:
    return int(float(text) * 2**20)


def _show_mebibytes(size: int) -> str:
    return f"{size / 2**20:g}"


@dataclass(frozen=True, kw_only=True)
class ServerSettings(VectorizerOptions):
    """Everything the inference server needs.

    ``api_key``: when set, ``/vectorize``, ``/meta`` and ``/v1/*`` require ``Authorization: Bearer <key>`` or
    ``X-API-Key: <key>`` (UTF-8); the probes ``/.well-known/*`` stay open. Weaviate's multi2vec-clip module sends no
    credentials, so only set it when something in between (a proxy) adds the header, or for direct clients.

    ``max_queue_wait_s``: how long a request may *wait* (for room in the queue, for its turn to buffer its body, for
    the batch worker) before it is answered 503 instead of computed. Its own upload and decoding do not count.
    Weaviate gives up after ``MODULES_CLIENT_TIMEOUT`` (50 s by default) and never retries, so a request is held
    (back-pressure) for as long as that leaves room, not refused early.

    ``max_batch_size``: ``None`` (the default) lets the server choose its forward batch sizes at start-up from what
    batching gains on this hardware, and refine them from the forwards it serves (:mod:`.batch_sizes`); a number
    pins one size for images and texts.
    """

    model: str = option(help="model directory (from `bge-siglip` save/convert/train) or hub id")
    host: str = option("127.0.0.1", group="process", help="bind address; 0.0.0.0 in a container")
    port: int = option(8080, min=1, max=65535, group="process",
                       help="port (8080, like the reference container; pick another when Weaviate runs on the same "
                            "host, it listens on 8080 too)")
    # Weaviate sends base64 only and /vectorize never fetches; URLs are an opt-in of the OpenAI-compatible API.
    # A server never opens a path a remote caller names (base64 and, if allowed, URLs only).
    allow_local_files: bool = option(False, cli=False, help="never: remote callers do not name server files")
    max_file_bytes: int | None = option(None, cli=False, help="unused: no local files")
    allow_urls: bool = option(False, group="security",
                              help="fetch http(s) image URLs sent to /v1/embeddings with modality 'image' (default "
                                   "off: a server fetching URLs for remote callers can be pointed at internal "
                                   "addresses; /vectorize never fetches, and no endpoint opens file paths)")
    max_batch_size: int | None = option(None, min=1, group="cross-request batching",
                                        help="pin the most items encoded in one forward pass (default: chosen at "
                                             "start-up from what batching gains on this hardware)")
    adaptive_max_batch_size: int = option(64, min=1, group="cross-request batching",
                                          help="largest forward batch the start-up measurement tries")
    batch_gain_margin: float = option(0.05, min=0, max=1, group="cross-request batching",
                                      help="a batch size is only worth it if it raises measured throughput by at "
                                           "least this fraction over the best smaller one")
    batch_probe_budget_s: float = option(30.0, min=0, group="cross-request batching",
                                         help="seconds the start-up measurement may take per modality; when spent, "
                                              "the best size measured so far is used")
    refine_batch_sizes: bool = option(True, group="cross-request batching",
                                      help="no online refinement: keep the batch sizes measured at start-up "
                                           "(by default the server goes on measuring them from the forwards it "
                                           "serves, and tries the neighbouring sizes under load)")
    max_wait_ms: float = option(5.0, min=0, group="cross-request batching",
                                help="how long a batch waits for more requests once it has one (never once the "
                                     "batch is full)")
    batching: bool = option(True, group="cross-request batching",
                            help="no batching: one request per forward round, like the reference container "
                                 "(for benchmarks)")
    max_queue_items: int = option(1024, min=1, flag="--max-queue", group="limits",
                                  help="items admitted and not yet answered; further requests wait their turn")
    max_items_per_request: int = option(256, min=1, group="limits", help="texts + images in one request, else 413")
    max_body_bytes: int = option(64 * 2**20, min=1, flag="--max-body-mb", parse=_mebibytes, metavar="MB",
                                 show=_show_mebibytes, group="limits", help="request body size limit in MiB, else 413")
    max_pending_body_bytes: int = option(256 * 2**20, min=1, flag="--max-pending-body-mb", parse=_mebibytes,
                                         metavar="MB", show=_show_mebibytes, group="limits",
                                         help="request bodies held in memory at once, in MiB, until their images "
                                              "are decoded; further requests wait their turn before being read")
    max_queue_wait_s: float = option(45.0, above=0, group="limits",
                                     help="answer 503 instead of computing a request that waited longer (for room, "
                                          "or for the batch worker; its own decoding not counted); keep it below "
                                          "Weaviate's MODULES_CLIENT_TIMEOUT (50s)")
    max_concurrent_decodes: int | None = option(None, min=1, group="limits",
                                                help="images decoded at full size at once, across all requests "
                                                     "(default: the number of CPUs)")
    header_timeout_s: float = option(10.0, above=0, group="limits",
                                     help="close a connection that has not sent a request's headers this many "
                                          "seconds after it opened or got its last answer (slowloris guard)")
    body_timeout_s: float = option(30.0, above=0, group="limits",
                                   help="answer 408 to a request whose body has not arrived this many seconds "
                                        "after its headers")
    api_key: str | None = option(None, group="security",
                                 help="require 'Authorization: Bearer KEY' or 'X-API-Key: KEY' on /vectorize, /meta "
                                      "and /v1/* (Weaviate itself sends none; default off)")
    served_model_name: str = option(MODEL_NAME, group="OpenAI-compatible API",
                                    help="the model id /v1/models lists and /v1/embeddings answers to")
    graceful_timeout: float = option(30.0, min=0, group="process",
                                     help="seconds in-flight requests get to finish on SIGTERM")
    log_level: str = option("info", choices=("critical", "error", "warning", "info", "debug"), group="process",
                            help="log level")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_items_per_request > self.max_queue_items:
            # A request bigger than the whole queue could never be admitted: it would wait forever.
            raise ValueError(
                f"max_items_per_request ({self.max_items_per_request}) must not exceed max_queue_items "
                f"({self.max_queue_items})"
            )
        if self.max_body_bytes > self.max_pending_body_bytes:
            raise ValueError(
                f"max_body_bytes ({self.max_body_bytes}) must not exceed max_pending_body_bytes "
                f"({self.max_pending_body_bytes}): a body that large could never be read"
            )
        if self.api_key == "":
            object.__setattr__(self, "api_key", None)

    @property
    def decode_slots(self) -> int:
        """How many images may be decoded at full size at once."""
        return self.max_concurrent_decodes or available_cpus()

    def vectorizer_options(self) -> VectorizerOptions:
        """The core options among these settings (what the model is loaded with)."""
        return VectorizerOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(VectorizerOptions)})
