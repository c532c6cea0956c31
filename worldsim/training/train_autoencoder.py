"""``worldsim train-autoencoder``: fits the small ``AutoencoderKL`` to a dataset's frames.

Loss: L1 + MSE reconstruction, weighted up (``1 + foreground_weight``) on pixels that differ from the dataset's
median frame (the moving objects: PushT's agent and block), plus a small KL term. After training, the latents'
mean and standard deviation are measured and stored as the autoencoder's ``shift_factor`` and ``scaling_factor``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from tqdm.auto import tqdm

from worldsim.data.frame_cache import load_frame_cache
from worldsim.data.lerobot import LeRobotDataset
from worldsim.evaluation.metrics import psnr
from worldsim.evaluation.pusht import locate_agent
from worldsim.models.autoencoders import build_autoencoder, decode_latents, encode_frames, frames_to_pixels
from worldsim.training.config import RunConfig

FOREGROUND_WEIGHT = 4.0


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


def train_autoencoder(config: RunConfig, progress: bool = True) -> Path:
    """Trains the autoencoder described by ``config.autoencoder`` on ``config.dataset``.

    Returns:
        The folder written (``<output_dir>/final``), loadable with ``AutoencoderKL.from_pretrained``; it also holds
        ``metrics.json`` (validation PSNR and agent-position error of reconstructions).
    """
    ae_config, data_config = config.autoencoder, config.dataset
    torch.manual_seed(config.train.seed)
    rng = np.random.default_rng(config.train.seed)
    dataset = LeRobotDataset(data_config.root)
    frames = load_frame_cache(dataset, data_config.image_size, data_config.cache_dir, progress=progress)
    train_episodes, val_episodes = split_episodes(dataset.num_episodes, data_config.val_episodes)
    train_index = _episode_frames(dataset, train_episodes)
    val_index = _episode_frames(dataset, val_episodes) if len(val_episodes) else train_index[:256]

    sample = np.asarray(frames[np.sort(rng.choice(train_index, min(512, len(train_index)), replace=False))])
    background = frames_to_pixels(torch.from_numpy(np.median(sample, axis=0).astype(np.uint8)))

    accelerator = Accelerator(mixed_precision=config.train.mixed_precision)
    autoencoder = build_autoencoder(data_config.image_size, ae_config.latent_channels,
                                    tuple(ae_config.block_out_channels), ae_config.layers_per_block,
                                    ae_config.norm_num_groups)
    optimizer = torch.optim.AdamW(autoencoder.parameters(), lr=ae_config.learning_rate, weight_decay=0.0)
    lr_lambda = lambda step: min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(step / ae_config.steps, 1)))
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    autoencoder, optimizer, lr_scheduler = accelerator.prepare(autoencoder, optimizer, lr_scheduler)
    background = background.to(accelerator.device)

    start = time.monotonic()
    bar = tqdm(range(ae_config.steps), desc="train autoencoder", disable=not progress)
    for step in bar:
        batch = np.sort(rng.choice(train_index, ae_config.batch_size, replace=False))
        pixels = frames_to_pixels(torch.from_numpy(np.asarray(frames[batch]))).to(accelerator.device)
        with accelerator.autocast():
            posterior = autoencoder.encode(pixels).latent_dist
            reconstruction = autoencoder.decode(posterior.sample()).sample.float()
        weight = 1.0 + FOREGROUND_WEIGHT * ((pixels - background).abs().amax(1, keepdim=True) > 0.1).float()
        error = reconstruction - pixels
        loss = (weight * (error.abs() + error.square())).mean() + ae_config.kl_weight * posterior.kl().mean()
        accelerator.backward(loss)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if ae_config.max_minutes is not None and time.monotonic() - start > 60 * ae_config.max_minutes:
            break
    steps_done = step + 1

    autoencoder = accelerator.unwrap_model(autoencoder).eval()
    # Latent statistics -> shift_factor / scaling_factor, so the world model sees ~N(0, 1) latents.
    stats_index = np.sort(rng.choice(train_index, min(2048, len(train_index)), replace=False))
    latents = encode_frames(autoencoder, torch.from_numpy(np.asarray(frames[stats_index])))
    autoencoder.register_to_config(shift_factor=float(latents.mean()), scaling_factor=float(1.0 / latents.std()))

    val_frames = torch.from_numpy(np.asarray(frames[np.sort(rng.choice(val_index, min(512, len(val_index)), replace=False))]))
    reconstructed = decode_latents(autoencoder, encode_frames(autoencoder, val_frames)).numpy()
    real = val_frames.numpy()
    metrics = {
        "steps": steps_done,
        "wall_minutes": (time.monotonic() - start) / 60,
        "val_psnr": float(psnr(reconstructed, real).mean()),
        "val_agent_error_px": float(np.nanmean(np.linalg.norm(locate_agent(reconstructed) - locate_agent(real), axis=-1))),
        "num_parameters": sum(p.numel() for p in autoencoder.parameters()),
    }
    out = Path(ae_config.output_dir) / "final"
    autoencoder.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return out
