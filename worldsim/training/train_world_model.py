"""``worldsim train``: trains the world-model transformer on accelerate.

Objective: flow matching (rectified flow; Lipman et al. 2023, Liu et al. 2023) with an independent noise level
per frame (diffusion forcing; Chen et al. 2024). Each frame of a clip is, independently, either *history*
(probability ``history_prob``: sigma ~ U[0, max_history_noise], no loss: the noise-augmented history the model
sees at inference) or a *target* (sigma ~ logit-normal, loss on the velocity ``noise - latents``). Block-causal
attention makes every target frame a next-frame prediction from the frames before it.

Runs on accelerate (bf16 autocast on CPU, gradient accumulation, multi-GPU by ``accelerate launch``), keeps an EMA
of the weights (diffusers ``EMAModel``), writes ``checkpoint-<step>/`` folders atomically, each a loadable
:class:`~worldsim.pipelines.WorldModelPipeline` (EMA weights) plus ``training_state/`` to resume from, and a
fixed-seed validation rollout video beside it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import accelerate
from accelerate import Accelerator
from accelerate.utils import DistributedType
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from worldsim.constants import ACTION
from worldsim.data.clips import ActionNormalizer, ClipDataset
from worldsim.data.frame_cache import load_frame_cache
from worldsim.data.lerobot import LeRobotDataset
from worldsim.evaluation.router import router_report
from worldsim.models.actions import load_balancing_loss, router_mutual_information
from worldsim.models.autoencoders import check_video_autoencoder, encode_frames, encode_video, load_autoencoder
from worldsim.data.spaces import continuous_mask
from worldsim.models.tasks import encode_tasks, load_task_encoder
from worldsim.models.world_model import WorldModelTransformer
from worldsim.pipelines.world_model import WorldModelPipeline
from worldsim.registry import file_digest
from worldsim.training.config import RunConfig, config_to_yaml
from worldsim.training.state import load_optimizer, rng_state, save_optimizer, set_rng_state
from worldsim.data.starts import START_CLIPS, start_set
from worldsim.training.train_autoencoder import split_episodes
from worldsim.utils.files import replace_folder, write_text_atomic
from worldsim.utils.shapes import size_config
from worldsim.utils.video import write_video

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def action_normalizer_for(dataset: LeRobotDataset) -> ActionNormalizer:
    """Bounds for action normalisation: the env's Box bounds when the dataset records them, else the data's min/max.

    Discrete, MultiBinary and MultiDiscrete entries are not normalised (see :mod:`worldsim.data.spaces`).
    """
    space = dataset.action_space
    if space and space.get("type") == "Box" and np.all(np.isfinite(space["low"])) and np.all(np.isfinite(space["high"])):
        return ActionNormalizer(np.reshape(space["low"], -1), np.reshape(space["high"], -1))
    continuous = continuous_mask(space) if space else None
    return ActionNormalizer(dataset.stats[ACTION]["min"], dataset.stats[ACTION]["max"], continuous)


def _latent_cache_label(frames: np.ndarray, autoencoder_path: Path, camera_keys: list[str] | None,
                        square_short: bool = True) -> tuple[str, str]:
    """``(size, digest)`` naming a latent cache: the frame size (``"64"`` for a square one when ``square_short``,
    else ``"HxW"``), plus a hash of the cameras when several sit side by side, and the autoencoder weights' hash."""
    digest = hashlib.sha256((autoencoder_path / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()[:12]
    height, width = frames.shape[1:3]
    size = str(height) if height == width and square_short else f"{height}x{width}"
    if camera_keys and len(camera_keys) > 1:
        size += "_" + hashlib.sha256("|".join(camera_keys).encode()).hexdigest()[:8]
    return size, digest


def load_latent_cache(dataset: LeRobotDataset, frames: np.ndarray, autoencoder: AutoencoderKL, autoencoder_path: Path,
                      cache_dir: Path, progress: bool = True, camera_keys: list[str] | None = None) -> np.ndarray:
    """Encodes every frame once with the autoencoder (posterior mean, normalised) and caches it.

    Args:
        frames: `(N, H, W, 3)` uint8, every frame of ``dataset`` (:func:`~worldsim.data.frame_cache.load_frame_cache`).
        camera_keys: the cameras side by side in ``frames`` (part of the cache's name when there are several).

    Returns:
        `np.ndarray` `(N, C, h, w)` float16 (memory map).
    """
    size, digest = _latent_cache_label(frames, autoencoder_path, camera_keys)
    path = cache_dir / f"latents_{size}_{len(frames)}_{digest}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    latents = None
    chunk = 1024
    for start in tqdm(range(0, len(frames), chunk), desc="encoding latents", disable=not progress):
        encoded = encode_frames(autoencoder, torch.from_numpy(np.array(frames[start:start + chunk])))
        if latents is None:
            tmp = path.with_suffix(".partial.npy")
            latents = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(frames), *encoded.shape[1:]))
        latents[start:start + len(encoded)] = encoded.cpu().numpy().astype(np.float16)
    latents.flush()
    del latents
    os.replace(path.with_suffix(".partial.npy"), path)
    return np.load(path, mmap_mode="r")


