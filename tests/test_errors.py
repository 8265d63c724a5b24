"""Typed errors survive pickling with their fields (Ray tasks and actors, multiprocessing ship them between
processes)."""

from __future__ import annotations

import pickle

import pytest

from bge_siglip_vectorizer import ImageFetchError, InvalidImageError, InvalidTextError, ModelMismatchError


@pytest.mark.parametrize("error", [InvalidImageError("truncated", index=3, source="a.jpg"),
                                   ImageFetchError("refused", source="http://x/"), InvalidTextError("empty text")])
def test_input_errors_pickle_with_their_fields(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert (copy.reason, copy.index, copy.source) == (error.reason, error.index, error.source)


def test_model_mismatch_pickles_with_its_fields():
    error = ModelMismatchError("collection 'c'", "a" * 64, "b" * 64, hint="it was made with m")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ModelMismatchError and str(copy) == str(error)
    assert (copy.where, copy.stored, copy.given, copy.hint) == (error.where, error.stored, error.given, error.hint)
