"""An OpenAI-compatible embeddings API on the same server: ``POST /v1/embeddings`` and ``GET /v1/models``.

What embedding servers users already run (Infinity, text-embeddings-inference, vLLM, Ollama) speak, so the OpenAI
clients and whatever is built on them (LangChain, LlamaIndex, Chroma's ``OpenAIEmbeddingFunction``) work with no
plugin: point their base URL at ``http://<server>/v1``.

Request (OpenAI's fields): ``model`` (must be the served name, ``--served-model-name``, default ``bge-siglip``),
``input`` (a string or a list of strings; token arrays are refused: they would be another tokenizer's ids),
``encoding_format`` (``float``, the default, or ``base64``: little-endian float32 bytes, what the ``openai`` Python
client asks for by default), ``dimensions`` (refused unless it equals the model's: these vectors cannot be
shortened), ``user`` (ignored). Extension, as Infinity has it: ``"modality": "image"`` makes every input an image
(base64 of the file bytes or a ``data:image/...;base64,`` URI; an ``http(s)`` URL only where the operator allows
URLs). Texts must not be empty, as with OpenAI.

Response: ``{"object": "list", "data": [{"object": "embedding", "embedding": ..., "index": i}], "model": ...,
"usage": {"prompt_tokens": n, "total_tokens": n}}`` where ``n`` counts the tokens the text tower was given (after
truncation), or for images the patches the vision tower was given. Requests go through the same queue, batching,
back-pressure and limits as ``/vectorize`` (:func:`~.app.serve_request`). Errors: OpenAI's
``{"error": {"message", "type", "param", "code"}}`` with the same statuses as ``/vectorize``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from bge_siglip_vectorizer import InvalidInputError, Vectorizer

from .protocol import ApiError, VectorizeRequest, describe_input_error, error_status, parse_json_object

if TYPE_CHECKING:
    from .app import ServerState

__all__ = ["add_openai_routes", "parse_embeddings_body", "openai_error", "EmbeddingsOptions"]

_FORMATS = ("float", "base64")
_MODALITIES = ("text", "image")


@dataclass(frozen=True)
class EmbeddingsOptions:
    model: str
    encoding_format: str
    modality: str


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: ``type`` is ``invalid_request_error`` for the caller's mistakes, ``server_error``
    for ours (overload, shutdown, internal errors)."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def parse_embeddings_body(body: bytes, vectorizer: Vectorizer, served_model_name: str) -> VectorizeRequest:
    """Validate an embeddings request's fields; the inputs become the texts or the images of a request."""
    payload = parse_json_object(body, '{"model": "...", "input": ["..."]}')
    model = payload.get("model")
    if not isinstance(model, str):
        raise ApiError(400, "'model' is required and must be a string", param="model")
    if model != served_model_name:
        raise ApiError(404, f"The model {model!r} does not exist; this server serves {served_model_name!r}",
                       param="model", code="model_not_found")
    encoding_format = payload.get("encoding_format") or "float"
    if encoding_format not in _FORMATS:
        raise ApiError(400, f"'encoding_format' must be one of {list(_FORMATS)}, got {encoding_format!r}",
                       param="encoding_format")
    modality = payload.get("modality") or "text"
    if modality not in _MODALITIES:
        raise ApiError(400, f"'modality' must be one of {list(_MODALITIES)}, got {modality!r}", param="modality")
    dimensions = payload.get("dimensions")
    if dimensions is not None and dimensions != vectorizer.dim:
        raise ApiError(400, f"'dimensions' must be {vectorizer.dim} (this model's size) or left out; "
                            f"its embeddings cannot be shortened, got {dimensions!r}", param="dimensions")
    inputs = _inputs(payload.get("input"))
    options = EmbeddingsOptions(model, encoding_format, modality)
    if modality == "image":
        return VectorizeRequest(images=inputs, options=options)
    return VectorizeRequest(texts=inputs, options=options)


def _inputs(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise ApiError(400, "'input' must be a string or a non-empty list of strings", param="input")
    if all(isinstance(item, int) for item in value) or all(isinstance(item, list) for item in value):
        raise ApiError(400, "'input' as token arrays is not supported: this model has its own tokenizer, so send "
                            "the text itself", param="input", code="unsupported_input")
    return value


def add_openai_routes(app: FastAPI, state: "ServerState", require_api_key: Callable[[Request], None]) -> None:
    """Mount ``/v1/embeddings`` and ``/v1/models`` on ``app``."""
    from .app import serve_request

    settings = state.settings

    @app.get("/v1/models", dependencies=[Depends(require_api_key)])
    async def models() -> JSONResponse:
        # Known before the model has loaded: the name is the server's setting.
        return JSONResponse({"object": "list", "data": [
            {"id": settings.served_model_name, "object": "model", "created": state.started_at,
             "owned_by": "bge-siglip"},
        ]})

    @app.post("/v1/embeddings", dependencies=[Depends(require_api_key)])
    async def embeddings(request: Request) -> JSONResponse:
        try:
            served = await serve_request(
                request, state, lambda body, vectorizer: parse_embeddings_body(body, vectorizer,
                                                                               settings.served_model_name),
                allow_empty_texts=False, allow_urls=settings.allow_urls,
            )
        except InvalidInputError as exc:
            raise ApiError(error_status(exc), describe_input_error(exc, "input"), param="input") from None
        assert served is not None  # parse_embeddings_body refuses an empty input
        parsed, decoded, (text_vectors, image_vectors) = served
        options: EmbeddingsOptions = parsed.options
        if options.modality == "image":
            vectors, tokens = image_vectors, sum(image.num_patches for image in decoded.images)
        else:
            vectors, tokens = text_vectors, sum(decoded.token_counts)
        return JSONResponse({
            "object": "list",
            "data": [{"object": "embedding", "embedding": _encode(vector, options.encoding_format), "index": i}
                     for i, vector in enumerate(vectors)],
            "model": options.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })


def _encode(vector: np.ndarray, encoding_format: str) -> Any:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()