def latent_episode_lengths(episode_from: np.ndarray, episode_to: np.ndarray, group: int) -> np.ndarray:
    """Latent frames of each episode under a VAE that puts ``group`` video frames in each latent frame after the
    first: ``1 + (L - 1) // group`` for an episode of ``L`` frames (trailing frames that fill no group are dropped).

    Returns:
        `np.ndarray` `(E,)` int64.
    """
    lengths = np.asarray(episode_to) - np.asarray(episode_from)
    return np.where(lengths > 0, 1 + (lengths - 1) // group, 0).astype(np.int64)


def load_video_latent_cache(dataset: LeRobotDataset, frames: np.ndarray, autoencoder, autoencoder_path: Path,
                            cache_dir: Path, progress: bool = True, camera_keys: list[str] | None = None) -> np.ndarray:
    """Encodes every episode as one clip with a time-compressing video VAE (:func:`encode_video`) and caches it.

    Args:
        frames: `(N, H, W, 3)` uint8, every frame of ``dataset``.

    Returns:
        `np.ndarray` `(N', C, h, w)` float16 (memory map): each episode's latent frames in episode order,
        :func:`latent_episode_lengths` of them per episode; latent ``j >= 1`` of an episode holds its frames
        ``k (j - 1) + 1 .. k j``.

    Raises:
        ValueError: a VAE that :func:`~worldsim.models.autoencoders.check_video_autoencoder` refuses.

    Each episode goes to the VAE's device whole, as float32 pixels: an episode of 500 frames at 480 x 832 is 2.4 GB
    there (the VAE itself encodes it 4 frames at a time).
    """
    group = check_video_autoencoder(autoencoder)
    size, digest = _latent_cache_label(frames, autoencoder_path, camera_keys, square_short=False)
    lengths = latent_episode_lengths(dataset.episode_from, dataset.episode_to, group)
    path = cache_dir / f"video_latents_{group}x_{size}_{len(frames)}_{digest}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    latents, row = None, 0
    for episode in tqdm(range(dataset.num_episodes), desc="encoding latents (clips)", disable=not progress):
        if lengths[episode] == 0:
            continue
        start = int(dataset.episode_from[episode])
        clip = torch.from_numpy(np.array(frames[start:start + 1 + group * (int(lengths[episode]) - 1)]))
        encoded = encode_video(autoencoder, clip[None])[0]
        if latents is None:
            tmp = path.with_suffix(".partial.npy")
            latents = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16,
                                                shape=(int(lengths.sum()), *encoded.shape[1:]))
        latents[row:row + len(encoded)] = encoded.cpu().numpy().astype(np.float16)
        row += len(encoded)
    latents.flush()
    del latents
    os.replace(path.with_suffix(".partial.npy"), path)
    return np.load(path, mmap_mode="r")


def grouped_actions(action: np.ndarray, episode_from: np.ndarray, episode_to: np.ndarray, group: int,
                    width: int) -> np.ndarray:
    """The action of every latent frame of a time-compressed dataset: the ``group`` actions applied after it, each
    zero-padded to ``width``, concatenated in time order. Only slots past an episode's last action are zeros; the
    last latent frame's action produces nothing either way.

    Args:
        action: `(N, A)` float32 normalised per-frame actions (``action[t]`` leads from frame t to t + 1).
        episode_from, episode_to: `(E,)` frame ranges.

    Returns:
        `np.ndarray` `(N', group * width)` float32 aligned with :func:`load_video_latent_cache`'s rows: latent ``j``
        of an episode starting at frame ``s`` gets actions ``s + group j .. s + group j + group - 1``.
    """
    if width < action.shape[1]:
        raise ValueError(f"width {width} is narrower than the {action.shape[1]}-dimensional actions")
    lengths = latent_episode_lengths(episode_from, episode_to, group)
    out = np.zeros((int(lengths.sum()), group, width), dtype=np.float32)
    row = 0
    for start, end, count in zip(episode_from, episode_to, lengths):
        for j in range(int(count)):
            first = int(start) + group * j
            taken = action[first:min(first + group, int(end))]
            out[row + j, :len(taken), :action.shape[1]] = taken
        row += int(count)
    return out.reshape(len(out), group * width)


class EmbodimentClips(torch.utils.data.Dataset):
    """A :class:`ClipDataset` tagged with its embodiment index, actions zero-padded to the model's width.

    Args:
        frame_task: `(N,)` int64, the model's task index of every dataset frame (its episode's task), or None for a
            model without task conditioning.

    Returns (``__getitem__``): the clip dict plus ``"embodiment"`` (int) and, with ``frame_task``, ``"task"`` (int).
    """

    def __init__(self, clips: ClipDataset, embodiment: int, width: int, frame_task: np.ndarray | None = None):
        self.clips, self.embodiment, self.width, self.frame_task = clips, embodiment, width, frame_task

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, item: int) -> dict:
        clip = self.clips[item]
        pad = self.width - clip["action"].shape[-1]
        if pad:
            clip["action"] = torch.nn.functional.pad(clip["action"], (0, pad))
        clip["embodiment"] = self.embodiment
        if self.frame_task is not None:
            clip["task"] = int(self.frame_task[clip["index"]])
        return clip


class Source:
    """One training dataset: its frames and latents, action normalisation, split and embodiment name."""

    def __init__(self, data_config, autoencoder: AutoencoderKL, autoencoder_path: Path, progress: bool,
                 group: int = 1):
        self.config, self.group = data_config, group
        self.dataset = LeRobotDataset(data_config.root)
        self.frames = load_frame_cache(self.dataset, data_config.frame_size, data_config.cache_dir, progress=progress,
                                       video_keys=data_config.camera_keys)
        cache_dir = Path(data_config.cache_dir) if data_config.cache_dir else self.dataset.root / "cache"
        self.camera_keys = list(data_config.camera_keys or self.dataset.video_keys)
        load = load_video_latent_cache if group > 1 else load_latent_cache
        self.latents = np.asarray(load(self.dataset, self.frames, autoencoder, autoencoder_path, cache_dir, progress,
                                       self.camera_keys))
        # the rows of ``latents`` of each episode: its frames, or its latent frames when time is compressed
        if group == 1:
            self.latent_from, self.latent_to = np.asarray(self.dataset.episode_from), np.asarray(self.dataset.episode_to)
        else:
            lengths = latent_episode_lengths(self.dataset.episode_from, self.dataset.episode_to, group)
            self.latent_to = np.cumsum(lengths)
            self.latent_from = self.latent_to - lengths
        self.normalizer = action_normalizer_for(self.dataset)
        self.train_episodes, self.val_episodes = split_episodes(self.dataset.num_episodes, data_config.val_episodes)
        self.name = data_config.embodiment or self.dataset.info.get("robot_type") or Path(data_config.root).name
        space = self.dataset.action_space
        if not space:  # older datasets: a Box from the data's bounds
            space = {"type": "Box", "low": self.normalizer.minimum.tolist(), "high": self.normalizer.maximum.tolist(),
                     "shape": [self.dataset.action_dim], "dtype": "float32"}
        self.action_space = space

    def frame_tasks(self, tasks: list[str], null_index: int) -> np.ndarray:
        """`(N,)` int64: the index in ``tasks`` of every row of ``latents``' episode task (``null_index`` for a task
        not there): per frame, or per latent frame when time is compressed."""
        lookup = {text: index for index, text in enumerate(tasks)}
        per_episode = np.array([lookup.get(text, null_index) for text in self.dataset.episode_tasks], dtype=np.int64)
        out = np.full(len(self.latents), null_index, dtype=np.int64)
        for episode, index in enumerate(per_episode):
            out[self.latent_from[episode]:self.latent_to[episode]] = index
        return out

    def clips(self, width: int) -> ClipDataset:
        """Training clips of ``dataset.num_frames`` latent frames, actions normalised (grouped when time is
        compressed, :func:`grouped_actions`, each action padded to ``width``)."""
        action = self.normalizer.normalize(self.dataset.action)
        if self.group > 1:
            action = grouped_actions(action, self.dataset.episode_from, self.dataset.episode_to, self.group, width)
        return ClipDataset(self.latents, action, self.latent_from, self.latent_to, self.config.num_frames,
                           episodes=self.train_episodes)

    def metadata(self) -> dict:
        return {"env_id": self.dataset.env_id, "fps": self.dataset.fps, "action_space": self.action_space,
                "action_normalizer": self.normalizer.to_dict(), "dataset_frame_shape": list(self.dataset.frame_shape),
                "camera_keys": self.camera_keys}

    def model_action_space(self, width: int) -> dict:
        """The action space the model's encoder reads: the recorded one, or with time compressed a Box of the
        ``group`` grouped actions, each padded to ``width``."""
        if self.group == 1:
            return self.action_space
        return {"type": "Box", "low": [-1.0] * (self.group * width), "high": [1.0] * (self.group * width),
                "shape": [self.group * width], "dtype": "float32"}


