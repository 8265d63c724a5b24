"""Portable model references (what stores persist) and the option flag that says which options change vectors."""

from __future__ import annotations

import pytest

from bge_siglip_vectorizer import (
    MODEL_DIR_ENV,
    ModelLoadError,
    ModelMismatchError,
    VectorizerOptions,
    model_reference,
    resolve_model_reference,
    vector_option_names,
)


def test_a_directory_under_the_models_folder_is_stored_portably(tmp_path, monkeypatch):
    (tmp_path / "models" / "photos-v1").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path / "models"))
    assert model_reference(tmp_path / "models" / "photos-v1") == "$BGE_SIGLIP_MODEL_DIR/photos-v1"
    assert model_reference("$BGE_SIGLIP_MODEL_DIR/photos-v1") == "$BGE_SIGLIP_MODEL_DIR/photos-v1"
    assert model_reference(tmp_path / "elsewhere") == str((tmp_path / "elsewhere").resolve())  # not under it
    assert model_reference("org/bge-siglip") == "org/bge-siglip"  # a hub id, as given
    # Another machine: the same reference, its own folder.
    monkeypatch.setenv(MODEL_DIR_ENV, "/srv/models")
    assert resolve_model_reference("$BGE_SIGLIP_MODEL_DIR/photos-v1") == "/srv/models/photos-v1"
    assert resolve_model_reference("/abs/path") == "/abs/path"


def test_a_relative_directory_is_stored_absolute(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    monkeypatch.delenv(MODEL_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert model_reference("m") == str((tmp_path / "m").resolve())


def test_unresolvable_references_are_clear_errors(monkeypatch):
    monkeypatch.delenv(MODEL_DIR_ENV, raising=False)
    with pytest.raises(ModelLoadError, match="BGE_SIGLIP_MODEL_DIR, which is not set"):
        resolve_model_reference("$BGE_SIGLIP_MODEL_DIR/photos-v1")
    for bad in ("$BGE_SIGLIP_MODEL_DIR/../etc", "$BGE_SIGLIP_MODEL_DIR/"):
        with pytest.raises(ModelLoadError, match="no '..'"):
            model_reference(bad)


def test_options_that_change_vectors_are_declared_on_the_field():
    names = vector_option_names(VectorizerOptions)
    assert "max_num_patches" in names
    assert not {"device", "num_workers", "allow_urls"} & set(names)  # how to run, not what vectors come out


def test_model_mismatch_error_names_both_models():
    error = ModelMismatchError("collection 'photos'", "a" * 64, "b" * 64)
    assert isinstance(error, ValueError)
    assert "collection 'photos'" in str(error) and "aaaaaaaaaaaa" in str(error) and "bbbbbbbbbbbb" in str(error)
