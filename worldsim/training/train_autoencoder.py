"""``worldsim train-autoencoder``: fits the small ``AutoencoderKL`` to a dataset's frames.

Loss: L1 + MSE reconstruction, weighted up (``1 + foreground_weight``) on pixels that differ from the dataset's
median frame (the moving objects, such as an agent and the object it pushes), plus a small KL term. After training, the latents'
mean and standard deviation are measured and stored as the autoencoder's ``shift_factor`` and ``scaling_factor``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from worldsim.data.frame_cache import load_frame_cache
from worldsim.data.lerobot import LeRobotDataset
from worldsim.evaluation.metrics import psnr
from worldsim.models.autoencoders import build_autoencoder, decode_latents, encode_frames, frames_to_pixels
from worldsim.training.config import RunConfig
from worldsim.utils.files import replace_folder

FOREGROUND_WEIGHT = 4.0


def reconstruction_loss(reconstruction: torch.Tensor, pixels: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """L1 + MSE per pixel, weighted ``1 + FOREGROUND_WEIGHT`` where the frame differs from its dataset's median frame
    (the moving objects), so small ones such as an agent a few pixels wide are not traded for the background.

    Args:
        reconstruction, pixels, background: `(B, 3, H, W)` float in [-1, 1] (background broadcastable).

    Returns:
        A scalar float tensor.
    """
    weight = 1.0 + FOREGROUND_WEIGHT * ((pixels - background).abs().amax(1, keepdim=True) > 0.1).float()
    error = reconstruction.float() - pixels
    return (weight * (error.abs() + error.square())).mean()


def median_background(frames: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """The median of up to 512 of ``frames[rows]`` (uint8 `(N, H, W, 3)`) as float `(3, H, W)` pixels in [-1, 1]:
    what stays still in a dataset."""
    sample = np.asarray(frames[np.sort(rng.choice(rows, min(512, len(rows)), replace=False))])
    return frames_to_pixels(torch.from_numpy(np.median(sample, axis=0).astype(np.uint8)))


def split_episodes(num_episodes: int, val_episodes: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``val_episodes`` episodes validate, the rest train (at least one episode trains).

    Raises:
        ValueError: fewer than two episodes while validation is asked for.
    """
    if val_episodes and num_episodes - val_episodes < 1:
        raise ValueError(f"dataset has {num_episodes} episodes; cannot hold out {val_episodes} for validation")
    return np.arange(num_episodes - val_episodes), np.arange(num_episodes - val_episodes, num_episodes)


def _episode_frames(dataset: LeRobotDataset, episodes: np.ndarray) -> np.ndarray:
    return np.concatenate([np.arange(*dataset.episode_slice(e).indices(dataset.num_frames)) for e in episodes])


class _FrameSource:
    """Frames of one dataset for autoencoder training: cache, split, median background, embodiment name."""

    def __init__(self, data_config, seed: int, progress: bool):
        self.dataset = LeRobotDataset(data_config.root)
        self.frames = load_frame_cache(self.dataset, data_config.frame_size, data_config.cache_dir, progress=progress,
                                       video_keys=data_config.camera_keys)
        train_episodes, val_episodes = split_episodes(self.dataset.num_episodes, data_config.val_episodes)
        self.train_index = _episode_frames(self.dataset, train_episodes)
        self.val_index = _episode_frames(self.dataset, val_episodes) if len(val_episodes) else self.train_index[:256]
        self.name = data_config.embodiment or self.dataset.info.get("robot_type") or Path(data_config.root).name
        self.repeat = data_config.repeat
        self.background = median_background(self.frames, self.train_index, np.random.default_rng(seed))