def share_embodiments(sources: list[Source]) -> None:
    """Lets several datasets show one embodiment (say, random-policy and expert episodes of the same env): they must
    record the same action space, and they get one action normaliser, the union of their bounds, so the model sees one
    action encoding per embodiment. Changes the sources' ``normalizer`` in place.

    Raises:
        ValueError: datasets of one embodiment that record different action spaces (the message names both).
    """
    for name in dict.fromkeys(source.name for source in sources):
        group = [source for source in sources if source.name == name]
        if len(group) < 2:
            continue
        for other in group[1:]:
            if other.action_space != group[0].action_space:
                raise ValueError(f"datasets {group[0].config.root} and {other.config.root} both show embodiment "
                                 f"{name!r} but record different action spaces ({group[0].action_space} vs "
                                 f"{other.action_space}); set dataset.embodiment to tell them apart")
        merged = ActionNormalizer(np.min([s.normalizer.minimum for s in group], axis=0),
                                  np.max([s.normalizer.maximum for s in group], axis=0),
                                  group[0].normalizer.continuous)
        for source in group:
            source.normalizer = merged


def carried_components(source: Path | None, autoencoder_path: Path, embodiments: list[str]) -> tuple:
    """The outcome heads, light decoder and state predictors of the pipeline a fine-tune starts from, when they stay
    valid.

    All three read the autoencoder's latents (not the transformer's state), so a transformer fine-tuned on the same
    autoencoder keeps them: ``worldsim train`` with ``train.init_from`` a shipped pipeline writes checkpoints that
    still have ``heads/``, ``decoder/`` and ``state/``, and need no ``worldsim train-heads`` / ``train-decoder`` /
    ``train-state`` rerun.

    Args:
        source: ``train.init_from`` (a pipeline folder, a transformer folder or None).
        autoencoder_path: this run's autoencoder folder (``train.autoencoder``).
        embodiments: this run's embodiment names (the heads were trained on the source's).

    Returns:
        ``(heads, decoder, state_predictors)``: the source pipeline's outcome heads (``{embodiment: OutcomeHeads}``,
        every embodiment's), light decoder and state predictors (``{embodiment: StatePredictor}``), each None where
        the source is not a pipeline folder,
        has no such part, its autoencoder's weights differ from this run's (SHA-256 of the safetensors file), or
        its embodiments differ from this run's.

    Raises:
        ValueError / FileNotFoundError: the source pipeline folder fails to load
            (:meth:`WorldModelPipeline.from_pretrained`).
    """
    if source is None or not (source / "worldsim.json").is_file():
        return None, None, None
    weights = "diffusion_pytorch_model.safetensors"
    ours, theirs = autoencoder_path / weights, source / "autoencoder" / weights
    if not theirs.is_file() or file_digest(theirs) != file_digest(ours):
        return None, None, None
    pipeline = WorldModelPipeline.from_pretrained(source)
    if sorted(pipeline.embodiments) != sorted(embodiments):
        return None, None, None
    return dict(pipeline.outcome_heads) or None, pipeline.decoder, dict(pipeline.state_predictors) or None


