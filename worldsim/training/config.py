"""Run configuration: typed dataclasses validated in ``__post_init__``, filled from a YAML preset under
``configs/`` and dotted command-line overrides (``transformer.num_layers=4``) merged with OmegaConf.

:class:`RunConfig` holds a ``train-autoencoder`` / ``train`` run; :class:`HeadsConfig`, :class:`DecoderConfig` and
:class:`DistillConfig` the settings of ``train-heads``, ``train-decoder`` and ``distill`` (flat: their YAML keys and
dotted overrides are the field names, ``steps=100``).

Unknown keys and values of the wrong type are refused by OmegaConf's structured merge; impossible values by the
dataclasses themselves. Each error names the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


def _positive(owner: str, **values) -> None:
    for name, value in values.items():
        if value is None or value <= 0:
            raise ValueError(f"{owner}.{name} must be > 0, got {value}")


def _non_negative(owner: str, **values) -> None:
    for name, value in values.items():
        if value is None or value < 0:
            raise ValueError(f"{owner}.{name} must be >= 0, got {value}")


def _mixed_precision(owner: str, value) -> str:
    """accelerate's precision name; YAML 1.1 reads an unquoted ``no`` as false, which means ``"no"`` here."""
    if value in (False, "False", "false"):
        value = "no"
    if value not in ("no", "bf16", "fp16"):
        raise ValueError(f"{owner}.mixed_precision must be 'no', 'bf16' or 'fp16', got {value!r}")
    return value