def train_autoencoder(config: RunConfig, progress: bool = True) -> Path:
    """Trains the autoencoder described by ``config.autoencoder`` on ``config.dataset`` (and ``extra_datasets``).

    The loss is L1 + MSE with foreground pixels (those that differ from the dataset's median frame) weighted
    ``1 + FOREGROUND_WEIGHT``, so small moving objects (an agent disc, a paddle) are reconstructed. With
    extra datasets, each batch mixes their training frames in proportion to size times ``repeat``;
    ``autoencoder.init_from`` fine-tunes an existing autoencoder instead of starting fresh.

    Returns:
        The folder written (``<output_dir>/final``), loadable with ``AutoencoderKL.from_pretrained``; it also holds
        ``metrics.json`` (validation PSNR per dataset, and the error of the controlled entity's position in
        reconstructions where a locator exists for the embodiment).
    """
    from worldsim.embodiments import make_embodiment

    ae_config, data_config = config.autoencoder, config.dataset
    torch.manual_seed(config.train.seed)
    rng = np.random.default_rng(config.train.seed)
    sources = [_FrameSource(d, config.train.seed, progress) for d in [data_config, *config.extra_datasets]]
    shares = np.array([len(s.train_index) * s.repeat for s in sources], dtype=np.float64)
    shares /= shares.sum()

    accelerator = Accelerator(mixed_precision=config.train.mixed_precision)
    if ae_config.init_from:
        autoencoder = AutoencoderKL.from_pretrained(ae_config.init_from, use_safetensors=True)
    else:
        autoencoder = build_autoencoder(data_config.frame_size, ae_config.latent_channels,
                                        tuple(ae_config.block_out_channels), ae_config.layers_per_block,
                                        ae_config.norm_num_groups)
    optimizer = torch.optim.AdamW(autoencoder.parameters(), lr=ae_config.learning_rate, weight_decay=0.0)
    lr_lambda = lambda step: min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(step / ae_config.steps, 1)))
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    autoencoder, optimizer, lr_scheduler = accelerator.prepare(autoencoder, optimizer, lr_scheduler)

    start = time.monotonic()
    bar = tqdm(range(ae_config.steps), desc="train autoencoder", disable=not progress)
    for step in bar:
        counts = rng.multinomial(ae_config.batch_size, shares)
        pixels, backgrounds = [], []
        for source, count in zip(sources, counts):
            if count:
                batch = np.sort(rng.choice(source.train_index, count, replace=False))
                pixels.append(frames_to_pixels(torch.from_numpy(np.asarray(source.frames[batch]))))
                backgrounds.append(source.background.expand(count, *source.background.shape))
        pixels = torch.cat(pixels).to(accelerator.device)
        background = torch.cat(backgrounds).to(accelerator.device)
        with accelerator.autocast():
            posterior = autoencoder.encode(pixels).latent_dist
            reconstruction = autoencoder.decode(posterior.sample()).sample.float()
        loss = reconstruction_loss(reconstruction, pixels, background) + ae_config.kl_weight * posterior.kl().mean()
        accelerator.backward(loss)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if ae_config.max_minutes is not None and time.monotonic() - start > 60 * ae_config.max_minutes:
            break
    steps_done = step + 1

    autoencoder = accelerator.unwrap_model(autoencoder).eval()
    # Latent statistics over all datasets -> shift_factor / scaling_factor, so the world model sees ~N(0, 1) latents.
    stats = [np.asarray(s.frames[np.sort(rng.choice(s.train_index, min(2048 // len(sources), len(s.train_index)),
                                                    replace=False))]) for s in sources]
    autoencoder.register_to_config(shift_factor=0.0, scaling_factor=1.0)  # raw latents (init_from may have set them)
    latents = encode_frames(autoencoder, torch.from_numpy(np.concatenate(stats)))
    autoencoder.register_to_config(shift_factor=float(latents.mean()), scaling_factor=float(1.0 / latents.std()))

    metrics = {"steps": steps_done, "wall_minutes": (time.monotonic() - start) / 60,
               "num_parameters": sum(p.numel() for p in autoencoder.parameters()), "datasets": {}}
    for source in sources:
        index = np.sort(rng.choice(source.val_index, min(512, len(source.val_index)), replace=False))
        real = np.asarray(source.frames[index])
        reconstructed = decode_latents(autoencoder, encode_frames(autoencoder, torch.from_numpy(real))).cpu().numpy()
        entry = {"val_psnr": float(psnr(reconstructed, real).mean())}
        try:  # the embodiment plug-in's locator of the controlled entity, where there is one
            locate = make_embodiment(source.name).locate_controlled
            error = np.linalg.norm(locate(reconstructed) - locate(real), axis=-1) * real.shape[-2]
            entry["val_entity_error_px"] = float(np.nanmean(error)) if np.isfinite(error).any() else None
        except (ValueError, NotImplementedError, ImportError):
            pass
        metrics["datasets"][source.name] = entry
    first = metrics["datasets"][sources[0].name]
    metrics["val_psnr"] = first["val_psnr"]  # the primary dataset's, as before
    out = Path(ae_config.output_dir) / "final"
    # written beside the target and renamed into place: an interrupted save never leaves a half-written autoencoder
    tmp = out.with_name(".final.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    autoencoder.save_pretrained(tmp)
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return replace_folder(tmp, out)