def build_transformer(transformer_config, in_channels: int, sample_size, action_dim: int, embodiments: list | None,
                      action_space: dict | None, tasks: list[str] | None, text_encoder=None):
    """The world model a run trains: worldsim's :class:`WorldModelTransformer`, or a video backbone adapted by
    :mod:`worldsim.models.backbones` (``transformer.backbone``), from pretrained weights or from scratch.

    Args:
        transformer_config: the run's :class:`~worldsim.training.config.TransformerConfig`.
        in_channels, sample_size: the latents' channels C and grid ``[h, w]``.
        action_dim, embodiments, action_space: the action conditioning (see :class:`WorldModelTransformer`).
        tasks: the task texts the model is conditioned on, or None.
        text_encoder: a :class:`~worldsim.models.tasks.TaskTextEncoder` for worldsim's own transformer, or None.

    Raises:
        FileNotFoundError: ``transformer.backbone_path`` or ``transformer.text_states`` is missing.
        ValueError: a backbone whose latent channels differ from the autoencoder's, text states that do not cover
            every task or disagree in shape, or a bad architecture (the model's own checks).
    """
    t = transformer_config
    common = dict(action_dim=action_dim, action_num_frequencies=t.action_num_frequencies, embodiments=embodiments,
                  num_action_experts=t.num_action_experts, action_experts_top_k=t.action_experts_top_k,
                  action_space=action_space, tasks=tasks)
    if t.backbone is None:
        model = WorldModelTransformer(
            in_channels=in_channels, sample_size=sample_size, patch_size=t.patch_size, num_layers=t.num_layers,
            num_attention_heads=t.num_attention_heads, attention_head_dim=t.attention_head_dim,
            mlp_ratio=t.mlp_ratio, rope_axes_dim=tuple(t.rope_axes_dim),
            task_embedding_dim=None if text_encoder is None else int(text_encoder.embedding_dim), **common)
        if text_encoder is not None:
            for index, vector in enumerate(encode_tasks(text_encoder, tasks)):
                model.task_embedder.set_text_embedding(index, vector)
        return model
    from worldsim.models.backbones import BACKBONES

    cls = BACKBONES[t.backbone]
    states = None
    if t.text_states is not None:
        if not Path(t.text_states).is_file():
            raise FileNotFoundError(f"transformer.text_states not found: {t.text_states}")
        states = load_file(t.text_states)
        missing = [task for task in tasks if task not in states]
        if missing:
            raise ValueError(f"transformer.text_states {t.text_states} lacks the tasks {missing}")
        lengths = {tuple(value.shape) for value in states.values()}
        if len(lengths) != 1 or len(next(iter(lengths))) != 2:
            raise ValueError(f"transformer.text_states {t.text_states}: every entry must be (L, text_dim) of one "
                             f"shape, got {sorted(lengths)}")
        common["text_sequence_length"] = next(iter(lengths))[0]
    else:
        common["text_sequence_length"] = 1  # every row zero: one token is the same attention, cheaper
    if t.backbone_path is not None:
        if not Path(t.backbone_path).is_dir():
            raise FileNotFoundError(f"transformer.backbone_path not found: {t.backbone_path}")
        model = cls.from_backbone(t.backbone_path, sample_size=sample_size, **common).float()
    else:
        model = cls(backbone_config=dict(t.backbone_config), sample_size=sample_size, **common)
    if model.config.in_channels != in_channels:
        raise ValueError(f"the backbone takes {model.config.in_channels} latent channels, the autoencoder gives "
                         f"{in_channels}; use the backbone's own VAE or a matching autoencoder")
    if states is not None:
        for index, task in enumerate(tasks):
            model.set_task_text_states(index, states[task])
        if "" in states:
            model.set_task_text_states(len(tasks), states[""])
    if t.gradient_checkpointing:
        model.gradient_checkpointing = True
    if t.lora_rank:
        model.add_lora(t.lora_rank, t.lora_alpha)
    return model


def ema_parameters(model) -> list[torch.nn.Parameter]:
    """The parameters the EMA averages: all of them, or, for a model with LoRA layers, only the trainable ones (the
    frozen backbone would cost a full copy of it for nothing)."""
    if getattr(model, "has_lora", False):
        return [parameter for parameter in model.parameters() if parameter.requires_grad]
    return list(model.parameters())


def exported_ema_model(model, ema: EMAModel):
    """The EMA weights as a plain model of the run's class: what a checkpoint folder holds.

    Args:
        model: the unwrapped model being trained.
        ema: its ``EMAModel``, over :func:`ema_parameters` of ``model``.

    Returns:
        A fresh model from ``model``'s config holding the EMA weights; for a model with LoRA layers
        (``transformer.lora_rank``), a copy whose trainable weights are the EMA ones, with the LoRA factors then merged
        into the backbone's weights (the merge of averaged factors, not the average of merged weights).
    """
    if getattr(model, "has_lora", False):
        exported = copy.deepcopy(model)
        ema.copy_to(ema_parameters(exported))
        exported.merge_lora()
        return exported
    exported = type(model).from_config(model.config)
    ema.copy_to(exported.parameters())
    return exported


def load_initial_weights(model: WorldModelTransformer, source: Path) -> list[str]:
    """Fine-tuning start: copies a trained transformer's weights into ``model`` wherever names and shapes agree.

    A single-embodiment source's ``action_encoder.*`` initialises the target's encoder of the same embodiment
    (the source pipeline's ``worldsim.json`` names it), so a joint model can grow out of a single-environment one.

    Args:
        model: the new transformer.
        source: a pipeline folder or a transformer folder.

    Returns:
        Names of ``model``'s tensors left at their fresh initialisation.

    Raises:
        ValueError: the core geometry (width, depth, patching, latent shape) differs.
    """
    folder = source / "transformer" if (source / "transformer").is_dir() else source
    if not isinstance(model, WorldModelTransformer):
        raise ValueError(f"train.init_from {folder}: fine-tuning starts of {type(model).__name__} models come from "
                         "transformer.backbone_path, or resume from the run's own checkpoints")
    pretrained = WorldModelTransformer.from_pretrained(folder, use_safetensors=True)
    core = ("in_channels", "sample_size", "patch_size", "num_layers", "num_attention_heads", "attention_head_dim",
            "mlp_ratio", "rope_axes_dim")
    ours = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in model.config.items() if k in core}
    theirs = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in pretrained.config.items() if k in core}
    if ours != theirs:
        raise ValueError(f"train.init_from {folder}: its architecture {theirs} differs from this run's {ours}")
    weights = pretrained.state_dict()
    metadata_path = source / "worldsim.json"
    if pretrained.action_encoders is None and model.action_encoders is not None and metadata_path.is_file():
        name = json.loads(metadata_path.read_text()).get("embodiment")
        if name in model.action_encoders:
            weights = {(f"action_encoders.{name}." + k[len("action_encoder."):] if k.startswith("action_encoder.")
                        else k): v for k, v in weights.items()}
    target = model.state_dict()
    loadable = {k: v for k, v in weights.items() if k in target and target[k].shape == v.shape}
    model.load_state_dict(loadable, strict=False)
    return sorted(set(target) - set(loadable))