@dataclass
class DatasetConfig:
    """Which data, at what resolution, in clips of how many frames.

    ``embodiment`` names the action source (default: the dataset's ``robot_type``); ``repeat`` oversamples the
    dataset's clips in joint training (an integer factor). Frames are ``image_size`` pixels high and
    ``image_width`` wide (None: square); a dataset with several cameras has its views side by side in each frame,
    each ``image_width / V`` wide, in the order of ``camera_keys`` (None: all of the dataset's cameras, in its
    order).
    """

    root: str = "data/train"
    image_size: int = 64
    image_width: int | None = None
    camera_keys: list[str] | None = None
    num_frames: int = 8
    val_episodes: int = 4
    cache_dir: str | None = None
    embodiment: str | None = None
    repeat: int = 1

    def __post_init__(self):
        _positive("dataset", image_size=self.image_size, num_frames=self.num_frames)
        if self.image_width is not None:
            _positive("dataset", image_width=self.image_width)
        if self.camera_keys is not None and (not self.camera_keys or len(set(self.camera_keys)) != len(self.camera_keys)):
            raise ValueError(f"dataset.camera_keys must be distinct camera keys or null, got {self.camera_keys}")
        if self.num_frames < 2:
            raise ValueError(f"dataset.num_frames must be >= 2 (history + target), got {self.num_frames}")
        if self.val_episodes < 0:
            raise ValueError(f"dataset.val_episodes must be >= 0, got {self.val_episodes}")
        if self.repeat < 1:
            raise ValueError(f"dataset.repeat must be >= 1, got {self.repeat}")

    @property
    def frame_size(self) -> int | tuple[int, int]:
        """The frame size: ``image_size`` when square, else ``(image_size, image_width)`` (height, width)."""
        if self.image_width is None or self.image_width == self.image_size:
            return self.image_size
        return self.image_size, self.image_width


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
    """World-model transformer architecture (see :class:`worldsim.models.WorldModelTransformer`).

    ``condition_on_task`` conditions the model on each episode's task text (:mod:`worldsim.models.tasks`): a learned
    table of the datasets' task texts, or, with ``task_text_encoder`` (``"module:object"``, an importable
    :class:`~worldsim.models.tasks.TaskTextEncoder` or a callable returning one), the encoder's vectors of them.

    ``backbone`` (``"wan"``) trains a pretrained video transformer adapted by :mod:`worldsim.models.backbones`
    instead of worldsim's own: from ``backbone_path`` (a local diffusers ``WanTransformer3DModel`` folder) or from
    scratch with ``backbone_config`` (its ``config.json`` entries); the size fields above are then unused.
    ``text_states`` is a safetensors file ``{task text: (L, text_dim)}`` of the backbone's text-encoder output per
    task (key ``""``: the null row); without it every text row is zero. ``gradient_checkpointing`` recomputes each
    block in the backward pass (backbones only). ``lora_rank`` > 0 fine-tunes the backbone through LoRA adapters
    (peft) on its attention projections, scaled by ``lora_alpha / lora_rank`` (alpha defaults to the rank), with its
    own weights frozen; saved checkpoints hold the merged weights. 0 (default): every weight trains.
    """

    patch_size: int = 2
    num_layers: int = 6
    num_attention_heads: int = 4
    attention_head_dim: int = 64
    mlp_ratio: float = 4.0
    action_num_frequencies: int = 6
    rope_axes_dim: list[int] = field(default_factory=lambda: [32, 16, 16])
    num_action_experts: int = 0
    action_experts_top_k: int = 2
    condition_on_task: bool = False
    task_text_encoder: str | None = None
    backbone: str | None = None
    backbone_path: str | None = None
    backbone_config: dict | None = None
    text_states: str | None = None
    gradient_checkpointing: bool = False
    lora_rank: int = 0
    lora_alpha: float | None = None

    def __post_init__(self):
        if self.backbone is not None:
            from worldsim.models.backbones import BACKBONES

            if self.backbone not in BACKBONES:
                raise ValueError(f"transformer.backbone {self.backbone!r} is not one of {sorted(BACKBONES)}")
            if (self.backbone_path is None) == (self.backbone_config is None):
                raise ValueError("transformer.backbone needs exactly one of transformer.backbone_path (a folder of "
                                 "pretrained weights) and transformer.backbone_config (an architecture from scratch)")
            if self.task_text_encoder is not None:
                raise ValueError("a pretrained backbone keeps its own text conditioning: give transformer.text_states "
                                 "(its text encoder's output per task), not transformer.task_text_encoder")
        else:
            given = [name for name in ("backbone_path", "backbone_config", "text_states", "lora_alpha")
                     if getattr(self, name) is not None]
            given += [name for name in ("lora_rank", "gradient_checkpointing") if getattr(self, name)]
            if given:
                raise ValueError(f"transformer.{given[0]} is for adapted backbones: it needs transformer.backbone "
                                 "(worldsim's own transformer has no such setting)")
        if self.lora_rank < 0:
            raise ValueError(f"transformer.lora_rank must be >= 0 (0: full fine-tuning), got {self.lora_rank}")
        if self.text_states is not None and not self.condition_on_task:
            raise ValueError("transformer.text_states needs transformer.condition_on_task: true")
        if self.task_text_encoder is not None and not self.condition_on_task:
            raise ValueError("transformer.task_text_encoder needs transformer.condition_on_task: true")
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
    task_dropout_prob: float = 0.1
    motion_weight: float = 4.0
    motion_threshold: float = 0.3
    router_aux_weight: float = 0.01
    router_mi_weight: float = 0.0
    validation_context_frames: int = 4
    validation_frames: int = 32
    resume: bool = True
    #: group the video frames in time as a video VAE compresses them (``AutoencoderKLWan``: 4 frames per latent frame
    #: after the first): each episode is encoded as one clip, and the 4 actions behind a latent frame are one grouped
    #: action. ``dataset.num_frames`` and ``validation_context_frames`` then count latent frames.
    temporal_compression: bool = False

    def __post_init__(self):
        _positive("train", max_steps=self.max_steps, batch_size=self.batch_size,
                  gradient_accumulation_steps=self.gradient_accumulation_steps, learning_rate=self.learning_rate,
                  checkpointing_steps=self.checkpointing_steps)
        self.mixed_precision = _mixed_precision("train", self.mixed_precision)
        if self.min_history_noise > self.max_history_noise:
            raise ValueError(f"train.min_history_noise {self.min_history_noise} exceeds train.max_history_noise "
                             f"{self.max_history_noise}")
        for name in ("history_prob", "min_history_noise", "max_history_noise", "action_dropout_prob",
                     "task_dropout_prob"):
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


@dataclass
class HeadsConfig:
    """``worldsim train-heads``: outcome heads (:func:`~worldsim.training.train_heads.train_heads`).

    ``steps``, ``batch_size``, ``learning_rate`` and ``seed`` set AdamW with cosine decay; ``val_episodes`` last
    episodes of the first dataset are held out for the report (unless validation datasets are given);
    ``embodiment`` names the embodiment the datasets show (None: the model's); ``value_discount`` (gamma in
    (0, 1)) also trains a value output, None none.
    """

    steps: int = 3000
    batch_size: int = 256
    learning_rate: float = 1e-3
    val_episodes: int = 10
    seed: int = 0
    embodiment: str | None = None
    value_discount: float | None = None

    def __post_init__(self):
        _positive("heads", steps=self.steps, batch_size=self.batch_size, learning_rate=self.learning_rate)
        _non_negative("heads", val_episodes=self.val_episodes, seed=self.seed)
        if self.value_discount is not None and not 0.0 < self.value_discount < 1.0:
            raise ValueError(f"heads.value_discount must be in (0, 1) or None, got {self.value_discount}")


