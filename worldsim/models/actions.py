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
    fine differences in target positions (absolute target positions, say).

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


class DiscreteActionEncoder(nn.Module):
    """Embeds a ``Discrete(n)`` action given as its index (a float entry of the flat layout) with a table + MLP.

    Shapes: action `(B, T, 1)` float holding indices in ``[0, n)`` -> `(B, T, D)`.

    Raises:
        ValueError: an index outside ``[0, n)`` (the message names it).
    """

    def __init__(self, n: int, embedding_dim: int):
        super().__init__()
        self.n, self.action_dim = int(n), 1
        self.table = nn.Embedding(self.n, embedding_dim)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(embedding_dim, embedding_dim))

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.table(_indices(action[..., 0], self.n)))


class MultiDiscreteActionEncoder(nn.Module):
    """Embeds a ``MultiDiscrete(nvec)`` action: one table per component (stored as one offset table), summed.

    Shapes: action `(B, T, len(nvec))` float indices -> `(B, T, D)`.
    """

    def __init__(self, nvec: list[int], embedding_dim: int):
        super().__init__()
        self.nvec = [int(n) for n in nvec]
        self.action_dim = len(self.nvec)
        self.register_buffer("offsets", torch.tensor([0, *torch.tensor(self.nvec).cumsum(0)[:-1].tolist()]),
                             persistent=False)
        self.table = nn.Embedding(sum(self.nvec), embedding_dim)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(embedding_dim, embedding_dim))

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        indices = torch.stack([_indices(action[..., i], n) for i, n in enumerate(self.nvec)], dim=-1)
        return self.mlp(self.table(indices + self.offsets).sum(-2))


class MultiBinaryActionEncoder(nn.Module):
    """Embeds a ``MultiBinary(n)`` action (buttons held) with an MLP on the centred bits.

    Shapes: action `(B, T, n)` float in {0, 1} -> `(B, T, D)`.
    """

    def __init__(self, n: int, embedding_dim: int):
        super().__init__()
        self.action_dim = int(n)
        self.mlp = nn.Sequential(nn.Linear(self.action_dim, embedding_dim), nn.SiLU(),
                                 nn.Linear(embedding_dim, embedding_dim))

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        return self.mlp(action * 2.0 - 1.0)


class DictActionEncoder(nn.Module):
    """Embeds a ``Dict`` action: each sub-space by its own encoder over its slice of the flat layout, summed.

    Shapes: action `(B, T, flat_dim)` float -> `(B, T, D)`.
    """

    def __init__(self, spaces: dict, embedding_dim: int, num_frequencies: int = 6):
        super().__init__()
        from worldsim.data.spaces import flat_dim

        self.keys = sorted(spaces)
        self.sizes = [flat_dim(spaces[key]) for key in self.keys]
        self.action_dim = sum(self.sizes)
        self.encoders = nn.ModuleDict({key: build_action_encoder(spaces[key], embedding_dim, num_frequencies)
                                       for key in self.keys})

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        parts = action.split(self.sizes, dim=-1)
        return sum(self.encoders[key](part) for key, part in zip(self.keys, parts))


def _indices(values: torch.Tensor, n: int) -> torch.Tensor:
    indices = values.round().long()
    if indices.numel() and (indices.min() < 0 or indices.max() >= n):
        bad = indices[(indices < 0) | (indices >= n)][0].item()
        raise ValueError(f"discrete action index {bad} is outside [0, {n})")
    return indices


def build_action_encoder(space: dict, embedding_dim: int, num_frequencies: int = 6) -> nn.Module:
    """The encoder for an action space described as JSON (:func:`worldsim.data.spaces.space_to_json`).

    Box -> :class:`BoxActionEncoder`, Discrete -> :class:`DiscreteActionEncoder`, MultiDiscrete ->
    :class:`MultiDiscreteActionEncoder`, MultiBinary -> :class:`MultiBinaryActionEncoder`, Dict ->
    :class:`DictActionEncoder`. Every encoder has ``action_dim``, its flat input size.

    Raises:
        ValueError: an unknown space type.
    """
    kind = space.get("type")
    if kind == "Box":
        return BoxActionEncoder(int(torch.tensor(space["shape"]).prod()), embedding_dim, num_frequencies)
    if kind == "Discrete":
        return DiscreteActionEncoder(space["n"], embedding_dim)
    if kind == "MultiDiscrete":
        return MultiDiscreteActionEncoder(space["nvec"], embedding_dim)
    if kind == "MultiBinary":
        return MultiBinaryActionEncoder(space["n"], embedding_dim)
    if kind == "Dict":
        return DictActionEncoder(space["spaces"], embedding_dim, num_frequencies)
    raise ValueError(f"unknown action space type {kind!r}; known: Box, Discrete, MultiDiscrete, MultiBinary, Dict")


