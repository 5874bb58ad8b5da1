"""The context-free token encoder: char embeddings -> CNN (several widths) -> highways -> linear.

Parameters keep the layout of the published weight file where it costs nothing (highway and
projection matrices in `x @ W` orientation), so reading and writing it is a plain copy.
"""

from __future__ import annotations

import torch
from torch import nn

from elmokit.config import BiLMConfig
from elmokit.modules import fast_token_encoder
from elmokit.modules.fast_inference import (
    DEFAULT_INFERENCE_MODE,
    InferenceMode,
    WeightCache,
    use_fast_path,
)


class Highway(nn.Module):
    """One highway layer with TF semantics: the gate named "carry" gates the transform branch."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.W_carry = nn.Parameter(torch.empty(dim, dim))
        self.b_carry = nn.Parameter(torch.empty(dim))
        self.W_transform = nn.Parameter(torch.empty(dim, dim))
        self.b_transform = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, dim] -> [N, dim]
        gate = torch.sigmoid(torch.addmm(self.b_carry, x, self.W_carry))
        transformed = torch.relu(torch.addmm(self.b_transform, x, self.W_transform))
        return gate * transformed + (1.0 - gate) * x


class CharCNNTokenEncoder(nn.Module):
    """Maps the ids of each token (50 character ids in the byte scheme) to a token vector of
    size projection_dim.

    ELMoForManyLangs models (config.characters == "dictionary") differ in three places: their
    own character ids (max_characters_per_token of them), an optional word id after them whose
    embedding comes before the CNN features, and a projection that is always there.
    """

    def __init__(self, config: BiLMConfig) -> None:
        super().__init__()
        self.config = config
        # One row more than the file holds: id 0 is batch padding with a zero embedding.
        n_char_rows = 262 if config.characters == "bytes" else config.n_characters + 1
        self.char_embed = nn.Embedding(n_char_rows, config.char_embedding_dim, padding_idx=0)
        self.word_embed: nn.Embedding | None = None
        if config.word_embedding_dim:
            self.word_embed = nn.Embedding(
                config.n_words + 1, config.word_embedding_dim, padding_idx=0
            )
        self.convs = nn.ModuleList(
            nn.Conv1d(config.char_embedding_dim, count, kernel_size=width)
            for width, count in config.filters
        )
        self.highways = nn.ModuleList(Highway(config.n_filters) for _ in range(config.n_highway))
        # bilm-tf only adds the projection when the CNN width differs from the LSTM input width.
        self.use_projection = config.uses_projection
        if self.use_projection:
            self.W_proj = nn.Parameter(
                torch.empty(config.token_features_dim, config.projection_dim)
            )
            self.b_proj = nn.Parameter(torch.empty(config.projection_dim))
        self.activation = torch.relu if config.activation == "relu" else torch.tanh
        # Without autograd, modes other than "reference" run fast_token_encoder.encode, on
        # weights it prepares once and keeps here (never part of state_dict).
        self.inference_mode: InferenceMode = DEFAULT_INFERENCE_MODE
        self.inference_weights = WeightCache()

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids [N, width] (BiLM.characters) -> token vectors [N, projection_dim]."""
        if self.config.characters == "bytes" and use_fast_path(
            self.inference_mode, self.parameters()
        ):
            return fast_token_encoder.encode(self, token_ids)
        n_chars = self.config.max_characters_per_token
        char_ids = token_ids[:, :n_chars]
        embedded = self.char_embed(char_ids).transpose(1, 2)  # [N, char_dim, n_chars]
        # The activation is monotone, so taking it after the max over positions is exact
        # and touches far fewer values.
        pooled = [conv(embedded).amax(dim=2) for conv in self.convs]
        features = self.activation(torch.cat(pooled, dim=1))  # [N, n_filters]
        for highway in self.highways:
            features = highway(features)
        if self.word_embed is not None:
            features = torch.cat([self.word_embed(token_ids[:, n_chars]), features], dim=1)
        if self.use_projection:
            features = torch.addmm(self.b_proj, features, self.W_proj)
        return features