def sample_noise_levels(batch: int, frames: int, config, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame sigma and loss mask for diffusion-forcing training.

    Each frame but the last is, with probability ``config.history_prob``, a *history* frame: lightly noised with
    sigma uniform in ``[min_history_noise, max_history_noise]`` and excluded from the loss (noise-augmented history,
    the training side of ``context_noise``). The other frames are targets with sigma from a logit-normal.

    Returns:
        sigma `(B, T)` float32 in [0, 1); target `(B, T)` bool (True: loss on this frame). The last frame of every
        clip is always a target, so every clip contributes.
    """
    target_sigma = torch.sigmoid(torch.randn(batch, frames, generator=generator) * config.logit_std + config.logit_mean)
    low, high = config.min_history_noise, config.max_history_noise
    history_sigma = low + torch.rand(batch, frames, generator=generator) * (high - low)
    is_history = torch.rand(batch, frames, generator=generator) < config.history_prob
    is_history[:, -1] = False
    return torch.where(is_history, history_sigma, target_sigma), ~is_history


def motion_weights(latents: torch.Tensor, motion_weight: float, motion_threshold: float) -> torch.Tensor:
    """Per-cell loss weights `(B, T, h, w)` that favour where things were moving.

    Frame ``t`` gets ``1 + motion_weight * clamp(m / motion_threshold, max=1)``, where ``m`` is the mean absolute
    latent change from frame ``t - 2`` to ``t - 1``, dilated by one cell (3x3 max-pool). The weight depends only
    on the history, never on the frame being predicted, so the loss's minimiser is still the conditional mean
    velocity; it just spends more of the model's capacity on small moving objects (an agent a few pixels wide covers
    one latent cell of 64). Frames 0 and 1 get weight 1.
    """
    batch, frames, _, height, width = latents.shape
    weights = torch.ones(batch, frames, height, width, device=latents.device)
    if motion_weight == 0 or frames < 3:
        return weights
    motion = (latents[:, 1:-1] - latents[:, :-2]).abs().mean(dim=2)  # (B, T-2, h, w): change t-2 -> t-1
    motion = torch.nn.functional.max_pool2d(motion.flatten(0, 1).unsqueeze(1), 3, stride=1, padding=1)
    motion = motion.view(batch, frames - 2, height, width)
    weights[:, 2:] += motion_weight * (motion / motion_threshold).clamp(max=1.0)
    return weights


def flow_matching_loss(model, latents: torch.Tensor, action: torch.Tensor, config, generator: torch.Generator,
                       embodiment: torch.Tensor | None = None, shard: tuple[int, int] = (0, 1),
                       task: torch.Tensor | None = None):
    """Flow-matching loss with per-frame noise levels and motion-weighted latent cells.

    Args:
        latents: `(B, T, C, h, w)` clean latents; action: `(B, T, A)` normalised actions.
        embodiment: `(B,)` long embodiment indices (multi-embodiment models) or None.
        task: `(B,)` long task indices (task-conditioned models) or None; each is replaced by the null task with
            probability ``config.task_dropout_prob`` (so the model also learns to imagine without a task).
        shard: ``(process_index, num_processes)`` when this batch is one process's share of a global batch of
            ``B * num_processes`` clips (data-parallel training). The noise is drawn for the whole global batch (the
            generator advances identically on every process) and this process takes its rows, and the loss is
            normalised by the global count of target frames (times ``num_processes``, which DDP's gradient averaging
            divides out), so N processes compute exactly the gradient of one process with the global batch.

    Returns:
        Scalar loss: weighted mean squared velocity error over target frames (see :func:`motion_weights`).

    Raises:
        ValueError: ``shard`` is not ``(index, count)`` with ``0 <= index < count``.
    """
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard must be (process_index, num_processes) with 0 <= index < count, got {shard}")
    batch, frames = latents.shape[:2]
    rows = slice(rank * batch, (rank + 1) * batch)
    sigma_all, target_all = sample_noise_levels(batch * world, frames, config, generator)
    noise = torch.randn((batch * world, *latents.shape[1:]), generator=generator)[rows].to(latents.device)
    sigma, target_mask = sigma_all[rows].to(latents.device), target_all[rows].to(latents.device)
    s = sigma[:, :, None, None, None]
    noisy = (1.0 - s) * latents + s * noise
    action_mask = None
    if config.action_dropout_prob > 0:
        keep = torch.rand(batch * world, frames, generator=generator) >= config.action_dropout_prob
        action_mask = keep[rows].to(latents.device)
    if task is not None and config.task_dropout_prob > 0:
        dropped = (torch.rand(batch * world, generator=generator) < config.task_dropout_prob)[rows].to(task.device)
        null = torch.full_like(task, (model.module if hasattr(model, "module") else model).task_embedder.null_index)
        task = torch.where(dropped, null, task)
    conditions = {} if task is None else {"task": task}
    prediction = model(noisy, sigma * 1000.0, action, action_mask, embodiment=embodiment, **conditions).float()
    weights = motion_weights(latents, config.motion_weight, config.motion_threshold)  # (B, T, h, w)
    error = (prediction - (noise - latents)).square().mean(dim=2)  # (B, T, h, w)
    error = (error * weights).sum(dim=(2, 3)) / weights.sum(dim=(2, 3))  # (B, T)
    return (error * target_mask).sum() * world / target_all.sum().to(latents.device)


def truncate_log(path: Path, step: int) -> None:
    """Keeps the complete records of steps ``<= step`` in a ``train_log.jsonl`` (atomic rewrite).

    A run killed after its last checkpoint logged steps that the resumed run repeats, and possibly half a line;
    resuming from ``step`` drops both, so the log holds each step once.
    """
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", step + 1) <= step:
            kept.append(line + "\n")
    write_text_atomic(path, "".join(kept))


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The ``checkpoint-<step>`` folder with the highest step, or None."""
    if not output_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()]
    return max(found)[1] if found else None