@dataclass
class DecoderConfig:
    """``worldsim train-decoder``: a light frame decoder (:func:`~worldsim.training.train_decoder.train_decoder`).

    ``steps``, ``batch_size``, ``learning_rate`` and ``seed`` set AdamW with warm-up and cosine decay;
    ``block_out_channels`` and ``num_blocks`` (residual blocks per stage) the
    :class:`~worldsim.models.autoencoders.LightDecoder`; ``val_frames`` the frames of the report;
    ``mixed_precision`` accelerate's; ``max_minutes`` stops before ``steps`` (None: never).
    """

    steps: int = 9000
    batch_size: int = 64
    learning_rate: float = 2e-3
    block_out_channels: int = 32
    num_blocks: list[int] = field(default_factory=lambda: [2, 2, 1, 0])
    val_frames: int = 1024
    seed: int = 0
    mixed_precision: str = "bf16"
    max_minutes: float | None = None

    def __post_init__(self):
        _positive("decoder", steps=self.steps, batch_size=self.batch_size, learning_rate=self.learning_rate,
                  block_out_channels=self.block_out_channels, val_frames=self.val_frames)
        _non_negative("decoder", seed=self.seed)
        self.num_blocks = list(self.num_blocks)  # a keyword caller may pass a tuple
        if not self.num_blocks or any(count < 0 for count in self.num_blocks):
            raise ValueError(f"decoder.num_blocks must be a non-empty list of counts >= 0, got {self.num_blocks}")
        self.mixed_precision = _mixed_precision("decoder", self.mixed_precision)
        if self.max_minutes is not None:
            _positive("decoder", max_minutes=self.max_minutes)


@dataclass
class DistillConfig:
    """``worldsim distill``: a few-step student (:func:`~worldsim.training.distill.distill_world_model`).

    ``student_steps`` Euler steps per frame for the student; ``teacher_steps`` the teacher's, a multiple of them
    (None: twice ``student_steps``); ``timestep_spacing`` of both samplers; ``num_layers`` the student's depth
    (None: the teacher's); ``steps``, ``batch_size``, ``learning_rate``, ``seed`` set AdamW with warm-up and cosine
    decay, whose EMA (``ema_decay``) is the student written; ``val_clips`` clips for the report;
    ``mixed_precision`` accelerate's; ``max_minutes`` stops before ``steps`` (None: never).
    """

    student_steps: int = 1
    teacher_steps: int | None = None
    timestep_spacing: str = "trailing"
    num_layers: int | None = None
    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 1e-4
    ema_decay: float = 0.999
    val_clips: int = 256
    seed: int = 0
    mixed_precision: str = "bf16"
    max_minutes: float | None = None

    def __post_init__(self):
        from worldsim.pipelines.sampler import TIMESTEP_SPACINGS

        if self.student_steps < 1:
            raise ValueError(f"distill.student_steps must be >= 1, got {self.student_steps}")
        teacher_steps = self.resolved_teacher_steps
        if teacher_steps < self.student_steps or teacher_steps % self.student_steps:
            raise ValueError(f"distill.teacher_steps ({teacher_steps}) must be a multiple of student_steps "
                             f"({self.student_steps}), so that every student sigma is one of the teacher's")
        if self.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"distill.timestep_spacing must be one of {TIMESTEP_SPACINGS}, got "
                             f"{self.timestep_spacing!r}")
        if self.num_layers is not None and self.num_layers < 1:
            raise ValueError(f"distill.num_layers must be >= 1 or None, got {self.num_layers}")
        _positive("distill", steps=self.steps, batch_size=self.batch_size, learning_rate=self.learning_rate,
                  val_clips=self.val_clips)
        _non_negative("distill", seed=self.seed)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"distill.ema_decay must be in [0, 1), got {self.ema_decay}")
        self.mixed_precision = _mixed_precision("distill", self.mixed_precision)
        if self.max_minutes is not None:
            _positive("distill", max_minutes=self.max_minutes)

    @property
    def resolved_teacher_steps(self) -> int:
        """``teacher_steps``, or twice ``student_steps`` when it is None."""
        return 2 * self.student_steps if self.teacher_steps is None else self.teacher_steps


ConfigT = TypeVar("ConfigT")


