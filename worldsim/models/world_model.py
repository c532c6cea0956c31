"""The world-model transformer: a frame-causal diffusion transformer over latent patches.

Read top to bottom:

* Tokens are ``patch_size x patch_size`` patches of each frame's latent grid: a clip of ``T`` frames of
  ``(C, h, w)`` latents becomes ``T * N`` tokens, ``N = (h / p) * (w / p)``.
* Attention is block-causal over frames (:func:`attention`: one masked SDPA call, one unmasked call per frame, or
  FlexAttention; :func:`set_block_causal_attention`): a token sees every token of its own
  frame and of earlier frames, never later ones. Queries and keys are RMS-normalised and rotated by a 3-D rotary
  embedding (time, row, column). Temporal positions are relative, so any window of frames is valid, however long
  the rollout.
* Each frame carries its own diffusion timestep (diffusion forcing: every frame its own noise level) and its own
  action. Timestep embedding + action embedding modulate each block through per-frame adaLN-Zero (DiT, Peebles &
  Xie 2023), and the action embedding also enters each block through a zero-initialised action-aware adapter
  (Astra).
* Frame ``t`` is conditioned on the action that produced it, ``action[t - 1]`` (the package's alignment, see
  :mod:`worldsim.constants`); frame 0 and dropped actions use a learned null action embedding.

The model maps ``(sample, timestep, action) -> model_output``, the flow-matching velocity ``noise - sample_0``
(rectified flow, as in diffusers' ``FlowMatchEulerDiscreteScheduler``). The denoising loop lives in
:mod:`worldsim.pipelines`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

from worldsim.models.actions import ActionAdapter, ActionMixtureOfExperts, BoxActionEncoder, build_action_encoder
from worldsim.models.kv_cache import FrameKVCache
from worldsim.models.tasks import TaskEmbedder
from worldsim.utils.shapes import size_pair


def rope_frequencies(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """Rotary angles for one axis: `(L,)` positions -> `(L, dim / 2)` angles (RoFormer, Su et al. 2021)."""
    inverse = 1.0 / (theta ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim))
    return positions.float()[:, None] * inverse[None, :]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates consecutive channel pairs of ``x`` `(B, heads, L, head_dim)` by angles with cos/sin `(L, head_dim/2)`."""
    x_even, x_odd = x.unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack([x_even * cos - x_odd * sin, x_even * sin + x_odd * cos], dim=-1)
    return rotated.flatten(-2)


XFORMERS_DEVICES = ("cuda",)  # device types on which xformers' kernels are used when it is installed


@functools.lru_cache(maxsize=1)
def _xformers_ops():
    """``xformers.ops`` if xformers is installed and imports, else None (looked up once)."""
    try:
        import xformers.ops

        return xformers.ops
    except Exception:  # not installed, or built for another torch/CUDA: fall back to SDPA
        return None


BLOCK_CAUSAL_MODES = ("dense", "frame-chunked", "flex")
_block_causal_mode = "dense"


def set_block_causal_attention(mode: str) -> str:
    """How block-causal attention over several frames is computed (training windows, multi-frame cached passes).

    Args:
        mode: ``"dense"``: one SDPA call with a boolean mask (no fused flash kernel on CUDA accepts a mask);
            ``"frame-chunked"``: one unmasked SDPA call per frame, its queries against the keys up to its own frame
            (flash / memory-efficient kernels on CUDA, and the masked half of the work skipped);
            ``"flex"``: torch's FlexAttention with a block mask (fused under ``torch.compile``; eager it is a slow
            reference). ``"dense"`` is the default (frame-chunked pays one kernel launch per frame and layer, which
            only frames of many tokens repay; no GPU measurement decides it yet). The environment variable
            ``WORLDSIM_BLOCK_CAUSAL_ATTENTION`` sets the mode at import.

    Returns:
        The previous mode.

    Raises:
        ValueError: an unknown mode.
    """
    global _block_causal_mode
    if mode not in BLOCK_CAUSAL_MODES:
        raise ValueError(f"block-causal attention mode {mode!r} is not one of {BLOCK_CAUSAL_MODES}")
    previous, _block_causal_mode = _block_causal_mode, mode
    return previous


if "WORLDSIM_BLOCK_CAUSAL_ATTENTION" in os.environ:  # a typo must fail here, not fall back to dense unseen
    set_block_causal_attention(os.environ["WORLDSIM_BLOCK_CAUSAL_ATTENTION"])


def block_causal_attention() -> str:
    """The current mode of :func:`set_block_causal_attention`."""
    return _block_causal_mode