def refuse_unsupported_launch(accelerator: Accelerator) -> None:
    """Stops a launch whose processes would not train one model data-parallel, before any work is done.

    worldsim trains data-parallel (every process holds the whole model; DDP), and its EMA (diffusers ``EMAModel`` over
    the unsharded parameters) and checkpoint writer (the main process alone, from the unwrapped ``state_dict``) rely
    on that. Two launches would otherwise go wrong without a word (measured with accelerate 1.15 / torch 2.13 on CPU,
    see docs/scaling.md, "Sharded training (FSDP)"):

    - FSDP (``accelerate launch --use_fsdp`` or an accelerate config with ``distributed_type: FSDP``). Where
      accelerate enters its FSDP mode (GPUs and other accelerators), the parameters become shards (FSDP2: DTensors)
      and ``EMAModel.step`` fails ("got mixed torch.Tensor and DTensor"). On CPU accelerate never enters it: with
      ``ACCELERATE_USE_CPU=1`` it silently runs DDP over gloo instead, without it the processes are never joined.
    - Processes launched but never joined (``WORLD_SIZE`` > 1 while accelerate sees one process: ``accelerate
      launch --multi_gpu`` on a machine without a GPU and without ``ACCELERATE_USE_CPU=1``): each would train alone
      and write the same checkpoint folders.

    Raises:
        ValueError: either launch; the message says what to run instead.
    """
    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        raise ValueError("worldsim train does not support FSDP: its EMA and checkpoint writer expect unsharded "
                         "parameters (under FSDP2, EMAModel.step fails on the DTensor shards). Train data-parallel: "
                         "accelerate launch --multi_gpu --num_processes N -m worldsim.cli.main train ...")
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        raise ValueError(f"FSDP was requested (ACCELERATE_USE_FSDP=true) but accelerate {accelerate.__version__} did "
                         f"not shard the model: it set up {kind.value} on {accelerator.device} with "
                         f"{accelerator.num_processes} process(es). accelerate shards only on GPUs and other "
                         "accelerators, never on CPU (there it runs DDP over gloo, or leaves the processes unjoined). "
                         "On CPU, train data-parallel: ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu "
                         "--num_processes N -m worldsim.cli.main train ...")
    launched = int(os.environ.get("WORLD_SIZE", accelerator.num_processes))
    if launched != accelerator.num_processes:
        raise ValueError(f"{launched} processes were launched (WORLD_SIZE={launched}) but accelerate joined none of "
                         f"them ({kind.value} on {accelerator.device}): each would train alone and write the same "
                         "checkpoints. Without a GPU, launch with ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu "
                         "--num_processes N (gloo)")


