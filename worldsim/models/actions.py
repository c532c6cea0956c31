"""Action conditioning: the action encoder for continuous (Box) actions and the action-aware adapter.

After Astra (action-aware adapter: a zero-initialised injection of the action embedding into every block, so a
model trained without actions, or a freshly initialised one, starts out unchanged by them).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class BoxActionEncoder(nn.Module):
    """Embeds normalised continuous actions with Fourier features and an MLP.

    Fourier features ``sin(2^k * pi * a), cos(2^k * pi * a)`` for ``k < num_frequencies`` let a small MLP resolve
    fine differences in target positions (PushT actions are absolute agent targets).

    Args:
        action_dim: A, size of the action vector.
        embedding_dim: D, output width.
        num_frequencies: K, octaves of Fourier features per action dimension.

    Shapes:
        action: `(B, T, A)` float, normalised to [-1, 1] -> `(B, T, D)`.
    """

    def __init__(self, action_dim: int, embedding_dim: int, num_frequencies: int = 6):
        super().__init__()
        self.action_dim = action_dim
        self.register_buffer("frequencies", (2.0 ** torch.arange(num_frequencies)) * math.pi, persistent=False)
        in_features = action_dim * (1 + 2 * num_frequencies)
        self.mlp = nn.Sequential(nn.Linear(in_features, embedding_dim), nn.SiLU(), nn.Linear(embedding_dim, embedding_dim))

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        if action.shape[-1] != self.action_dim:
            raise ValueError(f"action has last dimension {action.shape[-1]}, expected {self.action_dim}")
        angles = action.unsqueeze(-1) * self.frequencies  # (B, T, A, K)
        features = torch.cat([action.unsqueeze(-1), angles.sin(), angles.cos()], dim=-1).flatten(-2)
        return self.mlp(features)


class ActionAdapter(nn.Module):
    """Zero-initialised per-block injection of the action embedding into the token stream (Astra).

    Shapes:
        hidden_states: `(B, T, N, D)`; action_embedding: `(B, T, D)` -> `(B, T, N, D)`, ``hidden_states`` plus a
        per-frame offset that is exactly zero at initialisation.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, hidden_states: torch.Tensor, action_embedding: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.net(action_embedding).unsqueeze(2)