@dataclass(frozen=True)
class BlockCausal:
    """The block-causal pattern without materialising it: each query frame sees every cached token
    (``past_tokens``) and the tokens of its own and earlier new frames, ``tokens_per_frame`` per frame."""

    tokens_per_frame: int
    past_tokens: int = 0

    def dense(self, num_queries: int, device=None) -> torch.Tensor:
        """The boolean `(L, past_tokens + L)` mask, True where a query may attend."""
        causal = block_causal_mask(num_queries // self.tokens_per_frame, self.tokens_per_frame, device)
        return torch.cat([causal.new_ones(num_queries, self.past_tokens), causal], dim=1)


def _frame_chunked(query, key, value, pattern: BlockCausal) -> torch.Tensor:
    n, past = pattern.tokens_per_frame, pattern.past_tokens
    outputs = [F.scaled_dot_product_attention(query[:, :, start:start + n], key[:, :, :past + start + n],
                                              value[:, :, :past + start + n])
               for start in range(0, query.shape[2], n)]
    return torch.cat(outputs, dim=2)


@functools.lru_cache(maxsize=32)
def _flex_block_mask(tokens_per_frame: int, past_tokens: int, num_queries: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    def visible(batch, head, q_index, kv_index):
        return (kv_index < past_tokens) | (q_index // tokens_per_frame >= (kv_index - past_tokens) // tokens_per_frame)

    return create_block_mask(visible, None, None, num_queries, past_tokens + num_queries, device=device)


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              mask: torch.Tensor | BlockCausal | None = None) -> torch.Tensor:
    """Scaled dot-product attention, `(B, heads, L, d)` x `(B, heads, S, d)` -> `(B, heads, L, d)`.

    torch's ``scaled_dot_product_attention`` (flash / memory-efficient kernels on CUDA, the fused CPU kernel on
    CPU) by default. On CUDA, when xformers is installed and there is no mask (the streaming step of every
    unrestarted rollout), xformers' ``memory_efficient_attention`` is used instead (its layout is `(B, L, heads,
    d)`). ``mask`` is a boolean `(L, S)` or `(B, 1, L, S)`, True where a query may attend, or a :class:`BlockCausal`
    pattern, computed as :func:`set_block_causal_attention` says (every mode gives the same result).

    Raises:
        RuntimeError: shapes SDPA refuses (torch's message).
    """
    if isinstance(mask, BlockCausal):
        mode = _block_causal_mode
        if mode == "frame-chunked":
            return _frame_chunked(query, key, value, mask)
        if mode == "flex":
            from torch.nn.attention.flex_attention import flex_attention

            block_mask = _flex_block_mask(mask.tokens_per_frame, mask.past_tokens, query.shape[2], str(query.device))
            return flex_attention(query, key, value, block_mask=block_mask)
        mask = mask.dense(query.shape[2], query.device)
    if mask is None and query.device.type in XFORMERS_DEVICES:
        ops = _xformers_ops()
        if ops is not None:
            out = ops.memory_efficient_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
            return out.transpose(1, 2)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask)


def block_causal_mask(num_frames: int, tokens_per_frame: int, device=None) -> torch.Tensor:
    """Boolean attention mask `(T*N, T*N)`: True where a query token may attend to a key token (same or earlier frame)."""
    frame = torch.arange(num_frames, device=device).repeat_interleave(tokens_per_frame)
    return frame[:, None] >= frame[None, :]


class FrameCausalAttention(nn.Module):
    """Multi-head self-attention with QK RMS-norm, 3-D rotary positions and a block-causal frame mask.

    With ``past`` (keys and values of cached history frames, QK-normed, un-rotated), the queries of the new frames
    attend to ``past + new`` keys; ``key_cos``/``key_sin`` then cover the concatenated keys.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.to_qkv = nn.Linear(dim, 3 * num_heads * head_dim)
        self.norm_q = nn.RMSNorm(head_dim, eps=1e-6)
        self.norm_k = nn.RMSNorm(head_dim, eps=1e-6)
        self.to_out = nn.Linear(num_heads * head_dim, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                past: tuple[torch.Tensor, torch.Tensor] | None = None, keys_only: bool = False
                ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """`(B, L, D)` -> `(B, L, D)`, plus this call's un-rotated keys and values `(B, heads, L, head_dim)`.

        ``past`` holds cached keys (already rotated to their slots) and values, `(B or B/k, heads, P, head_dim)`;
        ``cos``/``sin`` `(L, head_dim/2)` are the angles of this call's tokens. ``keys_only`` skips the attention
        itself and returns None for the output (a pass that only fills a KV cache).
        """
        qkv = rearrange(self.to_qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
        q, k, v = qkv.unbind(0)  # each (B, heads, L, head_dim)
        # QK-norm and rotation in float32, then back to the compute dtype for SDPA; keys are cached un-rotated
        new_k = self.norm_k(k.float()).to(v.dtype)
        if keys_only:
            return None, new_k, v
        q = apply_rope(self.norm_q(q.float()), cos, sin).to(v.dtype)
        k = apply_rope(new_k.float(), cos, sin).to(v.dtype)
        new_v = v
        if past is not None:
            past_k, past_v = past
            if past_k.shape[0] != q.shape[0]:  # one cache shared by guidance branches stacked along the batch
                past_k = past_k.repeat(q.shape[0] // past_k.shape[0], 1, 1, 1)
                past_v = past_v.repeat(q.shape[0] // past_v.shape[0], 1, 1, 1)
            k, v = torch.cat([past_k.to(v.dtype), k], dim=2), torch.cat([past_v.to(v.dtype), v], dim=2)
        out = attention(q, k, v, mask)
        return self.to_out(rearrange(out, "b h l d -> b l (h d)")), new_k, new_v


class WorldModelBlock(nn.Module):
    """Transformer block with per-frame adaLN-Zero modulation and an action-aware adapter.

    Shapes:
        hidden_states `(B, T, N, D)`, conditioning `(B, T, D)`, action_embedding `(B, T, D)` -> `(B, T, N, D)`.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = FrameCausalAttention(dim, num_heads, head_dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.adaLN_modulation[-1].bias)
        self.action_adapter = ActionAdapter(dim)

    def forward(self, hidden_states, conditioning, action_embedding, cos, sin, mask, past=None, keys_only=False):
        """Returns the new hidden states and this block's un-rotated keys and values (for a KV cache).

        ``keys_only``: return None for the hidden states and compute only the keys and values (the last block of a
        pass that only fills a KV cache: its attention output, adapter and MLP would be thrown away).
        """
        batch, frames, tokens, dim = hidden_states.shape
        # 1. per-frame modulation parameters, broadcast over the frame's tokens
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(conditioning).unsqueeze(2).chunk(6, dim=-1)
        # 2. frame-causal attention
        x = self.norm1(hidden_states) * (1 + scale1) + shift1
        x, keys, values = self.attn(x.reshape(batch, frames * tokens, dim), cos, sin, mask, past, keys_only)
        if keys_only:
            return None, keys, values
        hidden_states = hidden_states + gate1 * x.reshape(batch, frames, tokens, dim)
        # 3. action-aware adapter (zero at initialisation)
        hidden_states = self.action_adapter(hidden_states, action_embedding)
        # 4. MLP
        x = self.norm2(hidden_states) * (1 + scale2) + shift2
        return hidden_states + gate2 * self.mlp(x), keys, values


class FrameCausalVideoModel:
    """What every worldsim world-model backbone shares: action encoding, task conditioning, shape checks, the full
    forward pass and the streaming (KV-cached) forward pass over frames.

    A backbone (worldsim's own :class:`WorldModelTransformer`, or a pretrained video transformer adapted by
    :mod:`worldsim.models.backbones`) inherits this class first (before diffusers' ``ModelMixin``, whose
    ``nn.Module.forward`` would shadow :meth:`forward`), calls :meth:`_init_conditioning` in its ``__init__`` and
    supplies:

    * ``latent_size`` ``(h, w)``, ``tokens_per_frame`` N and ``config.in_channels`` C;
    * :meth:`rotary` / :meth:`rotary_at` (cos, sin of its rotary positions for frame slots) and :meth:`new_cache`;
    * ``_run(sample, timestep, action_embedding, cos, sin, mask, cache, rotate_past, keys_only, task_embedding,
      task)``: patchify, its blocks (block-causal self-attention with ``mask`` and the cache's keys), unpatchify;
      returns the output `(B, T, C, h, w)` (None when ``keys_only``) and per-layer un-rotated keys and values.

    Everything a pipeline, env, ranking or steering run calls (:meth:`forward`, :meth:`forward_cached`,
    :meth:`task_index`, :meth:`embodiment_index`, :meth:`encode_actions`) is then the same for every backbone.
    """

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype the model's weights are kept in (that of its learned null action)."""
        return self.null_action.dtype

    def _init_conditioning(self, dim: int, action_dim: int, action_num_frequencies: int, embodiments: list[dict] | None,
                           num_action_experts: int, action_experts_top_k: int, action_space: dict | None,
                           tasks: list[str] | None, task_embedding_dim: int | None) -> None:
        """Builds the action encoder(s), the mixture of action experts, the null action and the task embedder at
        width ``dim`` (the arguments are the model config's, see :class:`WorldModelTransformer`).

        Raises:
            ValueError: ``action_space`` with ``embodiments``, duplicate embodiment names, or an ``action_dim`` that
                is not the (widest) flat action size.
        """
        if embodiments and action_space is not None:
            raise ValueError("action_space is for single-embodiment models; a multi-embodiment model takes each "
                             "embodiment's action space in embodiments")
        if embodiments:
            names = [embodiment["name"] for embodiment in embodiments]
            if len(set(names)) != len(names):
                raise ValueError(f"embodiment names must be unique, got {names}")
            self.action_encoder = None
            self.action_encoders = nn.ModuleDict({embodiment["name"]: build_action_encoder(
                embodiment["action_space"], dim, action_num_frequencies) for embodiment in embodiments})
            widest = max(encoder.action_dim for encoder in self.action_encoders.values())
            if action_dim != widest:
                raise ValueError(f"action_dim must be the widest embodiment's flat action size {widest}, got {action_dim}")
        else:
            self.action_encoder = BoxActionEncoder(action_dim, dim, action_num_frequencies) if action_space is None \
                else build_action_encoder(action_space, dim, action_num_frequencies)
            if self.action_encoder.action_dim != action_dim:
                raise ValueError(f"action_dim {action_dim} differs from the flat size {self.action_encoder.action_dim} "
                                 f"of action_space {action_space}")
            self.action_encoders = None
        self.action_experts = (ActionMixtureOfExperts(dim, num_action_experts, action_experts_top_k)
                               if num_action_experts else None)
        self.last_routing = None
        self.null_action = nn.Parameter(torch.zeros(dim))
        self.task_embedder = TaskEmbedder(tasks, dim, task_embedding_dim) if tasks else None

    def _check_shapes(self, sample: torch.Tensor, timestep: torch.Tensor, action: torch.Tensor) -> None:
        if sample.ndim != 5:
            raise ValueError(f"sample must be (B, T, C, h, w), got shape {tuple(sample.shape)}")
        batch, frames, channels, height, width = sample.shape
        if (channels, height, width) != (self.config.in_channels, *self.latent_size):
            raise ValueError(
                f"sample has shape {tuple(sample.shape)}, expected (B, T, {self.config.in_channels}, "
                f"{self.latent_size[0]}, {self.latent_size[1]})"
            )
        if timestep.shape != (batch, frames):
            raise ValueError(f"timestep has shape {tuple(timestep.shape)}, expected {(batch, frames)}")
        if action.shape[:2] != (batch, frames):
            raise ValueError(f"action has shape {tuple(action.shape)}, expected ({batch}, {frames}, A)")

    @property
    def embodiment_names(self) -> list[str]:
        """Embodiment names in index order (``["default"]`` for a single-embodiment model)."""
        return [e["name"] for e in self.config.embodiments] if self.config.embodiments else ["default"]

    def embodiment_index(self, name: str | None) -> int:
        """Index of the embodiment called ``name`` (None: the first).

        Raises:
            ValueError: unknown name (the message lists the known ones).
        """
        names = self.embodiment_names
        if name is None:
            return 0
        if name not in names:
            raise ValueError(f"unknown embodiment {name!r}; this model knows {names}")
        return names.index(name)

    def encode_actions(self, action: torch.Tensor, embodiment: torch.Tensor | None = None) -> torch.Tensor:
        """Action embedding `(B, T, D)` of normalised actions `(B, T, A)` (no time shift).

        Args:
            action: `(B, T, A)` float in the flat layout (:mod:`worldsim.data.spaces`: Box entries normalised to
                [-1, 1], discrete entries as indices, binary entries in {0, 1}), zero-padded to ``action_dim``.
            embodiment: `(B,)` long embodiment indices, or None (all 0).

        Raises:
            ValueError: a bad ``embodiment`` shape or index, or a discrete index outside its space.
        """
        batch, frames = action.shape[:2]
        if self.action_encoders is None:
            embedding = self.action_encoder(action)
        else:
            if embodiment is None:
                embodiment = torch.zeros(batch, dtype=torch.long, device=action.device)
            if embodiment.shape != (batch,):
                raise ValueError(f"embodiment has shape {tuple(embodiment.shape)}, expected ({batch},)")
            embedding = None
            for index in embodiment.unique().tolist():
                if not 0 <= index < len(self.action_encoders):
                    raise ValueError(f"embodiment index {index} is outside [0, {len(self.action_encoders)})")
                encoder = self.action_encoders[self.embodiment_names[index]]
                rows = (embodiment == index).nonzero(as_tuple=True)[0]
                part = encoder(action[rows, :, :encoder.action_dim])
                if embedding is None:
                    embedding = part.new_zeros(batch, frames, part.shape[-1])
                embedding = embedding.index_copy(0, rows, part)
        if self.action_experts is not None:
            flat, probs, dispatch = self.action_experts(embedding.flatten(0, 1))
            ids = embodiment if embodiment is not None else torch.zeros(batch, dtype=torch.long, device=action.device)
            self.last_routing = (probs, dispatch, ids.repeat_interleave(frames))
            embedding = flat.view(batch, frames, embedding.shape[-1])
        return embedding

    def embed_actions(self, action: torch.Tensor, action_mask: torch.Tensor | None = None,
                      embodiment: torch.Tensor | None = None) -> torch.Tensor:
        """Per-frame action embedding: frame t gets ``action[:, t - 1]``; frame 0 and masked frames get the null action.

        Args:
            action: `(B, T, A)` float, normalised; ``action[:, t]`` is applied after frame t.
            action_mask: `(B, T)` bool or None; False drops the action that *produced* frame t.
            embodiment: `(B,)` long or None, see :meth:`encode_actions`.

        Returns:
            `(B, T, D)`.
        """
        batch, frames, _ = action.shape
        embedding = self.encode_actions(action[:, :-1], embodiment)  # (B, T-1, D): the actions that produced frames 1..T-1
        null = self.null_action.to(embedding.dtype).expand(batch, 1, -1)
        embedding = torch.cat([null, embedding], dim=1)
        if action_mask is not None:
            embedding = torch.where(action_mask.unsqueeze(-1), embedding, null)
        return embedding

    @property
    def task_names(self) -> list[str]:
        """The task texts the model knows, in index order (empty without task conditioning)."""
        return list(self.config.tasks or [])

    def task_index(self, task: str | None) -> int:
        """The index of a task text (None: the null task).

        Raises:
            ValueError: the model has no task conditioning, or does not know ``task`` (the message lists the known
                tasks).
        """
        if self.task_embedder is None:
            raise ValueError("this model is not conditioned on a task")
        if task is None:
            return self.task_embedder.null_index
        if task not in self.task_names:
            raise ValueError(f"unknown task {task!r}; this model knows {self.task_names}")
        return self.task_names.index(task)

    def embed_task(self, task: torch.Tensor | None, batch: int, dtype: torch.dtype) -> torch.Tensor | None:
        """`(B, 1, D)` task embedding of `(B,)` long task indices (None: the null task), or None for a model without
        task conditioning.

        Raises:
            ValueError: a task given to a model without task conditioning, or a bad shape or index.
        """
        if self.task_embedder is None:
            if task is not None:
                raise ValueError("this model is not conditioned on a task, but a task was given")
            return None
        if task is None:
            task = torch.full((batch,), self.task_embedder.null_index, dtype=torch.long,
                              device=self.null_action.device)
        if task.shape != (batch,):
            raise ValueError(f"task has shape {tuple(task.shape)}, expected ({batch},)")
        return self.task_embedder(task).to(dtype).unsqueeze(1)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        action: torch.Tensor,
        action_mask: torch.Tensor | None = None,
        embodiment: torch.Tensor | None = None,
        task: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicts the flow-matching velocity for every frame.

        Args:
            sample: `(B, T, C, h, w)` noisy latents, each frame at its own noise level.
            timestep: `(B, T)` float, per-frame timestep ``sigma * 1000`` (diffusers' flow-matching convention).
            action: `(B, T, A)` float normalised actions, ``action[:, t]`` applied after frame t (the last one is
                unused: nothing in the window shows its effect).
            action_mask: `(B, T)` bool or None; False replaces the action that produced frame t by the null action
                (action dropout in training, the unconditional branch of action guidance).
            embodiment: `(B,)` long embodiment indices (multi-embodiment models), or None (all 0).
            task: `(B,)` long task indices (:meth:`task_index`; models with ``tasks``), or None (the null task).

        Returns:
            `torch.Tensor` `(B, T, C, h, w)`: predicted velocity ``noise - clean`` per frame.

        Raises:
            ValueError: shapes that do not match each other or the config.
        """
        self._check_shapes(sample, timestep, action)
        frames = sample.shape[1]
        action_embedding = self.embed_actions(action.to(self.weight_dtype), action_mask, embodiment)
        cos, sin = self.rotary(frames, sample.device)
        mask = BlockCausal(self.tokens_per_frame) if frames > 1 else None
        task_embedding = self.embed_task(task, sample.shape[0], action_embedding.dtype)
        out, _, _ = self._run(sample, timestep, action_embedding, cos, sin, mask, task_embedding=task_embedding,
                              task=task)
        return out

    def forward_cached(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        producing_action: torch.Tensor,
        producing_action_mask: torch.Tensor | None,
        cache: FrameKVCache,
        update_cache: bool = False,
        embodiment: torch.Tensor | None = None,
        return_output: bool = True,
        task: torch.Tensor | None = None,
        action_embedding: torch.Tensor | None = None,
        task_embedding: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """Streaming forward pass: ``F`` new frames attend to the cached history and to each other (block-causal).

        The output equals :meth:`forward` on the window ``history + new frames`` whenever the cache holds exactly
        that history (computed at the same noise levels with the same actions).

        Args:
            sample: `(B', F, C, h, w)` latents of the new frames; ``B'`` is the cache's batch size or a multiple of it
                (guidance branches stacked along the batch share one cache).
            timestep: `(B', F)` float, per-frame ``sigma * 1000``.
            producing_action: `(B', F, A)` float normalised, the action that produced each new frame.
            producing_action_mask: `(B', F)` bool or None; False uses the null action (no producing action: the
                first frame of a rollout, or the unconditional branch of action guidance).
            cache: keys and values of the history; read, and appended to when ``update_cache``.
            update_cache: write the new frames' keys and values into ``cache`` (evicting the oldest frames when the
                window is full).
            embodiment: `(B',)` long or None, see :meth:`encode_actions`.
            return_output: False for a pass that only fills the cache (``update_cache=True``): the last block
                computes only its keys and values (no attention output, adapter, MLP or final projection: about a
                seventh of a pass at the default width), and None is returned. The cache is the same.
            task: `(B',)` long task indices or None (the null task), see :meth:`forward`.
            action_embedding, task_embedding: the producing actions' embedding `(B', F, D)` (masking applied) and the
                task embedding `(B', 1, D)` (:meth:`embed_task`; None without task conditioning), computed beforehand
                instead of from ``producing_action`` / ``task``: a CUDA-graph step computes them outside the graph,
                since routing actions to experts and checking task indices read the device
                (:class:`~worldsim.pipelines.cuda_graph.GraphedCachedStep`).

        Returns:
            `torch.Tensor` `(B', F, C, h, w)`: predicted velocity per new frame; None when not ``return_output``.

        Raises:
            ValueError: shapes that disagree with each other, the config or the cache; appending guidance-stacked
                branches to the cache; ``return_output=False`` without ``update_cache`` (a pass with no result).
        """
        batch, frames = sample.shape[:2]
        if not return_output and not update_cache:
            raise ValueError("return_output=False needs update_cache=True: the pass would have no result")
        self._check_shapes(sample, timestep, producing_action)
        if batch % cache.batch_size:
            raise ValueError(f"sample batch {batch} is not a multiple of the cache batch {cache.batch_size}")
        if update_cache and batch != cache.batch_size:
            raise ValueError(f"only a batch equal to the cache's ({cache.batch_size}) can be appended, got {batch}")
        if action_embedding is None:
            embedding = self.encode_actions(producing_action.to(self.weight_dtype), embodiment)
            null = self.null_action.to(embedding.dtype).expand_as(embedding)
            if producing_action_mask is not None:
                embedding = torch.where(producing_action_mask.unsqueeze(-1), embedding, null)
        else:
            embedding = action_embedding
        past = cache.num_frames
        cos, sin = self.rotary(frames, sample.device, first_frame=past)
        dtype = self.weight_dtype if not torch.is_autocast_enabled(sample.device.type) else \
            torch.get_autocast_dtype(sample.device.type)

        past_rotary = []  # cos, sin of the cached keys, computed once per call (only when a layer's memo misses)

        def rotate_past(keys: torch.Tensor) -> torch.Tensor:
            if not past_rotary:
                # cached keys sit at slots 0 .. past - 1, except the sinks of a restarted row, which are shifted so
                # that its distances are those of a fresh cache (FrameKVCache.frame_positions)
                positions = cache.frame_positions()
                past_rotary.extend(self.rotary(past, sample.device) if positions is None  # (past * N, head_dim / 2)
                                   else self.rotary_at(positions.to(sample.device)))  # (B, 1, past * N, head_dim / 2)
            return apply_rope(keys.float(), *past_rotary).to(dtype)

        mask = None
        new_tokens = frames * self.tokens_per_frame
        if frames > 1:  # new frames see all of the cache and themselves block-causally
            mask = BlockCausal(self.tokens_per_frame, past * self.tokens_per_frame)
        past_valid = cache.attention_mask() if past else None
        if past_valid is not None:  # rows restarted with a shorter history do not see the slots before it
            own = block_causal_mask(frames, self.tokens_per_frame, sample.device) if frames > 1 else \
                past_valid.new_ones(new_tokens, new_tokens)
            own = own.expand(cache.batch_size, 1, new_tokens, new_tokens)
            mask = torch.cat([past_valid[:, None, None, :].expand(-1, 1, new_tokens, -1), own], dim=-1)
            mask = mask.repeat(batch // cache.batch_size, 1, 1, 1)
        if task_embedding is None:
            task_embedding = self.embed_task(task, batch, embedding.dtype)
        out, keys, values = self._run(sample, timestep, embedding, cos, sin, mask, cache, rotate_past,
                                      keys_only=not return_output, task_embedding=task_embedding, task=task)
        if update_cache:
            cache.append(keys, values)
        return out


class WorldModelTransformer(FrameCausalVideoModel, ModelMixin, ConfigMixin):
    """Action-conditioned, frame-causal diffusion transformer over latent video (diffusers ``ModelMixin``).

    Args:
        in_channels: C, latent channels.
        sample_size: the latent grid: an int ``h = w`` (square frames) or ``[h, w]`` (frames that are not square,
            e.g. two camera views side by side).
        patch_size: p, latent patch size; N = (h / p) * (w / p) tokens per frame.
        num_layers, num_attention_heads, attention_head_dim, mlp_ratio: transformer size; width
            D = num_attention_heads * attention_head_dim.
        action_dim: A, flat action size (:mod:`worldsim.data.spaces`; Box entries normalised to [-1, 1]).
        action_num_frequencies: Fourier octaves of the Box action encoder.
        rope_axes_dim: rotary channels for (time, row, column); even, summing to ``attention_head_dim``.
        rope_theta: rotary base.
        embodiments: None (one continuous embodiment of ``action_dim``) or a list of ``{"name": str,
            "action_space": space JSON}``: one action encoder per embodiment (:func:`build_action_encoder`), chosen
            per sample by the ``embodiment`` index; ``action_dim`` must then be the largest flat action size
            (smaller ones are zero-padded).
        action_space: single-embodiment models only: the action space as JSON
            (:func:`~worldsim.data.spaces.space_to_json`), embedded by :func:`build_action_encoder` (a
            ``Discrete(n)`` action by a learned table of ``n`` rows, indexed by the action, never as one ordinal
            number; a ``Dict`` part by part); its flat size must be ``action_dim``. None (configs written before this
            field existed): a :class:`BoxActionEncoder` of ``action_dim`` continuous values, as before.
        num_action_experts: E > 0 routes every action embedding through a mixture of action experts shared by all
            embodiments (:class:`~worldsim.models.actions.ActionMixtureOfExperts`); 0 disables it.
        action_experts_top_k: experts per action.
        tasks: the task texts the model is conditioned on (a dataset's ``meta/tasks.parquet``), or None for a model
            without task conditioning. Task ``i`` adds a learned vector to every frame's conditioning (to the
            timestep and action embeddings that drive adaLN); index ``len(tasks)`` is the null task (no task or an
            unknown one; task dropout in training trains it).
        task_embedding_dim: None: one learned vector per task (a table). An int E: tasks are embedded by a text
            encoder that the user supplies (:class:`~worldsim.models.tasks.TaskTextEncoder`), whose `(E,)` vectors
            of the known tasks are stored in the model (``task_text_embeddings``) and mapped to the model width by a
            learned linear layer, so a model trained this way needs the encoder only for new task texts.

    After a forward pass with experts, ``last_routing`` holds ``(router_probs (M, E), dispatch (M, E),
    embodiment (M,))`` for the load-balancing loss and router statistics.

    Raises:
        ValueError: ``sample_size`` not divisible by ``patch_size`` (or not an int / a pair of ints); ``rope_axes_dim`` odd or not summing to
            ``attention_head_dim``; duplicate embodiment names; an ``action_dim`` that is not the (widest) flat action
            size; ``action_space`` together with ``embodiments``; an unknown action space type.

    >>> model = WorldModelTransformer(in_channels=4, sample_size=4, num_layers=2, action_dim=2)
    >>> out = model(torch.randn(1, 3, 4, 4, 4), torch.full((1, 3), 500.0), torch.zeros(1, 3, 2))
    >>> tuple(out.shape)
    (1, 3, 4, 4, 4)
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        in_channels: int = 8,
        sample_size: int | tuple[int, int] = 8,
        patch_size: int = 2,
        num_layers: int = 6,
        num_attention_heads: int = 4,
        attention_head_dim: int = 64,
        mlp_ratio: float = 4.0,
        action_dim: int = 2,
        action_num_frequencies: int = 6,
        rope_axes_dim: tuple[int, int, int] = (32, 16, 16),
        rope_theta: float = 10000.0,
        embodiments: list[dict] | None = None,
        num_action_experts: int = 0,
        action_experts_top_k: int = 2,
        action_space: dict | None = None,
        tasks: list[str] | None = None,
        task_embedding_dim: int | None = None,
    ):
        super().__init__()
        self.latent_size = size_pair(sample_size, "sample_size")
        if any(side % patch_size for side in self.latent_size):
            raise ValueError(f"sample_size {sample_size} is not divisible by patch_size {patch_size}")
        if sum(rope_axes_dim) != attention_head_dim or any(d % 2 for d in rope_axes_dim):
            raise ValueError(f"rope_axes_dim {rope_axes_dim} must be even and sum to attention_head_dim {attention_head_dim}")
        dim = num_attention_heads * attention_head_dim
        self.grid_height, self.grid_width = (side // patch_size for side in self.latent_size)
        self.patch_embed = nn.Linear(in_channels * patch_size * patch_size, dim)
        self.spatial_embed = nn.Parameter(torch.zeros(1, 1, self.grid_height * self.grid_width, dim))
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.timestep_embedder = TimestepEmbedding(256, dim)
        self._init_conditioning(dim, action_dim, action_num_frequencies, embodiments, num_action_experts,
                                action_experts_top_k, action_space, tasks, task_embedding_dim)
        self.blocks = nn.ModuleList(
            [WorldModelBlock(dim, num_attention_heads, attention_head_dim, mlp_ratio) for _ in range(num_layers)]
        )
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_out = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.proj_out = nn.Linear(dim, in_channels * patch_size * patch_size)
        for layer in (self.adaLN_out[-1], self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.spatial_embed, std=0.02)

    @property
    def tokens_per_frame(self) -> int:
        """N, patches per frame."""
        return self.grid_height * self.grid_width

    @property
    def grid(self) -> int:
        """Patches per side of a square latent grid.

        Raises:
            ValueError: the grid is not square (use ``grid_height`` / ``grid_width``).
        """
        if self.grid_height != self.grid_width:
            raise ValueError(f"the patch grid is {self.grid_height} x {self.grid_width}, not square")
        return self.grid_height

    def rotary(self, num_frames: int, device, first_frame: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin `(T*N, head_dim/2)` for temporal positions ``first_frame .. first_frame + T - 1`` (memoised)."""
        key = (num_frames, first_frame, str(device))
        memo = self.__dict__.setdefault("_rotary_memo", {})
        if key not in memo:
            if len(memo) > 256:
                memo.clear()
            memo[key] = self._rotary(num_frames, device, first_frame)
        return memo[key]

    def _rotary(self, num_frames: int, device, first_frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        t_dim, h_dim, w_dim = self.config.rope_axes_dim
        frame = torch.arange(first_frame, first_frame + num_frames, device=device).repeat_interleave(self.tokens_per_frame)
        row = torch.arange(self.grid_height, device=device).repeat_interleave(self.grid_width).repeat(num_frames)
        col = torch.arange(self.grid_width, device=device).repeat(self.grid_height * num_frames)
        theta = self.config.rope_theta
        angles = torch.cat([rope_frequencies(frame, t_dim, theta), rope_frequencies(row, h_dim, theta),
                            rope_frequencies(col, w_dim, theta)], dim=-1)
        return angles.cos(), angles.sin()

    def rotary_at(self, frame_positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for per-row temporal positions (rows of a KV cache whose frames sit at different positions).

        Args:
            frame_positions: `(B, T)` long, the temporal position of each frame of each row.

        Returns:
            cos, sin `(B, 1, T*N, head_dim/2)` float32 (broadcast over heads by :func:`apply_rope`); row b equals
            :meth:`rotary` for frames at ``frame_positions[b]``.
        """
        t_dim, h_dim, w_dim = self.config.rope_axes_dim
        batch, frames = frame_positions.shape
        theta, device = self.config.rope_theta, frame_positions.device
        frame = frame_positions.repeat_interleave(self.tokens_per_frame, dim=1)  # (B, T*N)
        row = torch.arange(self.grid_height, device=device).repeat_interleave(self.grid_width).repeat(frames)
        col = torch.arange(self.grid_width, device=device).repeat(self.grid_height * frames)
        temporal = rope_frequencies(frame.flatten(), t_dim, theta).view(batch, frame.shape[1], t_dim // 2)
        spatial = torch.cat([rope_frequencies(row, h_dim, theta), rope_frequencies(col, w_dim, theta)], dim=-1)
        angles = torch.cat([temporal, spatial.expand(batch, -1, -1)], dim=-1).unsqueeze(1)
        return angles.cos(), angles.sin()

    def _run(self, sample, timestep, action_embedding, cos, sin, mask, cache=None, rotate_past=None,
             keys_only=False, task_embedding=None, task=None):
        """Shared body of :meth:`forward` and :meth:`forward_cached`; returns output and per-layer keys/values.
        (``task``, the indices, is unused: the task enters through ``task_embedding``.)

        ``keys_only``: the output is None; the last block computes only its keys and values."""
        batch, frames = sample.shape[:2]
        p = self.config.patch_size
        # 1. patchify: (B, T, C, h, w) -> (B, T, N, C*p*p) -> (B, T, N, D)
        tokens = rearrange(sample, "b t c (gh p1) (gw p2) -> b t (gh gw) (c p1 p2)", p1=p, p2=p)
        hidden_states = self.patch_embed(tokens) + self.spatial_embed
        # 2. per-frame conditioning: timestep + action
        temb = self.timestep_embedder(self.time_proj(timestep.flatten()).to(hidden_states.dtype))
        temb = temb.view(batch, frames, -1)
        action_embedding = action_embedding.to(temb.dtype)
        conditioning = temb + action_embedding
        if task_embedding is not None:
            conditioning = conditioning + task_embedding.to(temb.dtype)
        # 3. frame-causal blocks
        keys, values = [], []
        for index, block in enumerate(self.blocks):
            past = cache.rotated_layer(index, rotate_past) if cache is not None and cache.num_frames else None
            last = index == len(self.blocks) - 1
            hidden_states, k, v = block(hidden_states, conditioning, action_embedding, cos, sin, mask, past,
                                        keys_only and last)
            keys.append(k)
            values.append(v)
        if keys_only:
            return None, keys, values
        # 4. final adaLN and unpatchify
        shift, scale = self.adaLN_out(conditioning).unsqueeze(2).chunk(2, dim=-1)
        hidden_states = self.norm_out(hidden_states) * (1 + scale) + shift
        out = self.proj_out(hidden_states)
        out = rearrange(out, "b t (gh gw) (c p1 p2) -> b t c (gh p1) (gw p2)", gh=self.grid_height, p1=p, p2=p)
        return out, keys, values

    def new_cache(self, batch_size: int, local_attn_size: int, sink_size: int = 0,
                  dtype: torch.dtype | None = None) -> FrameKVCache:
        """An empty :class:`~worldsim.models.kv_cache.FrameKVCache` whose shapes follow this model's config."""
        config = self.config
        return FrameKVCache(config.num_layers, batch_size, config.num_attention_heads, config.attention_head_dim,
                            self.tokens_per_frame, local_attn_size, sink_size,
                            dtype=dtype or self.patch_embed.weight.dtype, device=self.patch_embed.weight.device)

