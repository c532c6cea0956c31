"""Open-loop fidelity: imagined rollouts against real held-out episodes, next to the copy-last-frame baseline.

From ``num_context`` real frames, the model imagines ``horizon`` frames under the episode's real actions; each
imagined frame is compared with the real one: PSNR, SSIM, and the embodiment plug-in's frame metrics
(:meth:`~worldsim.embodiments.EmbodimentPlugin.frame_metrics`; e.g. the error of an agent's position located in the
imagined frame against the one located in the real frame: does the model follow the actions). The baseline repeats
the last context frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from worldsim.data.frame_cache import load_frame_cache
from worldsim.data.lerobot import LeRobotDataset
from worldsim.evaluation.metrics import psnr, ssim
from worldsim.constants import OBS_STATE, REWARD, SUCCESS
from worldsim.pipelines.world_model import WorldModelPipeline


@dataclass
class Windows:
    """Evaluation windows: real frames `(W, n + H, H_f, W_f, 3)` uint8 and actions `(W, n + H - 1, A)` float32, the
    episode and first step of each, and each window's episode task text (``""`` where none was recorded)."""

    frames: np.ndarray
    action: np.ndarray
    episodes: np.ndarray
    starts: np.ndarray
    tasks: list[str] | None = None


def evaluation_windows(dataset: LeRobotDataset, frames: np.ndarray, num_context: int, horizon: int,
                       starts_per_episode: int = 1, max_windows: int | None = None) -> Windows:
    """Cuts ``starts_per_episode`` evenly spaced windows of ``num_context + horizon`` frames from each episode.

    Raises:
        ValueError: no episode is long enough.
    """
    length = num_context + horizon
    clips, actions, episodes, starts = [], [], [], []
    for episode in range(dataset.num_episodes):
        segment = dataset.episode_slice(episode)
        room = segment.stop - segment.start - length
        if room < 0:
            continue
        offsets = np.linspace(0, room, starts_per_episode).round().astype(int) if starts_per_episode > 1 else [0]
        for offset in offsets:
            start = segment.start + int(offset)
            clips.append(np.asarray(frames[start:start + length]))
            actions.append(dataset.action[start:start + length - 1])
            episodes.append(episode)
            starts.append(int(offset))
    if not clips:
        raise ValueError(f"no episode of {dataset.root} has {length} frames (context {num_context} + horizon {horizon})")
    if max_windows is not None:
        clips, actions, episodes, starts = clips[:max_windows], actions[:max_windows], episodes[:max_windows], starts[:max_windows]
    episode_tasks = dataset.episode_tasks
    tasks = [episode_tasks[int(e)] for e in episodes]
    return Windows(np.stack(clips), np.stack(actions).astype(np.float32), np.asarray(episodes), np.asarray(starts),
                   tasks)


def _per_step(imagined: np.ndarray, real: np.ndarray, embodiment=None) -> dict[str, np.ndarray]:
    """Metrics per window and step: arrays `(W, H)`; PSNR and SSIM, then the plug-in's frame metrics."""
    metrics = {"psnr": psnr(imagined, real), "ssim": ssim(imagined, real)}
    if embodiment is not None:
        metrics.update(embodiment.frame_metrics(imagined, real))
    return metrics