def config_with(schema: type[ConfigT], config: ConfigT | None, overrides: dict[str, Any], caller: str) -> ConfigT:
    """``config`` (default: ``schema()``) with some fields replaced, validated again.

    What lets a training function take either a config object or, as before configs, its fields as keywords
    (``train_heads(model, datasets, steps=60)``).

    Args:
        schema: the config dataclass.
        config: an instance of ``schema`` or None.
        overrides: field values; they replace the config's.
        caller: the function's name, for the error.

    Raises:
        TypeError: ``config`` is not a ``schema`` or a key is not one of its fields (as for an unknown keyword).
        ValueError: an impossible value (the dataclass's own validation).
    """
    if config is None:
        config = schema()
    elif not isinstance(config, schema):
        raise TypeError(f"{caller}() config must be a {schema.__name__}, got {type(config).__name__}")
    unknown = sorted(set(overrides) - {f.name for f in fields(schema)})
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                        f"{schema.__name__} fields: {', '.join(f.name for f in fields(schema))}")
    return replace(config, **overrides) if overrides else config


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, schema: type = RunConfig,
                values: dict[str, Any] | None = None):
    """Merges the defaults, a YAML preset and overrides into a validated config (a :class:`RunConfig` by default).

    Args:
        path: YAML file (``configs/<run>.yaml``) or ``None`` for the defaults.
        overrides: ``["train.max_steps=100", "transformer.num_layers=2"]``, applied last.
        schema: the config dataclass: :class:`RunConfig`, :class:`HeadsConfig`, :class:`DecoderConfig` or
            :class:`DistillConfig`.
        values: field values merged after the YAML and before ``overrides`` (e.g. a verb's own flags).

    Returns:
        An instance of ``schema``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: an unknown key, a value of the wrong type, an impossible value, or YAML that is malformed or
            asks to construct a Python object (``!!python/...`` tags); the message names the key or the tag.
            Configs never select classes or import paths: every key is a field of ``schema``.
    """
    try:
        parts = [OmegaConf.structured(schema)]
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"config file not found: {path}")
            parts.append(OmegaConf.load(path))
        if values:
            parts.append(OmegaConf.create(dict(values)))
        if overrides:
            parts.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*parts)
        return OmegaConf.to_object(merged)
    except (OmegaConfBaseException, yaml.YAMLError) as error:
        # OmegaConf reads YAML with a safe loader: python/object tags are refused here, never constructed.
        raise ValueError(f"bad config{f' {path}' if path else ''}: {error}") from error
    except TypeError as error:  # OmegaConf cannot merge a dotted key into a list (``extra_datasets.2.repeat=8``)
        raise ValueError(f"bad config override among {list(overrides or [])}: {error}; a list entry (such as one of "
                         f"extra_datasets) is set in the YAML file, not by a dotted override") from error


