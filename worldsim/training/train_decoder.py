"""``worldsim train-decoder``: fits a :class:`~worldsim.models.autoencoders.LightDecoder` to a pipeline's latents.

An imagined frame costs the transformer's denoising passes plus one decode; with the small ``AutoencoderKL`` of the
shipped models the decode is half of the FLOPs (docs/benchmarks.md). The light decoder (diffusers' ``DecoderTiny``,
as TAESD distils a cheap decoder for Stable Diffusion's latents) learns the same map at a fraction of the cost:
inputs are the pipeline autoencoder's normalised latents of real frames (the cached ones world-model training
uses), targets the real frames, and the loss is the autoencoder's own (L1 + MSE, foreground weighted:
:func:`~worldsim.training.train_autoencoder.reconstruction_loss`). The encoder, the transformer and every latent
stay as they are, so the light decoder is a drop-in replacement at rollout time (``set_decoder("light")``, the env's
``decoder="light"``).

    worldsim train-decoder --model <model folder> --dataset <training data> --val-dataset <held-out data>
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from worldsim.data.frame_cache import load_frame_cache
from worldsim.data.lerobot import LeRobotDataset
from worldsim.evaluation.metrics import psnr
from worldsim.models.autoencoders import LightDecoder, decode_latents, frames_to_pixels
from worldsim.registry import write_manifest
from worldsim.training.config import DecoderConfig, config_with
from worldsim.training.train_autoencoder import median_background, reconstruction_loss
from worldsim.utils.files import replace_folder, write_json


def load_frames_and_latents(pipeline, model: Path, root, progress: bool = True
                            ) -> tuple[LeRobotDataset, np.ndarray, np.ndarray]:
    """A dataset's frames at the pipeline's size and their autoencoder latents, both cached on disk.

    Args:
        pipeline: the :class:`~worldsim.pipelines.WorldModelPipeline` loaded from ``model``.
        model: its folder (the latent cache is keyed by the hash of ``model/autoencoder``'s weights).
        root: LeRobot dataset folder.

    Returns:
        (the dataset, frames `(N, S, S, 3)` uint8, normalised latents `(N, C, h, w)` float16), arrays memory-mapped.
    """
    from worldsim.training.train_world_model import load_latent_cache

    dataset = LeRobotDataset(root)
    frames = load_frame_cache(dataset, pipeline.image_size, progress=progress,
                              video_keys=pipeline.composed_cameras)
    latents = load_latent_cache(dataset, frames, pipeline.autoencoder, model / "autoencoder", dataset.root / "cache",
                                progress=progress, camera_keys=pipeline.composed_cameras)
    return dataset, frames, latents


def decoder_report(pipeline, light: LightDecoder, frames: np.ndarray, latents: np.ndarray) -> dict:
    """The light decoder next to the autoencoder's own on the same latents of real frames.

    Args:
        pipeline: the :class:`~worldsim.pipelines.WorldModelPipeline` whose autoencoder made ``latents``.
        light: the light decoder.
        frames: `(N, S, S, 3)` uint8 real frames.
        latents: `(N, C, h, w)` their normalised latents.

    Returns:
        ``{"frames": N, "psnr": {"full", "light"} (dB, mean over frames), "frame_metric": {"name", "full", "light"} |
        None}``: the embodiment plug-in's headline frame metric (e.g. ``agent_error``, the agent
        located in the decoded frame vs in the real one) over the frames where both show it; None when the
        embodiment has no plug-in or headline metric, or no decoded frame shows it.
    """
    from worldsim.embodiments import make_embodiment

    z = torch.from_numpy(np.asarray(latents, dtype=np.float32))
    decoded = {"full": decode_latents(pipeline.autoencoder, z).numpy(), "light": decode_latents(light, z).numpy()}
    report = {"frames": len(frames), "psnr": {name: float(psnr(out, frames).mean()) for name, out in decoded.items()},
              "frame_metric": None}
    try:
        plugin = make_embodiment(pipeline.embodiment().name)
    except (ValueError, ImportError):
        plugin = None
    metric = None if plugin is None else plugin.headline_metric
    if metric is not None:
        errors = {name: plugin.frame_metrics(out[:, None], frames[:, None])[metric][:, 0] for name, out in decoded.items()}
        if all(np.isfinite(error).any() for error in errors.values()):  # frames where both show what it measures
            report["frame_metric"] = {"name": metric, **{name: float(np.nanmean(error)) for name, error in errors.items()}}
    return report


def train_decoder(model: str | Path, datasets: list[str | Path], config: DecoderConfig | None = None, *,
                  val_datasets: list[str | Path] | None = None, output: str | Path | None = None,
                  progress: bool = True, **overrides) -> dict:
    """Trains a light decoder for the pipeline at ``model`` and writes it to ``output`` (default ``model/decoder``).

    Args:
        model: pipeline folder (its autoencoder's latents are the inputs).
        datasets: LeRobot dataset folders of the model's embodiment; batches mix them in proportion to size.
        config: the settings (:class:`~worldsim.training.config.DecoderConfig`: AdamW with warm-up and cosine decay
            for ``steps`` or ``max_minutes``, the :class:`LightDecoder`'s width and blocks per stage, ``val_frames``
            frames for the report, accelerate's ``mixed_precision``). None: the defaults.
        val_datasets: datasets only for the report (``val_frames`` frames drawn from them); default: the last 10
            episodes of the first dataset, held out of training.
        output: where to write the decoder folder; the default replaces ``model/decoder`` and updates the model's
            manifest.
        progress: show progress bars.
        **overrides: :class:`DecoderConfig` fields replacing ``config``'s (``steps=80, block_out_channels=8``).

    Returns:
        The report (also written as ``metrics.json`` beside the weights): steps, minutes, parameters and FLOPs per
        frame, :func:`decoder_report` on the held-out frames, and the resolved settings under ``config``.

    Raises:
        TypeError: an override that is not a :class:`DecoderConfig` field.
        ValueError: an impossible setting (naming the field), no datasets, a latent grid the decoder cannot upsample
            to the frame size, or too few episodes to hold out.
    """
    from worldsim.pipelines.world_model import WorldModelPipeline
    from worldsim.utils.measure import count_flops

    config = config_with(DecoderConfig, config, overrides, "train_decoder")
    if not datasets:
        raise ValueError("give at least one dataset")
    model = Path(model)
    pipeline = WorldModelPipeline.from_pretrained(model)
    pipeline.require_per_frame("light-decoder training")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    sources, held_out = [], []
    for number, root in enumerate(datasets):
        dataset, frames, latents = load_frames_and_latents(pipeline, model, root, progress)
        rows = np.arange(len(frames))
        if number == 0 and not val_datasets:
            if dataset.num_episodes <= 10:
                raise ValueError(f"{root} has {dataset.num_episodes} episodes; cannot hold out 10 for the report")
            held = dataset.episode_index >= dataset.num_episodes - 10
            rows, held_out = rows[~held], [(frames, latents, np.flatnonzero(held))]
        sources.append((frames, latents, rows, median_background(frames, rows, rng)))
    for root in val_datasets or []:
        _, frames, latents = load_frames_and_latents(pipeline, model, root, progress)
        held_out.append((frames, latents, np.arange(len(frames))))

    num_blocks = tuple(config.num_blocks)
    light = LightDecoder(latent_channels=pipeline.transformer.config.in_channels,
                         block_out_channels=config.block_out_channels, num_blocks=num_blocks)
    latent_side, frame_side = sources[0][1].shape[-1], pipeline.frame_size[1]  # widths (heights scale alike)
    if latent_side * light.upsampling_factor != frame_side:
        raise ValueError(f"num_blocks {num_blocks} upsample {latent_side} px latents by "
                         f"{light.upsampling_factor}, not to the model's {frame_side} px frames; use "
                         f"{int(math.log2(frame_side // latent_side)) + 1} stages")
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    optimizer = torch.optim.AdamW(light.parameters(), lr=config.learning_rate, weight_decay=0.0)
    schedule = lambda step: min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(step / config.steps, 1)))
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    light, optimizer, lr_scheduler = accelerator.prepare(light, optimizer, lr_scheduler)
    shares = np.array([len(rows) for _, _, rows, _ in sources], dtype=np.float64)
    shares /= shares.sum()
    started, done = time.monotonic(), 0
    bar = tqdm(range(config.steps), desc="train light decoder", disable=not progress)
    for step in bar:
        z, pixels, backgrounds = [], [], []
        for (frames, latents, rows, background), count in zip(sources, rng.multinomial(config.batch_size, shares)):
            if count:
                batch = np.sort(rng.choice(rows, count, replace=False))
                z.append(torch.from_numpy(np.asarray(latents[batch], dtype=np.float32)))
                pixels.append(frames_to_pixels(torch.from_numpy(np.asarray(frames[batch]))))
                backgrounds.append(background.expand(count, *background.shape))
        z, pixels, background = (torch.cat(part).to(accelerator.device) for part in (z, pixels, backgrounds))
        with accelerator.autocast():
            reconstruction = light(z)
        loss = reconstruction_loss(reconstruction, pixels, background)
        accelerator.backward(loss)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if config.max_minutes is not None and time.monotonic() - started > 60 * config.max_minutes:
            break
    light = accelerator.unwrap_model(light).eval().float().to("cpu")  # the report runs beside the CPU pipeline

    frames, latents = [], []
    for f, z, rows in held_out:
        index = np.sort(rng.choice(rows, min(config.val_frames, len(rows)), replace=False))
        frames.append(np.asarray(f[index]))
        latents.append(np.asarray(z[index]))
    frames, latents = np.concatenate(frames), np.concatenate(latents)
    probe = torch.zeros(1, *latents.shape[1:])
    report = {"date": time.strftime("%Y-%m-%d"), "datasets": [str(d) for d in datasets],
              "val_datasets": [str(d) for d in val_datasets or []], "steps": done, "batch_size": config.batch_size,
              "wall_minutes": (time.monotonic() - started) / 60,
              "num_parameters": sum(p.numel() for p in light.parameters()),
              "flops_per_frame": {"light": count_flops(lambda: decode_latents(light, probe)),
                                  "full": count_flops(lambda: decode_latents(pipeline.autoencoder, probe))},
              "held_out": decoder_report(pipeline, light, frames, latents), "config": asdict(config)}
    output = Path(output) if output is not None else model / "decoder"
    staged = output.with_name(f".{output.name}.partial")  # an interrupted run never leaves a half-written decoder
    shutil.rmtree(staged, ignore_errors=True)
    light.save_pretrained(staged)
    write_json(staged / "metrics.json", report)
    replace_folder(staged, output)
    if output == model / "decoder":
        write_manifest(model)
    return report