def train_world_model(config: RunConfig, progress: bool = True) -> Path:
    """Trains (or resumes training of) the world model described by ``config``.

    Returns:
        ``<output_dir>/final``: a :class:`WorldModelPipeline` folder with the EMA weights.

    Raises:
        FileNotFoundError: the autoencoder folder (``train.autoencoder``) is missing; train it first.
    """
    train_config, data_config = config.train, config.dataset
    output_dir = Path(train_config.output_dir)
    autoencoder_path = Path(train_config.autoencoder)
    if not (autoencoder_path / "config.json").is_file():
        raise FileNotFoundError(f"autoencoder not found at {autoencoder_path}; run `worldsim train-autoencoder` first")
    # The LR schedule counts optimizer steps of the global batch: accelerate's default would step it once per
    # process per step (num_processes times faster under `accelerate launch`), so it is stepped by hand below.
    accelerator = Accelerator(mixed_precision=train_config.mixed_precision,
                              gradient_accumulation_steps=train_config.gradient_accumulation_steps,
                              step_scheduler_with_optimizer=False)
    refuse_unsupported_launch(accelerator)
    torch.manual_seed(train_config.seed)

    # 1. data: frames -> latents (cached), actions normalised; one source per dataset (embodiment)
    # the latent caches are encoded on the training device (a GPU encodes a dataset in seconds), then the
    # autoencoder goes back to the CPU, where checkpoints are assembled
    autoencoder = load_autoencoder(autoencoder_path).to(accelerator.device).eval()
    for extra in config.extra_datasets:
        if (extra.frame_size, extra.num_frames) != (data_config.frame_size, data_config.num_frames):
            raise ValueError(f"extra dataset {extra.root}: frame size/num_frames {extra.frame_size}/{extra.num_frames}"
                             f" differ from dataset's {data_config.frame_size}/{data_config.num_frames}")
    frames_per_latent = check_video_autoencoder(autoencoder) if train_config.temporal_compression else 1
    if frames_per_latent > 1:  # refused before any dataset is encoded
        for data in [data_config, *config.extra_datasets]:
            space = LeRobotDataset(data.root).action_space
            if space and space.get("type") != "Box":
                raise ValueError(f"train.temporal_compression groups continuous actions; {data.root} records a "
                                 f"{space.get('type')} action space")
    with accelerator.main_process_first():  # the main process writes the frame and latent caches, the others read
        sources = [Source(data, autoencoder, autoencoder_path, progress and accelerator.is_main_process,
                          frames_per_latent)
                   for data in [data_config, *config.extra_datasets]]
    autoencoder.to("cpu")
    share_embodiments(sources)
    names = list(dict.fromkeys(source.name for source in sources))  # each embodiment once, in order of appearance
    firsts = [next(source for source in sources if source.name == name) for name in names]
    multi = len(names) > 1 or config.transformer.num_action_experts > 0
    width = max(source.dataset.action_dim for source in sources)
    tasks, text_encoder = None, None
    if config.transformer.task_text_encoder:
        text_encoder = load_task_encoder(config.transformer.task_text_encoder)
    if config.transformer.condition_on_task:  # every task text of the data, in order of appearance
        tasks = list(dict.fromkeys(text for source in sources for text in source.dataset.episode_tasks if text))
        if not tasks:
            raise ValueError("transformer.condition_on_task is set but no dataset episode records a task text")
    parts = []
    for source in sources:
        frame_task = None if tasks is None else source.frame_tasks(tasks, len(tasks))
        clips = EmbodimentClips(source.clips(width), names.index(source.name), width * frames_per_latent, frame_task)
        parts.extend([clips] * source.config.repeat)
    clips = torch.utils.data.ConcatDataset(parts)
    dataset, frames, latents = sources[0].dataset, sources[0].frames, sources[0].latents
    # train.batch_size is per process; a step of N processes sees N * batch_size clips (the global batch).
    num_processes = accelerator.num_processes
    batches_per_epoch = len(clips) // (train_config.batch_size * num_processes)
    if batches_per_epoch == 0:
        raise ValueError(f"train.batch_size {train_config.batch_size} x {num_processes} processes exceeds the "
                         f"{len(clips)} training clips")

    def epoch_loader(epoch: int, skip: int):
        # The data order is a function of (seed, epoch) alone, so a resumed run sees the batches an uninterrupted
        # run would have seen: reshuffle with seed + epoch, then skip the batches already consumed.
        generator = torch.Generator().manual_seed(train_config.seed + epoch)
        loader = torch.utils.data.DataLoader(clips, batch_size=train_config.batch_size, shuffle=True, drop_last=True,
                                             generator=generator, num_workers=0)
        loader = accelerator.prepare(loader)
        return accelerator.skip_first_batches(loader, skip) if skip else loader

    # 2. model, optimizer, EMA
    # a single embodiment with discrete parts gets its space's encoder (one learned embedding per index), never a
    # Box encoder reading indices as ordinal numbers; an all-Box space keeps the config it always had
    single_space = None if multi or continuous_mask(sources[0].action_space).all() else sources[0].action_space
    model = build_transformer(
        config.transformer, in_channels=latents.shape[1], sample_size=size_config(latents.shape[2:4]),
        action_dim=width * frames_per_latent,
        embodiments=[{"name": source.name, "action_space": source.model_action_space(width)} for source in firsts]
        if multi else None,
        action_space=single_space, tasks=tasks, text_encoder=text_encoder)
    if train_config.init_from:
        fresh = load_initial_weights(model, Path(train_config.init_from))
        accelerator.print(f"initialised from {train_config.init_from}; fresh tensors: {len(fresh)}"
                          + (f" ({', '.join(sorted({name.split('.')[0] for name in fresh}))})" if fresh else ""))
    heads, light_decoder, state_predictors = carried_components(
        Path(train_config.init_from) if train_config.init_from else None, autoencoder_path, names)
    if frames_per_latent > 1:  # per-frame parts do not read latent frames of several video frames
        heads, light_decoder, state_predictors = None, None, None
    if heads is not None or light_decoder is not None or state_predictors is not None:
        accelerator.print("keeping the outcome heads, light decoder and state predictors of "
                          + str(train_config.init_from) + f" (same autoencoder): heads "
                          f"{'yes' if heads is not None else 'no'}, decoder {'yes' if light_decoder is not None else 'no'}"
                          f", state {'yes' if state_predictors is not None else 'no'}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.learning_rate,
                                  weight_decay=train_config.weight_decay, betas=(0.9, 0.99))
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, train_config.warmup_steps, train_config.max_steps)
    ema = EMAModel(ema_parameters(model), decay=train_config.ema_decay, use_ema_warmup=True,
                   model_cls=type(model), model_config=model.config)

    step = 0
    noise_generator = torch.Generator().manual_seed(train_config.seed + 1)
    resume_from = latest_checkpoint(output_dir) if train_config.resume else None
    if resume_from is not None:
        state_dir = resume_from / "training_state"
        model.load_state_dict(load_file(state_dir / "model.safetensors"))
        ema_tensors = load_file(state_dir / "ema.safetensors")
        ema.shadow_params = [ema_tensors[f"{i}"] for i in range(len(ema.shadow_params))]
        load_optimizer(optimizer, state_dir / "optimizer")
        meta = json.loads((state_dir / "state.json").read_text())
        step, ema.optimization_step = meta["step"], meta["ema_optimization_step"]
        lr_scheduler.load_state_dict(meta["lr_scheduler"])
        rng = load_file(state_dir / "rng.safetensors")
        set_rng_state(rng)
        noise_generator.set_state(rng["noise"])
        accelerator.print(f"resumed from {resume_from} at step {step}")
        if accelerator.is_main_process:
            truncate_log(output_dir / "train_log.jsonl", step)

    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    ema.to(accelerator.device)  # the shadow weights live where the model does (a GPU), not on the CPU
    model.train()
    metadata = {
        "embodiment": sources[0].name,
        "fps": dataset.fps,
        "image_size": size_config(data_config.frame_size),
        "window_size": data_config.num_frames,
        "num_inference_steps": config.rollout.num_inference_steps,
        "context_noise": config.rollout.context_noise,
        "action_guidance_scale": config.rollout.action_guidance_scale,
        "outcome_heads": heads is not None,
    }
    if frames_per_latent > 1:
        metadata["frames_per_latent"] = frames_per_latent
    if multi:
        metadata["embodiments"] = {source.name: source.metadata() for source in firsts}
    else:
        metadata.update(sources[0].metadata())
    start_frames = {}
    for source in sources:  # held-out episodes first, then training ones; datasets of one embodiment pooled
        prefix = f"{source.name}." if multi else ""
        have = len(start_frames.get(f"{prefix}frames", ()))
        if have >= START_CLIPS:
            continue
        # each dataset of an embodiment gets its share of the clips (one per task, say), later ones the rest
        group = [other for other in sources if other.name == source.name]
        wanted = START_CLIPS if source is group[-1] else (group.index(source) + 1) * START_CLIPS // len(group)
        if wanted <= have:
            continue
        start = start_set(source.dataset, source.frames, np.concatenate([source.val_episodes, source.train_episodes]),
                          1 + frames_per_latent * (train_config.validation_context_frames - 1), wanted - have, tasks)
        if have:  # a field that one dataset records and another does not (a state, say) is left out
            for key in [key for key in start_frames if key.startswith(prefix) and key[len(prefix):] not in start]:
                if "." not in key[len(prefix):]:
                    del start_frames[key]
        for key, value in start.items():
            if not have:
                start_frames[f"{prefix}{key}"] = value
            elif f"{prefix}{key}" in start_frames:
                start_frames[f"{prefix}{key}"] = torch.cat([start_frames[f"{prefix}{key}"], value])
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=config.rollout.shift)

    def save_checkpoint(at_step: int, final: bool = False) -> Path:
        unwrapped = accelerator.unwrap_model(model)
        ema_model = exported_ema_model(unwrapped, ema)
        pipeline = WorldModelPipeline(autoencoder, ema_model, scheduler, metadata, start_frames,
                                      heads=heads, decoder=light_decoder, state_predictors=state_predictors)
        name = "final" if final else f"checkpoint-{at_step}"
        target = output_dir / name
        tmp = output_dir / f".{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        pipeline.save_pretrained(tmp)
        (tmp / "run_config.yaml").write_text(config_to_yaml(config))
        if not final:
            state_dir = tmp / "training_state"
            state_dir.mkdir()
            save_file({k: v.detach().cpu().contiguous() for k, v in unwrapped.state_dict().items()},
                      state_dir / "model.safetensors")
            save_file({f"{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)},
                      state_dir / "ema.safetensors")
            save_optimizer(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer, state_dir / "optimizer")
            save_file({**rng_state(), "noise": noise_generator.get_state()},
                      state_dir / "rng.safetensors")
            (state_dir / "state.json").write_text(json.dumps({
                "step": at_step, "ema_optimization_step": ema.optimization_step,
                "lr_scheduler": lr_scheduler.scheduler.state_dict() if hasattr(lr_scheduler, "scheduler") else lr_scheduler.state_dict(),
            }))
        for source in firsts:
            if len(source.val_episodes):
                video = f"validation-{source.name}.mp4" if multi else "validation.mp4"
                validation_video(pipeline, source.dataset, source.frames, int(source.val_episodes[0]), train_config,
                                 tmp / video, embodiment=source.name if multi else None)
        if router_load is not None:
            (tmp / "router_stats.json").write_text(json.dumps(router_report(router_load, names), indent=2))
        replace_folder(tmp, target)
        if not final:
            checkpoints = sorted((int(m.group(1)), p) for p in output_dir.iterdir()
                                 if (m := CHECKPOINT_PATTERN.match(p.name)))
            for _, old in checkpoints[:-train_config.checkpoints_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        return target

    main = accelerator.is_main_process
    if main:  # one process writes files; the others wait for it at each checkpoint
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "run_config.yaml").write_text(config_to_yaml(config))
    log = open(output_dir / "train_log.jsonl", "a") if main else None
    router_load = torch.zeros(len(sources), config.transformer.num_action_experts) if \
        config.transformer.num_action_experts else None
    start_time = time.monotonic()
    bar = tqdm(total=train_config.max_steps, initial=step, desc="train world model", disable=not (progress and main))
    accumulation = train_config.gradient_accumulation_steps
    shard = (accelerator.process_index, num_processes)
    out_of_time = False
    while step < train_config.max_steps:
        micro_batches = step * accumulation
        epoch = micro_batches // batches_per_epoch
        in_epoch = micro_batches % batches_per_epoch
        for batch in epoch_loader(epoch, in_epoch):
            if in_epoch == batches_per_epoch:  # accelerate may pad an epoch to equal shards; those batches are cut
                break
            in_epoch += 1
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    embodiment = batch["embodiment"] if multi else None
                    loss = flow_matching_loss(model, batch["frames"].float(), batch["action"], train_config,
                                              noise_generator, embodiment, shard, batch.get("task"))
                    routing = accelerator.unwrap_model(model).last_routing
                    if routing is not None:
                        probs, dispatch, ids = routing
                        loss = loss + train_config.router_aux_weight * load_balancing_loss(probs, dispatch)
                        if train_config.router_mi_weight:
                            loss = loss - train_config.router_mi_weight * router_mutual_information(
                                probs, ids, len(sources))
                        router_load.index_add_(0, ids.cpu(), dispatch.detach().float().cpu())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                if accelerator.sync_gradients:
                    lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            ema.step(ema_parameters(accelerator.unwrap_model(model)))
            step += 1
            # the global batch's loss: each process's share is scaled so that their mean is it
            global_loss = accelerator.reduce(loss.detach().float(), reduction="mean").item() if num_processes > 1 \
                else loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{global_loss:.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
            record = {"step": step, "loss": global_loss, "time_s": time.monotonic() - start_time}
            if router_load is not None and step % 50 == 0:
                record["router_load"] = router_report(router_load, names)["expert_load"]
            if main:
                log.write(json.dumps(record) + "\n")
            out_of_time = train_config.max_minutes is not None and time.monotonic() - start_time > 60 * train_config.max_minutes
            if num_processes > 1:  # every process must take the same decision (clocks differ)
                out_of_time = bool(accelerator.reduce(torch.tensor(float(out_of_time)), reduction="sum").item())
            if step % train_config.checkpointing_steps == 0 or step == train_config.max_steps or out_of_time:
                if main:
                    log.flush()
                    save_checkpoint(step)
                accelerator.wait_for_everyone()
            if step >= train_config.max_steps or out_of_time:
                break
        if out_of_time:
            break
    bar.close()
    final = output_dir / "final"
    if main:
        log.close()
        final = save_checkpoint(step, final=True)
    accelerator.wait_for_everyone()
    return final


def validation_video(pipeline: WorldModelPipeline, dataset: LeRobotDataset, frames: np.ndarray, episode: int,
                     config, path: Path, embodiment: str | None = None) -> None:
    """Fixed-seed rollout on a validation episode, written side by side (real | imagined); a task-conditioned model
    imagines the episode's task. Where no video encoder is installed (PyAV), a warning replaces the video: a missing
    video must never cost the checkpoint it belongs to."""
    segment = dataset.episode_slice(episode)
    group = pipeline.frames_per_latent  # a time-compressed model takes 1 + k m context frames and k actions a step
    context = 1 + group * (config.validation_context_frames - 1)
    horizon = min(config.validation_frames, segment.stop - segment.start - context)
    horizon -= horizon % group
    if horizon < 1:
        return
    real = np.asarray(frames[segment.start:segment.start + context + horizon])
    actions = dataset.action[segment.start:segment.start + context + horizon - 1]
    task = None
    if pipeline.transformer.task_embedder is not None:
        text = dataset.episode_tasks[episode]
        task = text if text in pipeline.transformer.task_names else None
    imagined = pipeline.rollout(real[None, :context], actions[None, :context - 1], actions[None, context - 1:],
                                generator=torch.Generator().manual_seed(0), embodiment=embodiment, task=task)[0]
    try:
        write_video(path, np.concatenate([real[context:], imagined], axis=2), fps=dataset.fps)
    except ImportError as error:
        warnings.warn(f"no validation video {path.name}: {error}")
