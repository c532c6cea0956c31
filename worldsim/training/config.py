"""Run configuration: typed dataclasses validated in ``__post_init__``, filled from a YAML preset under
``configs/`` and dotted command-line overrides (``transformer.num_layers=4``) merged with OmegaConf.

Unknown keys and values of the wrong type are refused by OmegaConf's structured merge; impossible values by the
dataclasses themselves. Each error names the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


def _positive(owner: str, **values) -> None:
    for name, value in values.items():
        if value is None or value <= 0:
            raise ValueError(f"{owner}.{name} must be > 0, got {value}")


@dataclass
class DatasetConfig:
    """Which data, at what resolution, in clips of how many frames.

    ``embodiment`` names the action source (default: the dataset's ``robot_type``); ``repeat`` oversamples the
    dataset's clips in joint training (an integer factor).
    """

    root: str = "data/train"
    image_size: int = 64
    num_frames: int = 8
    val_episodes: int = 4
    cache_dir: str | None = None
    embodiment: str | None = None
    repeat: int = 1

    def __post_init__(self):
        _positive("dataset", image_size=self.image_size, num_frames=self.num_frames)
        if self.num_frames < 2:
            raise ValueError(f"dataset.num_frames must be >= 2 (history + target), got {self.num_frames}")
        if self.val_episodes < 0:
            raise ValueError(f"dataset.val_episodes must be >= 0, got {self.val_episodes}")
        if self.repeat < 1:
            raise ValueError(f"dataset.repeat must be >= 1, got {self.repeat}")


@dataclass
class AutoencoderConfig:
    """The diffusers ``AutoencoderKL`` architecture and its training."""

    latent_channels: int = 8
    block_out_channels: list[int] = field(default_factory=lambda: [32, 32, 64, 64])
    layers_per_block: int = 1
    norm_num_groups: int = 8
    steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 1e-3
    kl_weight: float = 1e-6
    max_minutes: float | None = None
    output_dir: str = "runs/world-model/autoencoder"
    init_from: str | None = None

    def __post_init__(self):
        _positive("autoencoder", latent_channels=self.latent_channels, steps=self.steps,
                  batch_size=self.batch_size, learning_rate=self.learning_rate)
        if self.kl_weight < 0:
            raise ValueError(f"autoencoder.kl_weight must be >= 0, got {self.kl_weight}")


@dataclass
class TransformerConfig:
    """World-model transformer architecture (see :class:`worldsim.models.WorldModelTransformer`)."""

    patch_size: int = 2
    num_layers: int = 6
    num_attention_heads: int = 4
    attention_head_dim: int = 64
    mlp_ratio: float = 4.0
    action_num_frequencies: int = 6
    rope_axes_dim: list[int] = field(default_factory=lambda: [32, 16, 16])
    num_action_experts: int = 0
    action_experts_top_k: int = 2

    def __post_init__(self):
        if self.num_action_experts < 0 or (self.num_action_experts and not
                                           1 <= self.action_experts_top_k <= self.num_action_experts):
            raise ValueError(f"transformer.num_action_experts must be >= 0 and action_experts_top_k in [1, "
                             f"num_action_experts], got {self.num_action_experts}, {self.action_experts_top_k}")
        _positive("transformer", patch_size=self.patch_size, num_layers=self.num_layers,
                  num_attention_heads=self.num_attention_heads, attention_head_dim=self.attention_head_dim)
        if sum(self.rope_axes_dim) != self.attention_head_dim or any(d % 2 for d in self.rope_axes_dim):
            raise ValueError(
                f"transformer.rope_axes_dim {list(self.rope_axes_dim)} must be even numbers summing to "
                f"attention_head_dim {self.attention_head_dim}"
            )


@dataclass
class TrainConfig:
    """World-model training (flow matching with per-frame noise levels, on accelerate)."""

    output_dir: str = "runs/world-model/world_model"
    autoencoder: str = "runs/world-model/autoencoder/final"
    init_from: str | None = None
    max_steps: int = 6000
    max_minutes: float | None = None
    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    mixed_precision: str = "bf16"
    ema_decay: float = 0.999
    checkpointing_steps: int = 1000
    checkpoints_total_limit: int = 2
    seed: int = 0
    history_prob: float = 0.5
    min_history_noise: float = 0.0
    max_history_noise: float = 0.1
    logit_mean: float = 0.0
    logit_std: float = 1.0
    action_dropout_prob: float = 0.0
    motion_weight: float = 4.0
    motion_threshold: float = 0.3
    router_aux_weight: float = 0.01
    router_mi_weight: float = 0.0
    validation_context_frames: int = 4
    validation_frames: int = 32
    resume: bool = True

    def __post_init__(self):
        _positive("train", max_steps=self.max_steps, batch_size=self.batch_size,
                  gradient_accumulation_steps=self.gradient_accumulation_steps, learning_rate=self.learning_rate,
                  checkpointing_steps=self.checkpointing_steps)
        if self.mixed_precision in (False, "False", "false"):  # YAML 1.1 reads an unquoted `no` as false
            self.mixed_precision = "no"
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"train.mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        if self.min_history_noise > self.max_history_noise:
            raise ValueError(f"train.min_history_noise {self.min_history_noise} exceeds train.max_history_noise "
                             f"{self.max_history_noise}")
        for name in ("history_prob", "min_history_noise", "max_history_noise", "action_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"train.{name} must be in [0, 1], got {value}")
        if self.motion_weight < 0 or self.motion_threshold <= 0:
            raise ValueError(f"train.motion_weight must be >= 0 and train.motion_threshold > 0, got "
                             f"{self.motion_weight}, {self.motion_threshold}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class RolloutConfig:
    """Sampling defaults stored with the model (the user may override them per call)."""

    num_inference_steps: int = 10
    context_noise: float = 0.05
    action_guidance_scale: float = 1.0
    shift: float = 1.0

    def __post_init__(self):
        _positive("rollout", num_inference_steps=self.num_inference_steps, shift=self.shift)
        if self.action_guidance_scale < 0:
            raise ValueError(f"rollout.action_guidance_scale must be >= 0, got {self.action_guidance_scale}")
        if not 0.0 <= self.context_noise < 1.0:
            raise ValueError(f"rollout.context_noise must be in [0, 1), got {self.context_noise}")


@dataclass
class RunConfig:
    """Everything one ``worldsim train-autoencoder`` / ``worldsim train`` run needs.

    ``extra_datasets`` are trained jointly with ``dataset`` (one model, one embodiment per dataset); they must
    share its ``image_size`` and ``num_frames``.
    """

    name: str = "world-model"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    extra_datasets: list[DatasetConfig] = field(default_factory=list)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Merges the defaults, a YAML preset and dotted overrides into a validated :class:`RunConfig`.

    Args:
        path: YAML file (``configs/<run>.yaml``) or ``None`` for the defaults.
        overrides: ``["train.max_steps=100", "transformer.num_layers=2"]``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: an unknown key, a value of the wrong type, an impossible value, or YAML that is malformed or
            asks to construct a Python object (``!!python/...`` tags); the message names the key or the tag.
            Configs never select classes or import paths: every key is a field of :class:`RunConfig`.
    """
    schema = OmegaConf.structured(RunConfig)
    try:
        parts = [schema]
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"config file not found: {path}")
            parts.append(OmegaConf.load(path))
        if overrides:
            parts.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*parts)
        return OmegaConf.to_object(merged)
    except (OmegaConfBaseException, yaml.YAMLError) as error:
        # OmegaConf reads YAML with a safe loader: python/object tags are refused here, never constructed.
        raise ValueError(f"bad config{f' {path}' if path else ''}: {error}") from error


def config_to_yaml(config: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))