class ActionMixtureOfExperts(nn.Module):
    """Mixture of action experts: a learned top-k router over shared expert MLPs (Astra's MoAE; Switch/GShard MoE).

    Every embodiment's encoder maps its actions to a width-``D`` embedding; the router sends each embedding to its
    ``top_k`` experts, whose outputs are mixed by the renormalised router weights and added to the embedding. The
    experts are shared across embodiments, so modalities can share or split capacity as training finds best.

    Args:
        dim: D.
        num_experts: E.
        top_k: experts per action (1 <= top_k <= E).
        mlp_ratio: expert hidden width / D.

    Shapes:
        forward: x `(M, D)` -> (out `(M, D)`, router_probs `(M, E)` float32, dispatch `(M, E)` bool).

    Raises:
        ValueError: ``top_k`` outside ``[1, num_experts]``.
    """

    def __init__(self, dim: int, num_experts: int, top_k: int = 2, mlp_ratio: float = 2.0):
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        self.num_experts, self.top_k = num_experts, top_k
        self.router = nn.Linear(dim, num_experts)
        hidden = int(dim * mlp_ratio)
        self.experts = nn.ModuleList(
            [nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
             for _ in range(num_experts)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        probs = self.router(x).float().softmax(dim=-1)  # (M, E)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        dispatch = torch.zeros_like(probs, dtype=torch.bool).scatter_(1, chosen, True)
        gates = torch.zeros_like(probs).scatter_(1, chosen, weights)  # (M, E), zero outside the top k
        out = x
        for index, expert in enumerate(self.experts):
            rows = dispatch[:, index].nonzero(as_tuple=True)[0]
            if rows.numel():
                update = expert(x[rows]) * gates[rows, index, None].to(x.dtype)
                out = out.index_add(0, rows, update.to(out.dtype))
        return out, probs, dispatch


def load_balancing_loss(probs: torch.Tensor, dispatch: torch.Tensor) -> torch.Tensor:
    """Switch-Transformer auxiliary loss ``E * sum_i f_i * P_i`` (Fedus et al. 2021), 1.0 at a perfect balance.

    Args:
        probs: `(M, E)` router probabilities.
        dispatch: `(M, E)` bool, the experts each row was sent to.

    Returns:
        Scalar float32 tensor; ``f_i`` is the fraction of dispatches that went to expert i, ``P_i`` its mean
        router probability.
    """
    num_experts = probs.shape[-1]
    fraction = dispatch.float().sum(0) / dispatch.float().sum().clamp_min(1.0)
    return num_experts * (fraction * probs.float().mean(0)).sum()


def router_mutual_information(probs: torch.Tensor, embodiment: torch.Tensor, num_embodiments: int) -> torch.Tensor:
    """Mutual information ``I(T; E)`` between the embodiment T of an action and the expert E its router picks.

    The multi-task mixture-of-experts objective of Mod-Squad (Chen et al., CVPR 2023): maximising
    ``I(T; E) = H(E) - sum_t P(t) H(E | t)`` keeps the overall expert load balanced (high ``H(E)``) while each
    embodiment concentrates on its own subset of experts (low ``H(E | t)``). A load-balancing loss alone only asks
    for the first, so shared experts end up used identically by every modality. ``P(e | t)`` is the mean router
    probability over the batch's tokens of embodiment t, ``P(t)`` the share of its tokens.

    Args:
        probs: `(M, E)` float router probabilities.
        embodiment: `(M,)` long embodiment index of each row, in ``[0, num_embodiments)``.
        num_embodiments: T.

    Returns:
        Scalar float32 tensor in nats, in ``[0, min(log T, log E)]``; 0 when every embodiment uses the same mix.
        Use ``-weight * router_mutual_information(...)`` as a loss.

    Raises:
        ValueError: ``embodiment`` does not have one entry per row of ``probs``.
    """
    if embodiment.shape != probs.shape[:1]:
        raise ValueError(f"embodiment must have shape {tuple(probs.shape[:1])}, got {tuple(embodiment.shape)}")
    probs = probs.float()
    joint = torch.zeros(num_embodiments, probs.shape[-1], device=probs.device).index_add(0, embodiment, probs)
    joint = joint / probs.shape[0]  # P(t, e)
    p_task = joint.sum(-1, keepdim=True)
    p_expert = joint.sum(0, keepdim=True)
    ratio = joint / (p_task * p_expert).clamp_min(1e-12)
    return (joint * ratio.clamp_min(1e-12).log()).sum()
