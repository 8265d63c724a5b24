"""The ``nn.Module``s: SigLIP-2 NaFlex vision tower + MLP projector, and the frozen text tower with pooling and
BGE-M3's two extra heads (sparse / lexical and ColBERT multi-vector)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TEXT_POOLINGS = ("cls", "mean")


def make_projector(vision_hidden: int, dim: int) -> nn.Sequential:
    """Linear(h, h) -> GELU -> Linear(h, dim); indices 0 and 2 match the research checkpoint's ``projector.*`` keys."""
    return nn.Sequential(nn.Linear(vision_hidden, vision_hidden), nn.GELU(), nn.Linear(vision_hidden, dim))


class ImageEncoder(nn.Module):
    """Vision tower -> pooled output -> projector -> L2 normalise.

    Also holds the SigLIP ``logit_scale`` / ``logit_bias`` that training learns (init log 10 and -10).
    """

    def __init__(self, vision: nn.Module, dim: int) -> None:
        super().__init__()
        self.vision = vision
        self.projector = make_projector(vision.config.hidden_size, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))

    def forward(
        self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor, spatial_shapes: torch.Tensor
    ) -> torch.Tensor:
        return self.project(self.pool(pixel_values, pixel_attention_mask, spatial_shapes))

    def pool(
        self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor, spatial_shapes: torch.Tensor
    ) -> torch.Tensor:
        """The vision tower's pooled output (what training caches when the tower is frozen)."""
        return self.vision(
            pixel_values=pixel_values, pixel_attention_mask=pixel_attention_mask, spatial_shapes=spatial_shapes
        ).pooler_output

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Projector + L2 normalisation: pooled vision features -> vectors in the text space."""
        return F.normalize(self.projector(pooled).float(), dim=-1)

    def projector_state(self) -> dict[str, torch.Tensor]:
        """The trained head in the research checkpoint's key names."""
        state = {f"projector.{k}": v for k, v in self.projector.state_dict().items()}
        state["logit_scale"] = self.logit_scale.detach().reshape(())
        state["logit_bias"] = self.logit_bias.detach().reshape(())
        return state

    def load_projector_state(self, state: dict[str, torch.Tensor]) -> None:
        projector = {k[len("projector."):]: v for k, v in state.items() if k.startswith("projector.")}
        self.projector.load_state_dict(projector, strict=True)
        with torch.no_grad():
            if "logit_scale" in state:
                self.logit_scale.copy_(state["logit_scale"].reshape(()))
            if "logit_bias" in state:
                self.logit_bias.copy_(state["logit_bias"].reshape(()))


class TextEncoder(nn.Module):
    """Any Hugging Face encoder -> CLS token (BGE-M3's dense vector) or masked mean -> L2 normalise.

    With BGE-M3's heads it also gives, from the same ``last_hidden_state``, what FlagEmbedding's
    ``BGEM3FlagModel`` computes before its per-text post-processing:

    * ``sparse_linear`` (Linear(hidden, 1)): a weight per token, ``relu(sparse_linear(h))``;
    * ``colbert_linear`` (Linear(hidden, d)): a vector per token after CLS,
      ``normalize(colbert_linear(h[:, 1:]) * mask[:, 1:])`` (padded rows are 0).
    """

    def __init__(
        self,
        model: nn.Module,
        pooling: str = "cls",
        sparse_linear: nn.Linear | None = None,
        colbert_linear: nn.Linear | None = None,
    ) -> None:
        super().__init__()
        if pooling not in TEXT_POOLINGS:
            raise ValueError(f"pooling must be one of {TEXT_POOLINGS}, got {pooling!r}")
        self.model = model
        self.pooling = pooling
        self.sparse_linear = sparse_linear
        self.colbert_linear = colbert_linear

    def heads(self) -> dict[str, nn.Linear]:
        """The heads this encoder has, by the output they give: ``"sparse"``, ``"multivector"``."""
        heads = {"sparse": self.sparse_linear, "multivector": self.colbert_linear}
        return {output: layer for output, layer in heads.items() if layer is not None}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.pool(self.hidden_states(input_ids, attention_mask), attention_mask)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The dense vector: CLS or masked mean, L2-normalised."""
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return F.normalize(pooled.float(), dim=-1)

    def token_weights(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, L) lexical weight of every position, padding included (the caller drops what it must)."""
        if self.sparse_linear is None:
            raise ValueError("this text encoder has no sparse head")
        return torch.relu(self.sparse_linear(hidden)).squeeze(-1).float()

    def token_vectors(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L - 1, d) unit vectors of positions 1.. (CLS dropped), zero rows where padded."""
        if self.colbert_linear is None:
            raise ValueError("this text encoder has no multi-vector head")
        vectors = self.colbert_linear(hidden[:, 1:]).float() * attention_mask[:, 1:, None].float()
        return F.normalize(vectors, dim=-1)

    def encode_all(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sparse: bool = True, multivector: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Dense vectors and, as asked, token weights and token vectors, from one forward of the encoder."""
        hidden = self.hidden_states(input_ids, attention_mask)
        return (
            self.pool(hidden, attention_mask),
            self.token_weights(hidden) if sparse else None,
            self.token_vectors(hidden, attention_mask) if multivector else None,
        )
