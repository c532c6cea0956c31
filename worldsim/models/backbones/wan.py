"""A pretrained Wan video transformer adapted into an action-conditioned, frame-causal world model.

:class:`WanWorldModel` holds a diffusers :class:`~diffusers.WanTransformer3DModel` (Wan 2.1, Wan Team 2025; the
backbone Astra adapts, Zhu et al. 2025) as ``self.backbone`` and runs its weights in worldsim's frame layout:

* **Frames.** Every latent frame is its own block of ``N = (h / 2) * (w / 2)`` tokens (the backbone's patch
  embedding, whose temporal patch must be 1). Self-attention is block-causal over frames (a token sees its own frame
  and earlier ones), with the backbone's 3-D rotary positions at the frames' slots; the keys and values of history
  frames live in a :class:`~worldsim.models.kv_cache.FrameKVCache`, so a rollout step runs only the new frame.
* **Noise.** Each frame has its own timestep (diffusion forcing): the backbone's timestep embedding and its six
  adaLN modulation vectors are computed per frame and broadcast over the frame's tokens (the per-token form that
  Wan 2.2's ``timestep`` of shape ``(B, seq_len)`` also uses).
* **Text.** The backbone's cross-attention to text is kept. The model stores one text-encoder output per task
  (``task_text_states``, ``(num_tasks + 1, L, text_dim)``: the dataset's task texts as the backbone's own text encoder
  embeds them, and a null row, all zeros until :meth:`set_task_text_states` fills them) and attends to the row of
  each sample's task.
* **Actions.** The actions are embedded as in :class:`~worldsim.models.WorldModelTransformer` (an encoder per action
  space, a shared mixture of action experts, a learned null action) and enter every block twice: added to the frame's
  adaLN modulation through a zero-initialised projection, and through a zero-initialised action-aware adapter after
  the cross-attention (Astra). A learned task vector joins the modulation the same way. Every new weight starts at
  zero, so before fine-tuning the adapted model computes exactly what the backbone computes: for one frame what
  ``WanTransformer3DModel.forward`` computes, for several what it computes with a block-causal attention mask and
  per-token timesteps (``tests/test_backbones.py`` checks both).

The model maps ``(sample (B, T, C, h, w), timestep (B, T), action (B, T, A)) -> velocity (B, T, C, h, w)``, the
flow-matching velocity ``noise - sample_0`` that Wan itself is trained on, so worldsim's pipeline, env, ranking and
steering run it unchanged.

Temporal compression. Wan's own VAE folds 4 video frames into one latent frame. worldsim's data and env step one
video frame per latent frame (a per-frame 2-D autoencoder, or any VAE applied to single frames), so here one action
produces one latent frame. A model whose latent frames each cover ``k`` video frames groups the ``k`` actions that
produced them into one flat action of ``k * A`` values, in time order, which the Box action encoder embeds like any
other flat action; the env side of that grouping is not built yet (see docs/backbones.md).
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from diffusers import WanTransformer3DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

from worldsim.models.actions import ActionAdapter
from worldsim.models.kv_cache import FrameKVCache
from worldsim.models.world_model import FrameCausalVideoModel, apply_rope, attention
from worldsim.utils.shapes import size_pair

#: the backbone modules that get LoRA adapters by default: every attention projection (self- and cross-attention)
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
#: WanTransformer3DModel config keys that worldsim's adaptation does not support (image-to-video conditioning).
_UNSUPPORTED_BACKBONE_KEYS = ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len")


def check_wan_config(backbone: dict) -> None:
    """Refuses a ``WanTransformer3DModel`` config that the frame-causal adaptation cannot run.

    Raises:
        ValueError: a temporal patch other than 1, image-to-video conditioning (``image_dim``,
            ``added_kv_proj_dim``), or different input and output channels; the message names the key.
    """
    patch = list(backbone.get("patch_size", (1, 2, 2)))
    if len(patch) != 3 or patch[0] != 1 or patch[1] != patch[2]:
        raise ValueError(f"backbone patch_size {patch}: the adaptation needs [1, p, p] (one latent frame per token "
                         "block, square spatial patches)")
    for key in _UNSUPPORTED_BACKBONE_KEYS:
        if backbone.get(key) is not None:
            raise ValueError(f"backbone {key}={backbone[key]!r}: image-to-video conditioning is not supported; "
                             "adapt a text-to-video checkpoint")
    out_channels = backbone.get("out_channels") or backbone.get("in_channels", 16)
    if out_channels != backbone.get("in_channels", 16):
        raise ValueError(f"backbone in_channels {backbone.get('in_channels')} and out_channels {out_channels} differ; "
                         "a world model predicts the velocity of its own latents")


class WanWorldModel(FrameCausalVideoModel, ModelMixin, ConfigMixin):
    """A diffusers ``WanTransformer3DModel`` as an action-conditioned, frame-causal world model.

    Args:
        backbone_config: the ``WanTransformer3DModel`` config (``config.json`` of a Wan ``transformer/`` folder, or a tiny
            one for tests), checked by :func:`check_wan_config`.
        sample_size: the latent grid, an int ``h = w`` or ``[h, w]``, divisible by the backbone's spatial patch.
        action_dim, action_num_frequencies, embodiments, num_action_experts, action_experts_top_k, action_space:
            the action conditioning, as in :class:`~worldsim.models.WorldModelTransformer`.
        tasks: the task texts the model is conditioned on (None: no task conditioning; every sample then attends to
            the null text row).
        text_sequence_length: L, tokens per stored text embedding (Wan's umT5 pipeline pads to 512).
        in_channels: C, the latent channels; None takes the backbone's (what the saved config records).

    Shapes:
        forward: sample `(B, T, C, h, w)`, timestep `(B, T)` float (``sigma * 1000``), action `(B, T, A)` ->
        `(B, T, C, h, w)`; see :meth:`~worldsim.models.world_model.FrameCausalVideoModel.forward` and
        :meth:`~worldsim.models.world_model.FrameCausalVideoModel.forward_cached`.

    Raises:
        ValueError: a backbone config :func:`check_wan_config` refuses, a ``sample_size`` not divisible by the
            spatial patch, or a bad action or task conditioning (as for ``WorldModelTransformer``).

    Build one from downloaded weights with :meth:`from_backbone`.
    """

    # Weights are kept in float32 and run under bf16 autocast (the pipeline and the trainer): the timestep embedder,
    # modulation tables and norms that Wan keeps in float32 stay there. (No ``_keep_in_fp32_modules``: diffusers then
    # forbids the exact, low_cpu_mem_usage=False loading that worldsim's loader uses to refuse mismatched weights.)
    _supports_gradient_checkpointing = True
    _no_split_modules = ["WanTransformerBlock"]

    @register_to_config
    def __init__(
        self,
        backbone_config: dict | None = None,
        sample_size: int | tuple[int, int] = 8,
        action_dim: int = 2,
        action_num_frequencies: int = 6,
        embodiments: list[dict] | None = None,
        num_action_experts: int = 0,
        action_experts_top_k: int = 2,
        action_space: dict | None = None,
        tasks: list[str] | None = None,
        text_sequence_length: int = 16,
        in_channels: int | None = None,
    ):
        super().__init__()
        backbone = {key: value for key, value in dict(backbone_config or {}).items() if not key.startswith("_")}
        check_wan_config(backbone)
        self.backbone = WanTransformer3DModel(**backbone)
        wan = self.backbone.config
        self.patch = wan.patch_size[1]
        self.latent_size = size_pair(sample_size, "sample_size")
        if any(side % self.patch for side in self.latent_size):
            raise ValueError(f"sample_size {sample_size} is not divisible by the backbone's patch {self.patch}")
        if text_sequence_length < 1:
            raise ValueError(f"text_sequence_length must be >= 1, got {text_sequence_length}")
        self.grid_height, self.grid_width = (side // self.patch for side in self.latent_size)
        self.num_heads, self.head_dim = wan.num_attention_heads, wan.attention_head_dim
        dim = self.num_heads * self.head_dim
        self._init_conditioning(dim, action_dim, action_num_frequencies, embodiments, num_action_experts,
                                action_experts_top_k, action_space, tasks, None)
        # text rows: one per task and the null row (last); a buffer-like tensor saved with the weights, not trained
        rows = (len(tasks) if tasks else 0) + 1
        self.task_text_states = nn.Parameter(torch.zeros(rows, text_sequence_length, wan.text_dim), requires_grad=False)
        # the new conditioning paths, zero at initialisation: the model starts as the backbone
        self.condition_proj = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.condition_proj[-1].weight)
        nn.init.zeros_(self.condition_proj[-1].bias)
        self.action_adapters = nn.ModuleList([ActionAdapter(dim) for _ in range(wan.num_layers)])
        if in_channels is not None and in_channels != wan.in_channels:
            raise ValueError(f"in_channels {in_channels} differs from the backbone's {wan.in_channels}")
        self.register_to_config(in_channels=wan.in_channels)  # what pipelines read, as for WorldModelTransformer
        self.gradient_checkpointing = False

    @property
    def tokens_per_frame(self) -> int:
        """N, patches per frame."""
        return self.grid_height * self.grid_width

    @property
    def num_layers(self) -> int:
        """Transformer blocks of the backbone."""
        return self.backbone.config.num_layers

    @classmethod
    def from_backbone(cls, folder, **kwargs) -> "WanWorldModel":
        """Adapts downloaded Wan weights: a ``WanTransformer3DModel`` folder (``config.json`` + safetensors, e.g. the
        ``transformer/`` folder of ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``) into a world model whose new weights are
        zero, so it starts as the pretrained backbone.

        Args:
            folder: the backbone folder (read with ``from_pretrained(use_safetensors=True)``: no pickle).
            **kwargs: the other arguments of :class:`WanWorldModel` (``sample_size``, ``action_dim``, ``tasks``, ...).

        Raises:
            ValueError: a config :func:`check_wan_config` refuses, or weights that do not match it.
        """
        try:
            pretrained, info = WanTransformer3DModel.from_pretrained(folder, use_safetensors=True,
                                                                     output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as error:  # no folder, no safetensors, shapes that differ, ...
            raise ValueError(f"{folder}: cannot load the backbone's weights: {str(error)[:400]}") from error
        wrong = {kind: list(info.get(kind) or [])[:6] for kind in ("missing_keys", "unexpected_keys",
                                                                   "mismatched_keys", "error_msgs") if info.get(kind)}
        if wrong:  # diffusers only warns and initialises missing tensors at random: refuse instead
            raise ValueError(f"{folder}: the backbone's weights do not match its config.json ({wrong})")
        config = {key: value for key, value in dict(pretrained.config).items() if not key.startswith("_")}
        model = cls(backbone_config=config, **kwargs)
        model.backbone.load_state_dict(pretrained.state_dict())
        return model.to(pretrained.dtype)

    @property
    def has_lora(self) -> bool:
        """Whether LoRA layers (:meth:`add_lora`) are in the backbone."""
        return bool(getattr(self.backbone, "_hf_peft_config_loaded", False))

    def add_lora(self, rank: int, alpha: float | None = None, target_modules: tuple[str, ...] = LORA_TARGETS) -> None:
        """Low-rank adapters (LoRA, Hu et al. 2021) on the backbone's attention projections, through peft (diffusers'
        ``add_adapter``): the backbone's own weights are frozen, its LoRA factors and every worldsim weight (action and
        task conditioning) train. LoRA's up-projections start at zero, so the model is unchanged until training.

        Args:
            rank: r >= 1.
            alpha: LoRA's scale numerator (default ``rank``: scale 1).
            target_modules: module names (suffixes) in the backbone's blocks that get adapters.

        Raises:
            ImportError: peft is not installed (``pip install 'worldsim[lora]'``).
            ValueError: ``rank < 1``, or LoRA is already added.
        """
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if self.has_lora:
            raise ValueError("this model already has LoRA layers; merge them first (merge_lora)")
        try:
            from peft import LoraConfig
        except ImportError as error:
            raise ImportError("LoRA fine-tuning needs peft: pip install 'worldsim[lora]'") from error
        self.backbone.requires_grad_(False)
        self.backbone.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(target_modules),
                                             init_lora_weights=True))

    def merge_lora(self) -> None:
        """Folds the LoRA factors into the backbone's weights and removes the peft layers, leaving a plain model
        (what a saved folder holds); the backbone's weights are trainable again (the stored text states stay frozen).
        The merge is exact for the current factors; merged EMA factors are not the EMA of merged weights.

        Raises:
            ValueError: the model has no LoRA layers.
        """
        if not self.has_lora:
            raise ValueError("this model has no LoRA layers to merge")
        self.backbone.fuse_lora(lora_scale=1.0)
        self.backbone.unload_lora()
        self.backbone.requires_grad_(True)

    def set_task_text_states(self, index: int, states: torch.Tensor) -> None:
        """Stores the backbone's text-encoder output for task ``index`` (``len(tasks)``: the null row, e.g. the
        encoding of the empty prompt).

        Args:
            index: a task index (:meth:`task_index`) or the null index.
            states: `(L, text_dim)` float, the text encoder's last hidden states (Wan: umT5-XXL), zero-padded to L.

        Raises:
            ValueError: an index outside ``[0, len(tasks)]`` or states of another shape.
        """
        rows = self.task_text_states.shape[0]
        if not 0 <= index < rows:
            raise ValueError(f"task index {index} is outside [0, {rows - 1}]")
        states = torch.as_tensor(states)
        if states.shape != self.task_text_states.shape[1:]:
            raise ValueError(f"text states have shape {tuple(states.shape)}, expected "
                             f"{tuple(self.task_text_states.shape[1:])}")
        with torch.no_grad():
            self.task_text_states[index] = states.to(self.task_text_states)

    def rotary(self, num_frames: int, device, first_frame: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin `(T*N, head_dim/2)` of the backbone's rotary table at frame slots ``first_frame ..`` (memoised).

        Raises:
            ValueError: a slot beyond the backbone's rotary table (``rope_max_seq_len``).
        """
        self._check_slot(first_frame + num_frames - 1)
        key = (num_frames, first_frame, str(device))
        memo = self.__dict__.setdefault("_rotary_memo", {})
        if key not in memo:
            if len(memo) > 256:
                memo.clear()
            cos, sin = self._angles(torch.arange(first_frame, first_frame + num_frames, device=device)[None])
            memo[key] = (cos[0, 0], sin[0, 0])
        return memo[key]

    def rotary_at(self, frame_positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin `(B, 1, T*N, head_dim/2)` for per-row frame slots `(B, T)` long (a KV cache's restarted rows).

        Raises:
            ValueError: a slot beyond the backbone's rotary table.
        """
        self._check_slot(int(frame_positions.max()))
        return self._angles(frame_positions)

    def _check_slot(self, slot: int) -> None:
        if slot >= self.backbone.rope.max_seq_len:
            raise ValueError(f"frame slot {slot} is beyond the backbone's rotary table "
                             f"({self.backbone.rope.max_seq_len} slots, rope_max_seq_len)")

    def _angles(self, frame_positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rope = self.backbone.rope
        device = frame_positions.device
        batch, frames = frame_positions.shape
        parts = []
        for table in (rope.freqs_cos, rope.freqs_sin):
            time, row, col = table.to(device).split([rope.t_dim, rope.h_dim, rope.w_dim], dim=1)
            # the table repeats each angle for the two channels of a pair; keep one per pair (head_dim / 2)
            time, row, col = time[:, 0::2].float(), row[:, 0::2].float(), col[:, 0::2].float()
            t = time[frame_positions.repeat_interleave(self.tokens_per_frame, dim=1)]  # (B, T*N, t/2)
            r = row[torch.arange(self.grid_height, device=device).repeat_interleave(self.grid_width).repeat(frames)]
            c = col[torch.arange(self.grid_width, device=device).repeat(self.grid_height * frames)]
            spatial = torch.cat([r, c], dim=-1).expand(batch, -1, -1)
            parts.append(torch.cat([t, spatial], dim=-1).unsqueeze(1))
        return parts[0], parts[1]

    def new_cache(self, batch_size: int, local_attn_size: int, sink_size: int = 0,
                  dtype: torch.dtype | None = None) -> FrameKVCache:
        """An empty :class:`~worldsim.models.kv_cache.FrameKVCache` for this backbone's blocks."""
        return FrameKVCache(self.num_layers, batch_size, self.num_heads, self.head_dim, self.tokens_per_frame,
                            local_attn_size, sink_size, dtype=dtype or self.weight_dtype, device=self.null_action.device)

    def text_states(self, task: torch.Tensor | None, batch: int) -> torch.Tensor:
        """`(B, L, text_dim)`: the stored text states of `(B,)` long task indices (None: the null row)."""
        if task is None:
            task = torch.full((batch,), self.task_text_states.shape[0] - 1, dtype=torch.long,
                              device=self.task_text_states.device)
        return self.task_text_states[task]

    def _attend(self, block, x, cos, sin, mask, past, keys_only):
        """The block's self-attention over `(B, L, D)` tokens, block-causal, with cached history keys."""
        attn = block.attn1
        key = attn.norm_k(attn.to_k(x))  # Wan normalises across all heads before splitting them
        key = rearrange(key, "b l (h d) -> b h l d", h=self.num_heads)
        value = rearrange(attn.to_v(x), "b l (h d) -> b h l d", h=self.num_heads)
        if keys_only:
            return None, key, value
        query = rearrange(attn.norm_q(attn.to_q(x)), "b l (h d) -> b h l d", h=self.num_heads)
        dtype = value.dtype
        q = apply_rope(query.float(), cos, sin).to(dtype)
        k = apply_rope(key.float(), cos, sin).to(dtype)
        v = value
        if past is not None:
            past_k, past_v = past
            if past_k.shape[0] != q.shape[0]:  # one cache shared by guidance branches stacked along the batch
                past_k = past_k.repeat(q.shape[0] // past_k.shape[0], 1, 1, 1)
                past_v = past_v.repeat(q.shape[0] // past_v.shape[0], 1, 1, 1)
            k, v = torch.cat([past_k.to(dtype), k], dim=2), torch.cat([past_v.to(dtype), v], dim=2)
        out = attention(q, k, v, mask)
        out = attn.to_out[1](attn.to_out[0](rearrange(out, "b h l d -> b l (h d)")))
        return out, key, value

    def _block(self, index, hidden, modulation, text, action_embedding, cos, sin, mask, past, keys_only):
        """Backbone block ``index`` on `(B, T, N, D)` tokens with per-frame modulation `(B, T, 6, D)`, then the
        block's action adapter; returns the new tokens (None when ``keys_only``) and the block's keys and values."""
        block = self.backbone.blocks[index]
        batch, frames, tokens, _ = hidden.shape
        shift, scale, gate, c_shift, c_scale, c_gate = (block.scale_shift_table.unsqueeze(0)
                                                       + modulation.float()).unsqueeze(2).unbind(3)
        x = (block.norm1(hidden.float()) * (1 + scale) + shift).type_as(hidden)
        out, keys, values = self._attend(block, x.flatten(1, 2), cos, sin, mask, past, keys_only)
        if keys_only:
            return None, keys, values
        hidden = (hidden.float() + out.view(batch, frames, tokens, -1) * gate).type_as(hidden)
        x = block.norm2(hidden.float()).type_as(hidden)
        hidden = hidden + block.attn2(x.flatten(1, 2), text).view(batch, frames, tokens, -1)
        hidden = self.action_adapters[index](hidden, action_embedding.to(hidden.dtype))
        x = (block.norm3(hidden.float()) * (1 + c_scale) + c_shift).type_as(hidden)
        return (hidden.float() + block.ffn(x).float() * c_gate).type_as(hidden), keys, values

    def _run(self, sample, timestep, action_embedding, cos, sin, mask, cache=None, rotate_past=None,
             keys_only=False, task_embedding=None, task=None):
        """Body of :meth:`forward` and :meth:`forward_cached`: the backbone's blocks in the frame layout, plus the
        action and task conditioning; returns the output (None when ``keys_only``) and per-layer keys and values."""
        wan = self.backbone
        batch, frames = sample.shape[:2]
        # 1. patchify with the backbone's Conv3d (temporal patch 1): (B, T, C, h, w) -> (B, T, N, D)
        hidden = wan.patch_embedding(rearrange(sample, "b t c h w -> b c t h w").to(wan.patch_embedding.weight.dtype))
        hidden = rearrange(hidden, "b d t gh gw -> b t (gh gw) d")
        # 2. per-frame timestep embedding and adaLN modulation (B, T, 6, D), plus the action and task offsets
        embedder = wan.condition_embedder
        projected = embedder.timesteps_proj(timestep.flatten())
        time_dtype = next(iter(embedder.time_embedder.parameters())).dtype
        temb = embedder.time_embedder(projected.to(time_dtype)).type_as(hidden)  # (B*T, D)
        modulation = embedder.time_proj(embedder.act_fn(temb)).view(batch, frames, 6, -1)
        temb = temb.view(batch, frames, -1)
        condition = action_embedding.to(hidden.dtype)
        if task_embedding is not None:
            condition = condition + task_embedding.to(hidden.dtype)
        modulation = modulation + self.condition_proj(condition).view(batch, frames, 6, -1)
        text = embedder.text_embedder(self.text_states(task, batch).to(hidden.dtype))
        # 3. blocks (each recomputed in the backward pass under gradient checkpointing)
        keys, values = [], []
        checkpointing = self.gradient_checkpointing and torch.is_grad_enabled()
        for index in range(len(wan.blocks)):
            past = cache.rotated_layer(index, rotate_past) if cache is not None and cache.num_frames else None
            only_keys = keys_only and index == len(wan.blocks) - 1
            arguments = (index, hidden, modulation, text, action_embedding, cos, sin, mask, past, only_keys)
            if checkpointing:
                hidden, k, v = torch.utils.checkpoint.checkpoint(self._block, *arguments, use_reentrant=False)
            else:
                hidden, k, v = self._block(*arguments)
            if cache is not None or keys_only:  # a full forward pass (training) keeps no keys alive
                keys.append(k)
                values.append(v)
        if keys_only:
            return None, keys, values
        # 4. output modulation and unpatchify (Wan orders a token's outputs (p_t, p_h, p_w, C))
        shift, scale = (wan.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).unsqueeze(2).unbind(3)
        hidden = (wan.norm_out(hidden.float()) * (1 + scale) + shift).type_as(hidden)
        out = wan.proj_out(hidden)
        return rearrange(out, "b t (gh gw) (p1 p2 c) -> b t c (gh p1) (gw p2)", gh=self.grid_height,
                         p1=self.patch, p2=self.patch), keys, values
