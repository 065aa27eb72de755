"""Instruction encoders: byte tokens (N, L) -> (N, feature_dim), the task embedding a policy conditions on.

Two implementations behind the same call (`make_text_encoder`):
- `ByteTextEncoder` (kind `learned`): byte embeddings, a small transformer and a masked mean, trained with
  the policy. It needs no pretrained weights, which no PyPI wheel ships and which are never downloaded.
- `PretrainedTextEncoder` (kind `pretrained`): a Hugging Face `transformers` text model and its tokenizer
  read from a local directory (`pretrained_path`), frozen, mean-pooled, with a trained projection. Its
  weights stay out of the policy's state (a checkpoint names the directory, not a copy of the model), and
  each distinct instruction is embedded once and cached, since a training run repeats a few instructions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robopolicy.datasets.text import PAD, instruction_texts, instruction_tokens
from robopolicy.policies.encoders.config import TextEncoderConfig

log = logging.getLogger(__name__)
BYTE_VOCABULARY = 256
MASKED = -1e9  # attention score of padding (finite, so an all-padding row cannot turn into NaN)


class ByteTextEncoder(nn.Module):
    """Byte tokens -> embedding + position -> pre-norm transformer -> mean over non-padding -> feature_dim."""

    def __init__(self, length: int, config: TextEncoderConfig):
        super().__init__()
        self.embed = nn.Embedding(BYTE_VOCABULARY, config.width, padding_idx=PAD)
        self.position = nn.Parameter(torch.randn(length, config.width) * 0.02)
        layer = nn.TransformerEncoderLayer(config.width, config.heads, 4 * config.width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(config.width), nn.Linear(config.width, config.feature_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.long()
        keep = (tokens != PAD).unsqueeze(-1)
        hidden = self.embed(tokens) + self.position[: tokens.shape[-1]]
        padding = (tokens == PAD).to(hidden.dtype) * MASKED
        hidden = self.layers(hidden, src_key_padding_mask=padding)
        weights = keep.to(hidden.dtype)
        return self.out((hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0))


@dataclass(frozen=True)
class FrozenTextModel:
    """A pretrained model and its tokenizer, held outside the module tree: never trained, moved or saved."""

    model: Any
    tokenizer: Any

    def __deepcopy__(self, memo: dict) -> FrozenTextModel:
        return self  # never trained: the EMA's and a consistency target's copies share it


class PretrainedTextEncoder(nn.Module):
    """A frozen local `transformers` model, mean-pooled over its tokens, then a trained linear projection."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        path = Path(str(config.pretrained_path))
        if not path.is_dir():
            raise FileNotFoundError(f"text encoder directory {path} not found (encoder.text.pretrained_path): it must "
                                    "hold a transformers model and tokenizer (save_pretrained); robopolicy never "
                                    "downloads weights")
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as error:
            raise ImportError("encoder.text.kind=pretrained needs the transformers package: "
                              "pip install 'robopolicy[text]'") from error
        model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        self.frozen = FrozenTextModel(model, AutoTokenizer.from_pretrained(path, local_files_only=True))
        self._cache: dict[str, torch.Tensor] = {}
        self.project = nn.Linear(model.config.hidden_size, config.feature_dim)
        log.info("text encoder: %s (%s, frozen)", path, type(model).__name__)

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """(N, hidden) mean-pooled embeddings of `texts`, computed once per distinct string."""
        new = sorted(set(texts) - set(self._cache))
        if new:
            inputs = self.frozen.tokenizer(new, padding=True, return_tensors="pt")
            hidden = self.frozen.model(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            self._cache.update(zip(new, pooled, strict=True))
        return torch.stack([self._cache[text] for text in texts])

    def fix_instructions(self, texts: list[str], length: int) -> None:
        """Look these instructions up in a table from now on instead of running the tokenizer, which is Python
        that a traced program (an exported artifact) cannot hold; any other instruction then embeds as zeros."""
        self.register_buffer("table_tokens", torch.from_numpy(instruction_tokens(texts, length)).long())
        self.register_buffer("table_embeddings", self.embed(list(texts)).clone())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "table_tokens"):
            match = (tokens.long()[:, None, :] == self.table_tokens[None]).all(-1).to(self.table_embeddings.dtype)
            embedding = match @ self.table_embeddings
        else:
            embedding = self.embed(instruction_texts(tokens.detach().cpu().numpy()))
        return self.project(embedding.to(self.project.weight))


def make_text_encoder(length: int, config: TextEncoderConfig) -> nn.Module:
    """The instruction encoder of `config.kind` for byte tokens of `length`."""
    return ByteTextEncoder(length, config) if config.kind == "learned" else PretrainedTextEncoder(config)