def config_to_yaml(config) -> str:
    """A config dataclass (:class:`RunConfig`, :class:`HeadsConfig`, ...) as YAML that :func:`load_config` reads."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


@dataclass
class StateConfig:
    """``worldsim train-state``: a state predictor (:func:`~worldsim.training.train_state.train_state_predictor`).

    ``steps``, ``batch_size``, ``learning_rate`` and ``seed`` set AdamW with cosine decay; ``hidden_dim`` the
    :class:`~worldsim.models.state.StatePredictor`'s convolution width; ``previous_state_noise`` the standard
    deviation of the Gaussian noise added to the previous state in training (normalised units: 0.2 is a fifth of a
    dimension's spread in the data), so that the predictor corrects its own errors from the frame instead of
    accumulating them in a closed loop; ``val_episodes`` last episodes of the first dataset are held out for the
    report (unless validation datasets are given). The defaults (noise 0.2, 6,000 steps) come from a sweep on five
    Meta-World tasks (docs/log.md, "State predictor: more noise, more steps"). ``action_input``: the predictor also
    reads the action that produced each frame (the datasets' ``action``); ``latent_noise`` the largest standard
    deviation of Gaussian noise added to the (unit-variance) latents in training (each sample at a level drawn
    uniformly below it), so that the predictor learns to lean on the previous state and the action where a frame is
    unclear, as imagined frames are. ``imagined_fraction`` is the share of each batch drawn from imagined frames:
    one window per training episode, ``imagined_context`` real frames then ``imagined_horizon`` frames imagined by
    the model under the recorded actions, each paired with the real state (0: real frames only). On imagined frames
    of five Meta-World tasks, the action input alone changed nothing; with a latent noise of 2.0 it lowered the
    error, and an imagined fraction of 0.5 lowered it further (docs/log.md, "State predictor: the action, noisy
    latents and imagined frames").
    """

    steps: int = 6000
    batch_size: int = 256
    learning_rate: float = 1e-3
    hidden_dim: int = 64
    previous_state_noise: float = 0.2
    action_input: bool = True
    latent_noise: float = 2.0
    imagined_fraction: float = 0.0
    imagined_horizon: int = 40
    imagined_context: int = 4
    val_episodes: int = 10
    seed: int = 0

    def __post_init__(self):
        _positive("state", steps=self.steps, batch_size=self.batch_size, learning_rate=self.learning_rate,
                  hidden_dim=self.hidden_dim, imagined_horizon=self.imagined_horizon,
                  imagined_context=self.imagined_context)
        _non_negative("state", previous_state_noise=self.previous_state_noise, latent_noise=self.latent_noise,
                      val_episodes=self.val_episodes, seed=self.seed)
        if not 0.0 <= self.imagined_fraction <= 1.0:
            raise ValueError(f"state.imagined_fraction must be in [0, 1], got {self.imagined_fraction}")
        if self.imagined_fraction and round(self.batch_size * self.imagined_fraction) == 0:
            raise ValueError(f"state.imagined_fraction {self.imagined_fraction} of batch_size {self.batch_size} "
                             f"rounds to no imagined frame per batch; raise either")


@dataclass(frozen=True)
class BCConfig:
    """``worldsim train-bc``: a behaviour-cloned policy (:func:`~worldsim.training.train_bc.train_bc`,
    :class:`~worldsim.policies.bc.BCNetwork`).

    ``steps``, ``batch_size``, ``learning_rate``, ``weight_decay`` and ``seed`` set AdamW with cosine decay;
    ``save_steps`` the steps after which a checkpoint is written (the last step is always one), so that a run leaves
    policies of graded skill. ``success_only`` trains (and scores) only episodes that reach ``next.success`` (the
    demonstrations). Each camera is read at ``image_size`` x ``image_width`` pixels (None: square) and shifted by up
    to ``shift_pixels`` pixels at random in training (edge pixels repeated; 0: no augmentation); ``camera_keys`` the
    cameras, in order (None: every camera of the first dataset). ``channels`` (one per stride-2 convolution) and
    ``hidden_dim`` size the network. ``val_frames`` caps the held-out frames scored at each checkpoint (an evenly
    spaced subset; None: all). ``mixed_precision`` accelerate's.
    """

    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    save_steps: list[int] = field(default_factory=lambda: [250, 1000, 3000])
    success_only: bool = True
    image_size: int = 64
    image_width: int | None = None
    shift_pixels: int = 4
    camera_keys: list[str] | None = None
    channels: list[int] = field(default_factory=lambda: [16, 32, 32, 64])
    hidden_dim: int = 256
    val_frames: int | None = 4096
    seed: int = 0
    mixed_precision: str = "bf16"  # as every worldsim trainer: accelerate keeps one precision per process

    def __post_init__(self):
        _positive("bc", steps=self.steps, batch_size=self.batch_size, learning_rate=self.learning_rate,
                  image_size=self.image_size, hidden_dim=self.hidden_dim)
        _non_negative("bc", weight_decay=self.weight_decay, shift_pixels=self.shift_pixels, seed=self.seed)
        if self.image_width is not None:
            _positive("bc", image_width=self.image_width)
        if self.val_frames is not None:
            _positive("bc", val_frames=self.val_frames)
        # frozen: normalised values are set through object.__setattr__ (a keyword caller may pass tuples)
        object.__setattr__(self, "save_steps", list(self.save_steps))
        object.__setattr__(self, "channels", list(self.channels))
        if not self.save_steps or any(not 1 <= step <= self.steps for step in self.save_steps):
            raise ValueError(f"bc.save_steps must be steps in [1, steps={self.steps}], got {self.save_steps}; with "
                             f"fewer steps set save_steps too (save_steps=[{max(1, self.steps // 4)},{self.steps}])")
        if not self.channels or any(width < 1 for width in self.channels):
            raise ValueError(f"bc.channels must be a non-empty list of positive widths, got {self.channels}")
        if self.camera_keys is not None:
            object.__setattr__(self, "camera_keys", list(self.camera_keys))
            if not self.camera_keys or len(set(self.camera_keys)) != len(self.camera_keys):
                raise ValueError(f"bc.camera_keys must be distinct camera keys or null, got {self.camera_keys}")
        object.__setattr__(self, "mixed_precision", _mixed_precision("bc", self.mixed_precision))
