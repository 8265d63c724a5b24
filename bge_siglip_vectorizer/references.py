"""Model references that stay valid on another machine: what a store persists to rebuild its embedding function.

A store that records how to rebuild its embedding function (Chroma's collection config; LanceDB's and Milvus'
equivalents) must not record a path that exists only on the machine that created it. :func:`model_reference` gives
the form to store, :func:`resolve_model_reference` turns it back into something ``from_pretrained`` loads:

* a hub id is stored as given (``org/bge-siglip``);
* ``$BGE_SIGLIP_MODEL_DIR/<name>`` names a directory under the folder that the environment variable
  ``BGE_SIGLIP_MODEL_DIR`` points at *on the machine that opens the store*. Give it literally, or give a local
  directory inside ``$BGE_SIGLIP_MODEL_DIR`` while the variable is set, and this form is stored;
* any other local directory is stored as an absolute path (valid on this machine, or one with the same layout).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from .errors import ModelLoadError

__all__ = ["MODEL_DIR_ENV", "model_reference", "resolve_model_reference"]

#: The environment variable that portable model references are relative to.
MODEL_DIR_ENV = "BGE_SIGLIP_MODEL_DIR"
_PREFIX = f"${MODEL_DIR_ENV}/"


def _relative_part(reference: str) -> str:
    name = PurePosixPath(reference[len(_PREFIX):])
    if not name.parts or name.is_absolute() or ".." in name.parts:
        raise ModelLoadError(f"model reference {reference!r}: expected {_PREFIX}<directory name> (no '..')")
    return name.as_posix()


def model_reference(model: str | os.PathLike[str]) -> str:
    """The form of ``model`` to persist: portable where possible (see the module docstring)."""
    text = os.fspath(model)
    if text.startswith(_PREFIX):
        return _PREFIX + _relative_part(text)
    path = Path(text).expanduser()
    if not path.exists():
        return text  # a hub id (or a missing path, which loading reports)
    resolved = path.resolve()
    root = os.environ.get(MODEL_DIR_ENV)
    if root:
        try:
            return _PREFIX + resolved.relative_to(Path(root).expanduser().resolve()).as_posix()
        except ValueError:
            pass  # not under the models folder: stored absolute
    return str(resolved)


def resolve_model_reference(reference: str) -> str:
    """What to load for a persisted reference: ``$BGE_SIGLIP_MODEL_DIR/<name>`` is resolved against this machine's
    environment (a :class:`ModelLoadError` saying what to set if it is missing); anything else is returned as is."""
    if not reference.startswith(_PREFIX):
        return reference
    root = os.environ.get(MODEL_DIR_ENV)
    if not root:
        raise ModelLoadError(
            f"model {reference!r} is relative to ${MODEL_DIR_ENV}, which is not set in this process: set it to the "
            "folder that holds your BGE-SigLIP models"
        )
    return str(Path(root).expanduser() / _relative_part(reference))
