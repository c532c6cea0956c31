"""``worldsim distill``: a few-step student of a trained world model (step distillation).

An imagined frame costs one transformer pass per denoising step plus the pass that writes the finished frame into
the KV cache. Euler with 1 step predicts the *mean* next frame (a blurred agent), so the steps cannot simply be cut
(docs/benchmarks.md, "Few-step sampling"). Step distillation trains a student to take the teacher's *many*-step
trajectory in *few* jumps, as progressive distillation (Salimans & Ho 2022) and rectified-flow distillation (Liu et
al. 2023) do for image models:

1. For a clip, the last frame is the target and the ``h`` frames before it (``h`` drawn per batch, so the student
   also sees the short histories of a rollout's start) are history, noised at the model's ``context_noise`` exactly
   as at rollout time. The teacher encodes the history into a KV cache and runs its Euler sampler (the update of
   diffusers' ``FlowMatchEulerDiscreteScheduler`` on that scheduler's sigmas, ``teacher_steps`` steps) from noise
   ``z``, keeping its state at every sigma.
2. The student's sampler has ``student_steps`` steps on the same spacing, whose sigmas are every
   ``teacher_steps / student_steps``-th of the teacher's. At a student step ``i`` (drawn per clip) the student sees
   the teacher's state ``x_i`` and learns the velocity ``(x_i - x_{i+1}) / (sigma_i - sigma_{i+1})`` that jumps to
   the teacher's state at the next student sigma in one Euler step; at the last step that state is the teacher's
   finished frame.

The student starts from the teacher's weights; ``num_layers`` below the teacher's keeps evenly spaced blocks
(first and last included), as DistilBERT initialises a shallower student, for a student that is also cheaper per
pass. The result is a complete pipeline folder (the teacher's autoencoder, light decoder, heads and start frames,
the student transformer) whose default sampler is the student's, loadable wherever a model is.

    worldsim distill --model <model folder> --dataset <training data> --val-dataset <held-out data> \\
        --student-steps 1 --teacher-steps 3 --out runs/<name>-1step
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from worldsim.data.clips import ClipDataset
from worldsim.models.kv_cache import FrameKVCache
from worldsim.models.world_model import WorldModelTransformer
from worldsim.training.config import DistillConfig, config_with
from worldsim.utils.files import replace_folder, write_json


def student_from_teacher(teacher: WorldModelTransformer, num_layers: int | None = None
                         ) -> tuple[WorldModelTransformer, list[int]]:
    """A student transformer initialised from the teacher's weights.

    Args:
        teacher: the trained :class:`WorldModelTransformer`.
        num_layers: student depth, ``1 <= num_layers <= teacher's``; None: the teacher's. The student keeps the
            teacher's blocks at evenly spaced indices (first and last included) and every other weight as it is.

    Returns:
        (student on the teacher's device, float32, train mode; the teacher's block index of each student block).

    Raises:
        ValueError: ``num_layers`` outside ``[1, teacher's num_layers]``.
    """
    depth = int(teacher.config.num_layers)
    num_layers = depth if num_layers is None else int(num_layers)
    if not 1 <= num_layers <= depth:
        raise ValueError(f"num_layers must be in [1, {depth}] (the teacher's depth), got {num_layers}")
    kept = [round(i * (depth - 1) / (num_layers - 1)) for i in range(num_layers)] if num_layers > 1 else [0]
    config = {key: value for key, value in teacher.config.items() if not key.startswith("_")}
    student = WorldModelTransformer(**{**config, "num_layers": num_layers})
    weights = {}
    for name, tensor in teacher.state_dict().items():
        if name.startswith("blocks."):
            index, rest = name[len("blocks."):].split(".", 1)
            if int(index) not in kept:
                continue
            name = f"blocks.{kept.index(int(index))}.{rest}"
        weights[name] = tensor.detach().clone().float()
    student.load_state_dict(weights, strict=True)
    return student.to(next(teacher.parameters()).device).train(), kept


def sampler_sigmas(pipeline, steps: int, spacing: str) -> torch.Tensor:
    """The sigmas `(steps + 1,)` float32 (last 0) of the pipeline's sampler with ``steps`` steps on ``spacing``.

    Sets the pipeline's scheduler to that sampler (:meth:`~worldsim.pipelines.WorldModelPipeline.set_timesteps`).

    Raises:
        ValueError: bad settings, as :meth:`~worldsim.pipelines.WorldModelPipeline.set_timesteps`.
    """
    pipeline.set_timesteps(steps, spacing)
    return pipeline.scheduler.sigmas.detach().float().cpu().clone()


def encode_history(model: WorldModelTransformer, history: torch.Tensor, action: torch.Tensor, context_noise: float,
                   embodiment: torch.Tensor | None = None) -> FrameKVCache:
    """A KV cache holding ``history``, written as a rollout writes its context.

    Args:
        history: `(B, h, C, hh, ww)` history latents, already noised at ``context_noise``.
        action: `(B, h, A)` normalised actions, ``action[:, t]`` applied after history frame t (the last one
            produces the frame to be imagined).
        context_noise: sigma of the history frames.
        embodiment: `(B,)` long or None.

    Returns:
        A :class:`FrameKVCache` of window ``h + 1`` holding the ``h`` frames (bf16 under bf16 autocast).

    Raises:
        ValueError: shapes that disagree with the model (:meth:`WorldModelTransformer.forward_cached`).
    """
    batch, frames = history.shape[:2]
    dtype = torch.get_autocast_dtype(history.device.type) if torch.is_autocast_enabled(history.device.type) else None
    cache = model.new_cache(batch, frames + 1, dtype=dtype)
    producing = torch.cat([action.new_zeros(batch, 1, action.shape[-1]), action[:, :frames - 1]], dim=1)
    mask = torch.ones(batch, frames, dtype=torch.bool, device=history.device)
    mask[:, 0] = False  # the first history frame has no producing action
    model.forward_cached(history, torch.full((batch, frames), context_noise * 1000.0, device=history.device),
                         producing, mask, cache, update_cache=True, embodiment=embodiment,
                         return_output=False)
    return cache


def euler_trajectory(model: WorldModelTransformer, cache: FrameKVCache, producing: torch.Tensor, noise: torch.Tensor,
                     sigmas: torch.Tensor, embodiment: torch.Tensor | None = None) -> torch.Tensor:
    """Euler states of the next frame's flow from ``noise`` down the ``sigmas`` grid (the pipeline's sampler).

    Args:
        cache: the history (:func:`encode_history`); read only.
        producing: `(B, 1, A)` normalised action that produces the frame.
        noise: `(B, 1, C, h, w)` float32, the state at ``sigmas[0]``.
        sigmas: `(n + 1,)` decreasing, ending at 0.

    Returns:
        `(n + 1, B, 1, C, h, w)` float32: the state at every sigma; the last is the finished frame's latent.

    Raises:
        ValueError: shapes that disagree with the model or the cache (:meth:`WorldModelTransformer.forward_cached`).
    """
    states, sample = [noise], noise
    for sigma, next_sigma in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        timestep = torch.full((noise.shape[0], 1), sigma * 1000.0, device=noise.device)
        velocity = model.forward_cached(sample, timestep, producing, None, cache, embodiment=embodiment).float()
        sample = sample + (next_sigma - sigma) * velocity  # FlowMatchEulerDiscreteScheduler.step
        states.append(sample)
    return torch.stack(states)


def noised_history_and_start(latents: torch.Tensor, context_noise: float, generator: torch.Generator
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """A clip's history as a rollout holds it and the noise its last frame starts from.

    Args:
        latents: `(B, h + 1, C, hh, ww)` clean latents; the last frame is the one to imagine.
        context_noise: sigma of history frames (flow matching: ``(1 - sigma) * x + sigma * noise``).
        generator: CPU torch RNG (history noise first, then the start noise).

    Returns:
        (history `(B, h, C, hh, ww)` noised at ``context_noise``, start noise `(B, 1, C, hh, ww)`), float32.
    """
    history_noise = torch.randn(latents[:, :-1].shape, generator=generator).to(latents.device)
    history = (1.0 - context_noise) * latents[:, :-1] + context_noise * history_noise
    return history, torch.randn(latents[:, -1:].shape, generator=generator).to(latents.device)


def distillation_batch(teacher: WorldModelTransformer, latents: torch.Tensor, action: torch.Tensor,
                       history_frames: int, context_noise: float, teacher_sigmas: torch.Tensor, stride: int,
                       generator: torch.Generator, embodiment: torch.Tensor | None = None) -> dict:
    """Inputs and targets of one distillation step: what the student sees and the velocity it must predict.

    Args:
        latents: `(B, T, C, h, w)` clean latents of clips; the last frame is the target.
        action: `(B, T, A)` normalised actions of the clips.
        history_frames: h in ``[1, T - 1]``: the target's history is the h frames before it.
        context_noise: sigma of history frames.
        teacher_sigmas: `(n + 1,)` the teacher's sampler grid; ``stride`` = n / student steps.
        generator: CPU torch RNG (history noise, start noise, student step per clip).

    Returns:
        dict: ``sample`` `(B, h + 1, C, h, w)` (noised history then the teacher's state), ``timestep`` `(B, h + 1)`,
        ``action`` `(B, h + 1, A)`, ``target`` `(B, C, h, w)` velocity, ``history`` `(B, h, C, h, w)` clean.

    Raises:
        ValueError: ``history_frames`` outside ``[1, T - 1]``.
    """
    batch, frames = latents.shape[:2]
    if not 1 <= history_frames <= frames - 1:
        raise ValueError(f"history_frames must be in [1, {frames - 1}], got {history_frames}")
    device = latents.device
    window = latents[:, frames - 1 - history_frames:]
    window_action = action[:, frames - 1 - history_frames:]
    history, start = noised_history_and_start(window, context_noise, generator)
    student_steps = (len(teacher_sigmas) - 1) // stride
    step = torch.randint(0, student_steps, (batch,), generator=generator).to(device)
    with torch.no_grad():
        cache = encode_history(teacher, history, window_action[:, :-1], context_noise, embodiment)
        states = euler_trajectory(teacher, cache, window_action[:, -2:-1], start, teacher_sigmas.to(device),
                                  embodiment)
    rows = torch.arange(batch, device=device)
    sigma_now = teacher_sigmas.to(device)[step * stride]
    sigma_next = teacher_sigmas.to(device)[(step + 1) * stride]
    now, after = states[step * stride, rows, 0], states[(step + 1) * stride, rows, 0]
    target = (now - after) / (sigma_now - sigma_next)[:, None, None, None]
    timestep = torch.cat([torch.full((batch, history_frames), context_noise * 1000.0, device=device),
                          (sigma_now * 1000.0)[:, None]], dim=1)
    return {"sample": torch.cat([history, now[:, None]], dim=1), "timestep": timestep, "action": window_action,
            "target": target, "history": window[:, :-1]}


def student_loss(student: WorldModelTransformer, inputs: dict, motion_weight: float = 4.0,
                 motion_threshold: float = 0.3, embodiment: torch.Tensor | None = None) -> torch.Tensor:
    """Motion-weighted squared error of the student's velocity on the target frame (scalar).

    Args:
        inputs: a :func:`distillation_batch` dict (``sample`` `(B, h + 1, C, hh, ww)`, ``target`` `(B, C, hh, ww)`).
        motion_weight, motion_threshold: as world-model training's ``train.motion_weight`` / ``motion_threshold``.
        embodiment: `(B,)` long or None.

    The weights are those of world-model training (:func:`~worldsim.training.train_world_model.motion_weights`,
    computed from the clean history), so the small moving agent counts as it did for the teacher.
    """
    from worldsim.training.train_world_model import motion_weights

    prediction = student(inputs["sample"], inputs["timestep"], inputs["action"], embodiment=embodiment)[:, -1].float()
    clip = torch.cat([inputs["history"], inputs["target"][:, None]], dim=1)  # only the history sets the weights
    weights = motion_weights(clip, motion_weight, motion_threshold)[:, -1]  # (B, h, w)
    error = (prediction - inputs["target"]).square().mean(dim=1)
    return ((error * weights).sum(dim=(1, 2)) / weights.sum(dim=(1, 2))).mean()


@torch.no_grad()
def sample_error(model: WorldModelTransformer, teacher: WorldModelTransformer, latents: torch.Tensor,
                 action: torch.Tensor, context_noise: float, sigmas: torch.Tensor, teacher_sigmas: torch.Tensor,
                 seed: int = 0, embodiment: torch.Tensor | None = None) -> float:
    """Mean squared latent error of ``model``'s sample against the teacher's, from the same noise and history.

    Args:
        latents, action: `(B, T, C, h, w)` / `(B, T, A)` clips; the last frame is imagined from the T - 1 before.
        sigmas: ``model``'s sampler grid; ``teacher_sigmas``: the teacher's.

    Returns:
        The error (latent units squared, mean over clips and latent cells).
    """
    history, start = noised_history_and_start(latents, context_noise, torch.Generator().manual_seed(seed))
    finished = []
    for net, grid in ((teacher, teacher_sigmas), (model, sigmas)):
        cache = encode_history(net, history, action[:, :-1], context_noise, embodiment)
        finished.append(euler_trajectory(net, cache, action[:, -2:-1], start, grid.to(latents.device), embodiment)[-1])
    return float((finished[1] - finished[0]).square().mean())


def _clips_for(pipeline, model: Path, root, num_frames: int, progress: bool) -> ClipDataset:
    from worldsim.data.lerobot import LeRobotDataset
    from worldsim.training.train_decoder import load_frames_and_latents

    spec = pipeline.embodiment()
    dataset = LeRobotDataset(root)
    if dataset.action_dim != spec.action_dim:  # checked before frames are cached
        raise ValueError(f"dataset {root} has {dataset.action_dim}-dimensional actions; the model's embodiment "
                         f"{spec.name!r} has {spec.action_dim}")
    dataset, _, latents = load_frames_and_latents(pipeline, model, root, progress)
    action = pipeline._normalize(spec, dataset.action).cpu().numpy()
    return ClipDataset(latents, action, dataset.episode_from, dataset.episode_to, num_frames)


def distill_world_model(model: str | Path, datasets: list[str | Path], output: str | Path,
                        config: DistillConfig | None = None, *, val_datasets: list[str | Path] | None = None,
                        progress: bool = True, **overrides) -> dict:
    """Distils the pipeline at ``model`` into a ``config.student_steps``-step student and writes it to ``output``.

    Args:
        model: teacher pipeline folder (one embodiment).
        datasets: LeRobot datasets of the teacher's embodiment (their latents are cached as training caches them).
        output: the student pipeline folder to write (replaced if it exists; written atomically).
        config: the settings (:class:`~worldsim.training.config.DistillConfig`): ``student_steps`` Euler steps per
            frame; ``teacher_steps``, a multiple of them (None: twice); ``timestep_spacing`` of both samplers;
            ``num_layers``, the student's depth (see :func:`student_from_teacher`; None: the teacher's); AdamW with
            50 warm-up steps and cosine decay for ``steps`` or ``max_minutes``, whose EMA (diffusers ``EMAModel``,
            ``ema_decay`` with warm-up) is the student written; ``val_clips`` clips for the report; accelerate's
            ``mixed_precision``. None: the defaults.
        val_datasets: datasets for the report (``val_clips`` clips); default: the training datasets.
        progress: show progress bars.
        **overrides: :class:`DistillConfig` fields replacing ``config``'s (``student_steps=2, teacher_steps=4``).

    Returns:
        The report (also ``distill_metrics.json`` in ``output``): settings, steps done, minutes, samples per second,
        parameters and the latent error of samples against the teacher's on ``val_clips`` clips: the teacher's own
        sampler cut to ``student_steps`` (what the student replaces), the student before and after training; the
        resolved settings under ``config``. ``distill_log.jsonl`` beside it holds the loss per step.

    Raises:
        TypeError: an override that is not a :class:`DistillConfig` field.
        ValueError: an impossible setting (naming the field: step counts, spacing), no datasets, ``num_layers``
            deeper than the teacher, a multi-embodiment teacher, a dataset of another action size, or too few clips
            for a batch. Nothing is written then.
    """
    from worldsim.pipelines.world_model import WorldModelPipeline

    config = config_with(DistillConfig, config, overrides, "distill_world_model")
    student_steps, teacher_steps = config.student_steps, config.resolved_teacher_steps
    timestep_spacing, batch_size, seed = config.timestep_spacing, config.batch_size, config.seed
    if not datasets:
        raise ValueError("give at least one dataset")
    model, output = Path(model), Path(output)
    if output.resolve() == model.resolve():
        raise ValueError(f"output {output} is the teacher's folder; write the student elsewhere")
    pipeline = WorldModelPipeline.from_pretrained(model)
    pipeline.require_per_frame("distillation")
    if pipeline.transformer.action_encoders is not None:
        raise ValueError("distilling a multi-embodiment model is not supported; its datasets need per-embodiment "
                         "batches")
    teacher_sigmas = sampler_sigmas(pipeline, teacher_steps, timestep_spacing)  # validates the spacing
    student_sigmas = teacher_sigmas[::teacher_steps // student_steps]
    teacher = pipeline.transformer
    student, kept = student_from_teacher(teacher, config.num_layers)
    context_noise = float(pipeline.metadata.get("context_noise", 0.0))
    window = pipeline.window_size
    train = torch.utils.data.ConcatDataset([_clips_for(pipeline, model, root, window, progress) for root in datasets])
    if len(train) < batch_size:
        raise ValueError(f"batch_size {batch_size} exceeds the {len(train)} training clips")
    held = torch.utils.data.ConcatDataset([_clips_for(pipeline, model, root, window, progress)
                                           for root in val_datasets]) if val_datasets else train
    rng = np.random.default_rng(seed)
    val_rows = np.sort(rng.choice(len(held), min(config.val_clips, len(held)), replace=False))
    val = [held[int(row)] for row in val_rows]
    val_latents = torch.stack([clip["frames"] for clip in val]).float()
    val_action = torch.stack([clip["action"] for clip in val])

    torch.manual_seed(seed)
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    teacher.to(accelerator.device).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, weight_decay=0.0, betas=(0.9, 0.99))
    schedule = lambda step: min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(step / config.steps, 1)))
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    ema = EMAModel(student.parameters(), decay=config.ema_decay, use_ema_warmup=True)
    student, optimizer, lr_scheduler = accelerator.prepare(student, optimizer, lr_scheduler)
    ema.to(accelerator.device)

    def evaluate(net) -> float:
        with accelerator.autocast():
            return sample_error(net.eval(), teacher, val_latents.to(accelerator.device),
                                val_action.to(accelerator.device), context_noise, student_sigmas, teacher_sigmas, seed)

    before = {"teacher": evaluate(teacher), "student_init": evaluate(accelerator.unwrap_model(student))}
    student.train()
    generator = torch.Generator().manual_seed(seed + 1)
    loader_generator = torch.Generator().manual_seed(seed)
    staged = output.with_name(f".{output.name}.partial")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    log = open(staged / "distill_log.jsonl", "w")
    started, done, out_of_time = time.monotonic(), 0, False
    bar = tqdm(total=config.steps, desc=f"distill {teacher_steps} -> {student_steps} steps", disable=not progress)
    while done < config.steps and not out_of_time:  # one DataLoader per epoch, reshuffled
        loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True,
                                             generator=loader_generator)
        for batch in loader:
            latents = batch["frames"].float().to(accelerator.device)
            action = batch["action"].to(accelerator.device)
            history_frames = int(torch.randint(1, window, (1,), generator=generator))
            with accelerator.autocast():
                inputs = distillation_batch(teacher, latents, action, history_frames, context_noise, teacher_sigmas,
                                            teacher_steps // student_steps, generator)
                loss = student_loss(student, inputs)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(accelerator.unwrap_model(student).parameters())
            done += 1
            log.write(json.dumps({"step": done, "loss": loss.item(), "history_frames": history_frames,
                                  "time_s": time.monotonic() - started}) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            out_of_time = config.max_minutes is not None and time.monotonic() - started > 60 * config.max_minutes
            if done >= config.steps or out_of_time:
                break
    bar.close()
    log.close()
    minutes = (time.monotonic() - started) / 60
    distilled = accelerator.unwrap_model(student)
    ema.copy_to(distilled.parameters())
    after = evaluate(distilled)
    distilled = distilled.float().to("cpu").eval()
    teacher.to("cpu")

    metadata = {**pipeline.metadata, "num_inference_steps": int(student_steps), "timestep_spacing": timestep_spacing,
                "distilled_from": {"model": str(model), "teacher_steps": teacher_steps,
                                   "timestep_spacing": timestep_spacing, "teacher_blocks": kept}}
    report = {"date": time.strftime("%Y-%m-%d"), "teacher": str(model), "datasets": [str(d) for d in datasets],
              "val_datasets": [str(d) for d in val_datasets or []], "student_steps": int(student_steps),
              "teacher_steps": teacher_steps, "timestep_spacing": timestep_spacing, "teacher_blocks": kept,
              "num_layers": len(kept), "steps": done, "batch_size": batch_size, "learning_rate": config.learning_rate,
              "wall_minutes": minutes, "samples_per_second": done * batch_size / max(minutes * 60, 1e-9),
              "num_parameters": sum(p.numel() for p in distilled.parameters()),
              "val_clips": len(val_rows),
              "latent_mse_to_teacher": {f"teacher_{student_steps}_steps": before["teacher"],
                                        "student_init": before["student_init"], "student": after},
              "config": asdict(config)}
    student_pipeline = WorldModelPipeline(pipeline.autoencoder, distilled, pipeline.scheduler, metadata,
                                          pipeline.start_frames, pipeline.outcome_heads, pipeline.decoder)
    student_pipeline.save_pretrained(staged)
    write_json(staged / "distill_metrics.json", report)
    replace_folder(staged, output)
    return report
