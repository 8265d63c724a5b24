"""BGE-SigLIP: a SigLIP-2 NaFlex vision tower projected into BGE-M3's multilingual text space.

``Vectorizer`` is the one way to get vectors; the database adapters in ``integrations/`` all call it, and import
only what this module exports (plus :mod:`.testing` in their tests).
"""

from ._version import __version__
from .errors import (  # noqa: E402
    BGESigLIPError,
    DataError,
    ExportError,
    ImageFetchError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidInputError,
    InvalidTextError,
    MissingHeadError,
    MissingProjectorError,
    ModelLoadError,
    ModelMismatchError,
    OptionalDependencyError,
    UnsupportedImageTypeError,
)
from .cli import Command  # noqa: E402
from .bulk import (  # noqa: E402
    IngestBatch,
    IngestResult,
    OnError,
    ingest,
    ingest_items,
    provenance,
)
from .ids import ID_NAMESPACE, Modality, content_id  # noqa: E402
from .inputs import ImageLimits, decode_base64, list_image_files, load_base64_image, open_image, validate_text  # noqa: E402
from .options import add_options, check_options, option, options_from_args, vector_option_names  # noqa: E402
from .preprocess import PatchedImage  # noqa: E402
from .targets import STORE_ADAPTERS, StoreTarget  # noqa: E402
from .references import MODEL_DIR_ENV, model_reference, resolve_model_reference  # noqa: E402
from .text_outputs import SparseEmbedding, TextEncodings  # noqa: E402
from .vectorizer import (  # noqa: E402
    MODEL_NAME,
    EncodeStats,
    ImagePreparer,
    Vectorizer,
    VectorizerOptions,
    available_cpus,
    shared_vectorizer,
)

__all__ = [
    "__version__",
    "Vectorizer",
    "VectorizerOptions",
    "MODEL_NAME",
    "EncodeStats",
    "shared_vectorizer",
    "PatchedImage",
    "ImagePreparer",
    "ingest",
    "ingest_items",
    "IngestBatch",
    "IngestResult",
    "Modality",
    "OnError",
    "content_id",
    "provenance",
    "ID_NAMESPACE",
    "StoreTarget",
    "STORE_ADAPTERS",
    "SparseEmbedding",
    "TextEncodings",
    "ImageLimits",
    "list_image_files",
    "load_base64_image",
    "open_image",
    "decode_base64",
    "available_cpus",
    "validate_text",
    "Command",
    "option",
    "check_options",
    "add_options",
    "options_from_args",
    "vector_option_names",
    "MODEL_DIR_ENV",
    "model_reference",
    "resolve_model_reference",
    "BGESigLIPError",
    "DataError",
    "ExportError",
    "ImageFetchError",
    "ImageTooLargeError",
    "InvalidImageError",
    "InvalidInputError",
    "InvalidTextError",
    "MissingHeadError",
    "MissingProjectorError",
    "ModelLoadError",
    "ModelMismatchError",
    "OptionalDependencyError",
    "UnsupportedImageTypeError",
]
