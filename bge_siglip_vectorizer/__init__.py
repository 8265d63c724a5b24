"""BGE-SigLIP: a SigLIP-2 NaFlex vision tower projected into BGE-M3's multilingual text space.

``Vectorizer`` is the one way to get vectors; the database adapters in ``integrations/`` all call it.
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    BGESigLIPError,
    DataError,
    ImageFetchError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidInputError,
    InvalidTextError,
    MissingProjectorError,
    ModelLoadError,
    UnsupportedImageTypeError,
)
from .vectorizer import MODEL_NAME, EncodeStats, Vectorizer, shared_vectorizer  # noqa: E402

__all__ = [
    "__version__",
    "Vectorizer",
    "MODEL_NAME",
    "EncodeStats",
    "shared_vectorizer",
    "BGESigLIPError",
    "DataError",
    "ImageFetchError",
    "ImageTooLargeError",
    "InvalidImageError",
    "InvalidInputError",
    "InvalidTextError",
    "MissingProjectorError",
    "ModelLoadError",
    "UnsupportedImageTypeError",
]