def imagine_windows(pipeline: WorldModelPipeline, windows: Windows, num_context: int, batch_size: int = 16,
                    num_inference_steps: int | None = None, context_noise: float | None = None, seed: int = 0,
                    progress: bool = True, action_guidance_scale: float | None = None,
                    embodiment: str | None = None, timestep_spacing: str | None = None,
                    return_latents: bool = False, sampler=None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Imagines every window open-loop from its first ``num_context`` frames under its real actions.

    ``embodiment`` picks the action source of a multi-embodiment model (default: the model's default). ``sampler``
    (a :class:`~worldsim.pipelines.SamplerSettings`) is how frames are imagined; without it the separate settings
    (``num_inference_steps``, ``context_noise``, ``action_guidance_scale``, ``timestep_spacing``; None: the model's)
    are resolved once with the model's defaults and the pipeline's current decoder.

    Returns:
        `np.ndarray` `(W, H, S, S, 3)` uint8, H = window length - ``num_context``; with ``return_latents`` the tuple
        ``(frames, latents)``, latents `(W, H, C, h, w)` float32, what each frame was decoded from
        (:meth:`WorldModelPipeline.rollout`).
    """
    if sampler is None:
        sampler = pipeline.sampler_settings(num_inference_steps=num_inference_steps, context_noise=context_noise,
                                            action_guidance_scale=action_guidance_scale,
                                            timestep_spacing=timestep_spacing)
    pipeline.set_decoder(sampler.decoder)
    generator = torch.Generator().manual_seed(seed)
    conditioned = pipeline.transformer.task_embedder is not None and windows.tasks is not None
    imagined, latents = [], []
    for start in tqdm(range(0, len(windows.frames), batch_size), desc="imagining windows", disable=not progress):
        chunk = slice(start, start + batch_size)
        # a task-conditioned model imagines each window's own task (an unknown task text raises ValueError)
        task = [text or None for text in windows.tasks[chunk]] if conditioned else None
        out = pipeline.rollout(windows.frames[chunk, :num_context], windows.action[chunk, :num_context - 1],
                               windows.action[chunk, num_context - 1:], generator=generator, embodiment=embodiment,
                               return_latents=return_latents, task=task, **sampler.step_kwargs())
        if return_latents:
            imagined.append(out[0])
            latents.append(out[1])
        else:
            imagined.append(out)
    if return_latents:
        return np.concatenate(imagined), np.concatenate(latents)
    return np.concatenate(imagined)


def fidelity_report(imagined: np.ndarray, windows: Windows, num_context: int, embodiment=None) -> dict:
    """Compares imagined frames `(W, H, S, S, 3)` with the windows' real frames and the copy-last-frame baseline.

    Args:
        embodiment: the :class:`~worldsim.embodiments.EmbodimentPlugin` whose frame metrics are added (None: PSNR
            and SSIM only).

    Returns:
        dict with ``"per_step"`` (metric -> {"model", "copy_last_frame"} -> list over steps 1..H) and ``"summary"``
        (means over steps and windows; for the plug-in's headline metric ``m`` also ``m_at_horizon`` at the last
        step and ``m_ratio`` = model / baseline), in the units the plug-in states.
    """
    horizon = imagined.shape[1]
    real = windows.frames[:, num_context:num_context + horizon]
    baseline = np.repeat(windows.frames[:, num_context - 1:num_context], horizon, axis=1)
    model_metrics, baseline_metrics = _per_step(imagined, real, embodiment), _per_step(baseline, real, embodiment)
    per_step, summary = {}, {}
    for name in model_metrics:
        for label, metrics in (("model", model_metrics), ("copy_last_frame", baseline_metrics)):
            values = metrics[name].astype(np.float64)
            per_step.setdefault(name, {})[label] = np.nanmean(values, axis=0).tolist()
            summary[f"{name}/{label}"] = float(np.nanmean(values))
    headline = None if embodiment is None else embodiment.headline_metric
    if headline is not None and headline in model_metrics:
        for label, metrics in (("model", model_metrics), ("copy_last_frame", baseline_metrics)):
            summary[f"{headline}_at_horizon/{label}"] = float(np.nanmean(metrics[headline][:, -1]))
        summary[f"{headline}_ratio"] = summary[f"{headline}/model"] / max(summary[f"{headline}/copy_last_frame"], 1e-9)
    labels = {} if embodiment is None else {key: list(value) for key, value in embodiment.metric_labels.items()}
    return {"num_windows": int(len(imagined)), "num_context": num_context, "horizon": horizon,
            "summary": summary, "per_step": per_step, "headline_metric": headline, "metric_labels": labels}


def add_reward_report(report: dict, pipeline: WorldModelPipeline, dataset: LeRobotDataset, windows: Windows,
                      imagined: np.ndarray, num_context: int, embodiment: str | None = None,
                      imagined_latents: np.ndarray | None = None) -> dict:
    """Adds the reward head's error on imagined frames to a fidelity report (in place; also returned).

    Imagined frame k of a window (``k = 0 .. H-1``) was produced by the real transition ``start + num_context - 1
    + k``, whose ``next.reward`` is the target. Three errors, mean absolute, in reward units: the head on the
    imagined frames (``reward_error/model``), on the last context frame held still (``reward_error/copy_last_frame``)
    and on the real frames (``reward_error/real_frames``, the head's own error, a floor for the first).

    Args:
        imagined: `(W, H, S, S, 3)` uint8 imagined frames.
        imagined_latents: `(W, H, C, h, w)` float32, the latents the imagined frames were decoded from
            (:func:`imagine_windows` ``return_latents``). Given, the head reads them, as the env and ``worldsim
            rank`` do; otherwise it reads the imagined frames encoded again by the autoencoder (a decode-encode round
            trip the env never makes). ``report["reward_model_input"]`` says which.

    Raises:
        ValueError: ``imagined_latents`` whose first two dimensions are not ``imagined``'s.
    """
    horizon = imagined.shape[1]
    reward = np.asarray(dataset.columns[REWARD], dtype=np.float64).reshape(-1)
    rows = np.array([dataset.episode_slice(int(e)).start + int(s) for e, s in zip(windows.episodes, windows.starts)])
    target = reward[rows[:, None] + num_context - 1 + np.arange(horizon)[None]]  # (W, H)

    def head(frames: np.ndarray) -> np.ndarray:
        return pipeline.outcomes(frames.reshape(-1, *frames.shape[-3:]), embodiment)["reward"].reshape(frames.shape[:2])

    real = windows.frames[:, num_context:num_context + horizon]
    baseline = np.repeat(windows.frames[:, num_context - 1:num_context], horizon, axis=1)
    if imagined_latents is not None:
        if imagined_latents.ndim != 5 or imagined_latents.shape[:2] != imagined.shape[:2]:
            raise ValueError(f"imagined_latents has shape {imagined_latents.shape}, expected "
                             f"({imagined.shape[0]}, {horizon}, C, h, w) like the imagined frames")
        latents = torch.from_numpy(np.ascontiguousarray(imagined_latents.reshape(-1, *imagined_latents.shape[2:])))
        model_reward = pipeline.outcomes(None, embodiment, latents=latents)["reward"].reshape(imagined.shape[:2])
    else:
        model_reward = head(imagined)
    for label, predicted in (("model", model_reward), ("copy_last_frame", head(baseline)), ("real_frames", head(real))):
        error = np.abs(predicted - target)
        report["per_step"].setdefault("reward_error", {})[label] = error.mean(axis=0).tolist()
        report["summary"][f"reward_error/{label}"] = float(error.mean())
    report["summary"]["reward/real"] = float(target.mean())
    report["reward_model_input"] = "frames" if imagined_latents is None else "latents"
    if SUCCESS in dataset.columns and pipeline.heads_for(embodiment).config.success_trained:
        success = np.asarray(dataset.columns[SUCCESS], dtype=np.float64).reshape(-1)
        labels = success[rows[:, None] + num_context - 1 + np.arange(horizon)[None]]  # (W, H): frame k succeeds

        def probability(frames: np.ndarray) -> np.ndarray:
            return pipeline.outcomes(frames.reshape(-1, *frames.shape[-3:]), embodiment)["success_probability"] \
                .reshape(frames.shape[:2])

        model = pipeline.outcomes(None, embodiment, latents=latents)["success_probability"].reshape(
            imagined.shape[:2]) if imagined_latents is not None else probability(imagined)
        for label, predicted in (("model", model), ("copy_last_frame", probability(baseline)),
                                 ("real_frames", probability(real))):
            calibration = success_calibration(predicted.reshape(-1), labels.reshape(-1))
            report["summary"][f"success_brier/{label}"] = calibration["brier"]
            report["summary"][f"success_ece/{label}"] = calibration["ece"]
            report.setdefault("success_calibration", {})[label] = calibration
        report["summary"]["success/real"] = float(labels.mean())
    return report


def success_calibration(probability: np.ndarray, label: np.ndarray, bins: int = 10) -> dict:
    """How well success probabilities match outcomes: the Brier score (mean squared error), the expected calibration
    error (ECE, Naeini et al. 2015: the frequency-weighted gap between mean probability and success rate over
    ``bins`` equal-width probability bins) and the table behind it.

    Args:
        probability: `(N,)` predicted success probabilities in [0, 1].
        label: `(N,)` 0 / 1 outcomes.

    Returns:
        ``{"brier", "ece", "bins": [{"low", "high", "count", "mean_probability", "success_rate"}, ...]}`` (bins
        without samples left out).

    Raises:
        ValueError: arrays of different lengths or empty.
    """
    probability, label = np.asarray(probability, np.float64), np.asarray(label, np.float64)
    if probability.shape != label.shape or probability.ndim != 1 or not len(probability):
        raise ValueError(f"probability and label must be equal-length non-empty vectors, got {probability.shape} and "
                         f"{label.shape}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for number in range(bins):
        chosen = index == number
        if not chosen.any():
            continue
        mean, rate = float(probability[chosen].mean()), float(label[chosen].mean())
        ece += chosen.mean() * abs(mean - rate)
        table.append({"low": float(edges[number]), "high": float(edges[number + 1]), "count": int(chosen.sum()),
                      "mean_probability": mean, "success_rate": rate})
    return {"brier": float(np.mean((probability - label) ** 2)), "ece": float(ece), "bins": table}


def add_state_report(report: dict, pipeline: WorldModelPipeline, dataset: LeRobotDataset, windows: Windows,
                     imagined_latents: np.ndarray, num_context: int, embodiment=None) -> dict:
    """Adds the state predictor's error on imagined frames to a fidelity report (in place; also returned).

    From the real ``observation.state`` of the last context frame, the embodiment's state predictor
    (:class:`~worldsim.models.state.StatePredictor`) reads each imagined latent in turn and its own previous
    prediction (and the action that produced the frame, for a predictor that reads actions), as the env does; each
    predicted state is compared with the real state of that frame, and so is the
    last context state held still (``copy_last_frame``). Errors: the mean absolute error over dimensions in units of
    each dimension's training standard deviation (``state_error``), and the plug-in's named state groups
    (:attr:`~worldsim.embodiments.EmbodimentPlugin.state_metrics`, e.g. the end-effector's position error in mm: the
    Euclidean distance of those dimensions, times the group's scale).

    Args:
        imagined_latents: `(W, H, C, h, w)` float32, what the imagined frames were decoded from.
        embodiment: the plug-in (its ``state_metrics``) or None.

    Raises:
        ValueError: latents that do not match the windows.
    """
    spec_name = report.get("embodiment") or pipeline.default_embodiment
    predictor = pipeline.state_predictor_for(spec_name)
    states = np.asarray(dataset.columns[OBS_STATE], dtype=np.float32)
    windows_count, horizon = imagined_latents.shape[:2]
    if windows_count != len(windows.frames):
        raise ValueError(f"{windows_count} latent windows for {len(windows.frames)} windows")
    rows = np.array([dataset.episode_slice(int(e)).start + int(s) for e, s in zip(windows.episodes, windows.starts)])
    last = states[rows + num_context - 1]  # (W, S)
    target = states[rows[:, None] + num_context + np.arange(horizon)[None]]  # (W, H, S)
    predicted, previous = [], torch.from_numpy(last)
    with torch.no_grad():
        for step in range(horizon):
            # windows.action[:, i] was applied after frame i: imagined frame `step` came from action num_context-1+step
            action = windows.action[:, num_context - 1 + step] if predictor.action_dim else None
            previous = predictor.predict(torch.from_numpy(np.ascontiguousarray(imagined_latents[:, step])).float(),
                                         previous, action)
            predicted.append(previous.numpy())
    predicted = np.stack(predicted, axis=1)
    scale = np.asarray(predictor.config.state_std, dtype=np.float64)
    groups = dict(getattr(embodiment, "state_metrics", None) or {})
    for label, values in (("model", predicted), ("copy_last_frame", np.repeat(last[:, None], horizon, axis=1))):
        error = np.abs(values - target) / scale  # (W, H, S)
        report["per_step"].setdefault("state_error", {})[label] = error.mean(axis=(0, 2)).tolist()
        report["summary"][f"state_error/{label}"] = float(error.mean())
        for name, (dims, unit) in groups.items():
            distance = np.linalg.norm(values[..., dims] - target[..., dims], axis=-1) * unit  # (W, H)
            report["per_step"].setdefault(name, {})[label] = distance.mean(axis=0).tolist()
            report["summary"][f"{name}/{label}"] = float(distance.mean())
            report["summary"][f"{name}_at_horizon/{label}"] = float(distance[:, -1].mean())
    return report


def frame_metrics_for(pipeline: WorldModelPipeline, embodiment: str | None = None):
    """The plug-in whose frame metrics :func:`fidelity_report` adds for a model's embodiment, or None when no
    plug-in serves it (then PSNR and SSIM only)."""
    from worldsim.embodiments import resolve_embodiment

    try:
        return resolve_embodiment(pipeline, embodiment)[1]
    except (ValueError, ImportError):
        return None


def evaluate_fidelity(pipeline: WorldModelPipeline, dataset: LeRobotDataset, horizon: int = 32, num_context: int = 4,
                      starts_per_episode: int = 1, max_windows: int | None = None, batch_size: int = 16,
                      num_inference_steps: int | None = None, context_noise: float | None = None, seed: int = 0,
                      progress: bool = True, action_guidance_scale: float | None = None,
                      embodiment: str | None = None, timestep_spacing: str | None = None,
                      sampler=None) -> tuple[dict, np.ndarray, Windows]:
    """Runs the open-loop fidelity evaluation on a dataset of held-out real episodes.

    Args:
        pipeline: the model.
        dataset: held-out real episodes (LeRobot layout).
        horizon: imagined steps per window.
        num_context: real context frames per window.
        starts_per_episode, max_windows: how many windows to cut (see :func:`evaluation_windows`).
        batch_size: windows imagined together in one batch.
        sampler: a :class:`~worldsim.pipelines.SamplerSettings`; without it the separate settings below are resolved
            once with the model's defaults and the pipeline's current decoder.
        num_inference_steps, context_noise, action_guidance_scale, timestep_spacing: shorthands for ``sampler``
            (default: the model's).
        seed: generator seed; the same seed gives the same figures on the same machine.
        embodiment: which embodiment's actions the dataset holds (multi-embodiment models); its plug-in adds its frame
            metrics (:func:`frame_metrics_for`).

    Returns:
        (report, imagined, windows): the :func:`fidelity_report` dict plus the settings, the imagined frames
        `(W, horizon, S, S, 3)` uint8, and the real windows.
    """
    if sampler is None:  # resolved once: bad settings fail before any frame is decoded
        sampler = pipeline.sampler_settings(num_inference_steps=num_inference_steps, context_noise=context_noise,
                                            action_guidance_scale=action_guidance_scale,
                                            timestep_spacing=timestep_spacing)
    frames = load_frame_cache(dataset, pipeline.image_size, progress=progress,
                              video_keys=pipeline.composed_cameras)
    windows = evaluation_windows(dataset, frames, num_context, horizon, starts_per_episode, max_windows)
    imagined, latents = imagine_windows(pipeline, windows, num_context, batch_size, seed=seed, progress=progress,
                                        embodiment=embodiment, return_latents=True, sampler=sampler)
    report = fidelity_report(imagined, windows, num_context, frame_metrics_for(pipeline, embodiment))
    if pipeline.heads_for(embodiment) is not None and REWARD in dataset.columns:
        add_reward_report(report, pipeline, dataset, windows, imagined, num_context, embodiment, latents)
    if pipeline.state_predictor_for(embodiment) is not None and OBS_STATE in dataset.columns:
        report["embodiment"] = pipeline.embodiment(embodiment).name
        add_state_report(report, pipeline, dataset, windows, latents, num_context, frame_metrics_for(pipeline,
                                                                                                      embodiment))
    report.update({
        "dataset": str(dataset.root),
        **sampler.to_dict(),
        "seed": seed,
    })
    return report, imagined, windows
