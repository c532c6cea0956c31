"""Trains the outcome heads (:class:`~worldsim.models.heads.OutcomeHeads`) of a pipeline on real episodes.

Each frame ``i > 0`` of an episode is labelled with the transition that produced it (LeRobot alignment, see
:mod:`worldsim.constants`): reward ``next.reward[i - 1]``, termination ``next.terminated[i - 1]`` (else
``next.done[i - 1]`` without time-limit truncations) and success ``next.success[i - 1]``. Inputs are the frames'
latents from the pipeline's own autoencoder (cached per dataset), so the heads read imagined frames the way they
read real ones. The last ``val_episodes`` episodes of the first dataset are held out; the report gives the reward
error and correlation and a reliability table per probability head on them.

    worldsim train-heads --model <model folder> --dataset <recorded episodes> [--embodiment <name>]

A pipeline carries heads per embodiment (``<model>/heads/<embodiment>/``); training one embodiment's heads keeps the
others'.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from worldsim.constants import DONE, REWARD, SUCCESS
from worldsim.data.frame_cache import load_frame_cache
from worldsim.data.lerobot import LeRobotDataset
from worldsim.models.heads import OutcomeHeads
from worldsim.utils.shapes import size_config
from worldsim.registry import write_manifest
from worldsim.training.config import HeadsConfig, config_with
from worldsim.utils.files import replace_folder


def frame_labels(dataset: LeRobotDataset, embodiment=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frames and their outcome labels.

    The embodiment plug-in labels the frames when it can
    (:meth:`~worldsim.embodiments.EmbodimentPlugin.label_frames`; a plug-in may label every frame from its recorded state,
    exactly as the env scores it). Otherwise each frame ``i > 0`` of an episode is labelled by the transition that
    produced it: reward ``next.reward[i - 1]``, termination ``next.terminated[i - 1]`` (else ``next.done[i - 1]``)
    and success ``next.success[i - 1]``.

    Args:
        dataset: the recorded episodes.
        embodiment: an :class:`~worldsim.embodiments.EmbodimentPlugin`; None: the plug-in serving the dataset's env
            id, if any.

    Returns:
        rows `(M,)` int64 dataset row indices; labels ``{"reward", "termination", "success"}`` each `(M,)` float32
        (0/1 for the last two; zeros where the dataset lacks the column).

    Raises:
        ValueError: the generic labels are needed and the dataset has no ``next.reward`` column.
    """
    if embodiment is None and dataset.env_id:
        from worldsim.embodiments import embodiment_for_env

        embodiment = embodiment_for_env(dataset.env_id)
    if embodiment is not None:
        labelled = embodiment.label_frames(dataset)
        if labelled is not None:
            return labelled
    columns = dataset.columns
    if REWARD not in columns:
        raise ValueError(f"{dataset.root}: no {REWARD!r} column; outcome heads need rewards")
    rows = np.flatnonzero(dataset.frame_index > 0)
    previous = rows - 1
    if not np.all(dataset.episode_index[previous] == dataset.episode_index[rows]):
        raise ValueError(f"{dataset.root}: rows are not ordered by episode and frame")

    def column(name: str) -> np.ndarray:
        return np.asarray(columns[name], dtype=np.float32).reshape(-1)[previous] if name in columns else \
            np.zeros(len(rows), np.float32)

    termination = column("next.terminated") if "next.terminated" in columns else column(DONE)
    return rows, {"reward": column(REWARD), "termination": termination, "success": column(SUCCESS)}


def discounted_values(rewards: np.ndarray, episode_index: np.ndarray, discount: float) -> np.ndarray:
    """Normalised discounted future reward per frame: ``V_t = (1 - gamma) * sum_{i >= 0} gamma^i r_{t+i}``.

    Computed backwards within each episode; past an episode's last frame the reward is taken to stay at its last
    value (recorded episodes that end by a time limit or by success end where the scene no longer changes), so a
    state that holds reward r has value r.

    Args:
        rewards: `(M,)` float per-frame reward, rows ordered by episode and frame.
        episode_index: `(M,)` int episode of each row.
        discount: gamma in (0, 1).

    Returns:
        `(M,)` float32 values in the reward's units.

    Raises:
        ValueError: mismatched lengths or ``discount`` outside (0, 1).
    """
    rewards, episode_index = np.asarray(rewards, np.float64), np.asarray(episode_index)
    if rewards.shape != episode_index.shape or rewards.ndim != 1:
        raise ValueError(f"rewards {rewards.shape} and episode_index {episode_index.shape} must be equal 1-D shapes")
    if not 0.0 < discount < 1.0:
        raise ValueError(f"discount must be in (0, 1), got {discount}")
    values = np.empty_like(rewards)
    for row in range(len(rewards) - 1, -1, -1):
        last = row == len(rewards) - 1 or episode_index[row + 1] != episode_index[row]
        after = rewards[row] if last else values[row + 1]
        values[row] = (1.0 - discount) * rewards[row] + discount * after
    return values.astype(np.float32)


def reliability_table(probability: np.ndarray, outcome: np.ndarray, bins: int = 10) -> list[dict]:
    """Predicted probability vs observed frequency in equal-width bins (a calibration / reliability diagram).

    Returns:
        One dict per non-empty bin: ``low``, ``high``, ``count``, ``mean_predicted``, ``observed_frequency``.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    table = []
    for b in range(bins):
        selected = index == b
        if selected.any():
            table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(selected.sum()),
                          "mean_predicted": float(probability[selected].mean()),
                          "observed_frequency": float(outcome[selected].mean())})
    return table


def train_heads(model: str | Path, datasets: list[str | Path], config: HeadsConfig | None = None, *,
                val_datasets: list[str | Path] | None = None, output: str | Path | None = None,
                progress: bool = True, **overrides) -> dict:
    """Trains outcome heads for the pipeline at ``model`` and writes them to ``output`` (default ``model/heads``).

    Args:
        model: pipeline folder (its autoencoder encodes the frames).
        datasets: LeRobot dataset folders with ``next.reward`` (and ideally ``next.terminated``, ``next.success``).
        config: the settings (:class:`~worldsim.training.config.HeadsConfig`: AdamW steps, batch size, learning rate
            and seed; ``val_episodes`` last episodes of the first dataset held out when no ``val_datasets``; the
            ``embodiment`` the datasets show, default the model's, the only one the heads are used for;
            ``value_discount``, gamma of the value output, :func:`discounted_values` of the reward labels under the
            datasets' own policies, None: no value output). None: the defaults.
        val_datasets: datasets used only for the report (all their frames); then nothing is held out of
            ``datasets``.
        output: where to write the heads; default ``model/heads/<embodiment>`` (and the model's manifest is updated).
        progress: show progress bars.
        **overrides: :class:`HeadsConfig` fields replacing ``config``'s (``steps=60, batch_size=32``).

    Returns:
        The report (also written as ``metrics.json`` beside the weights): reward MAE and Pearson r on held-out
        frames (value MAE and Pearson r with a value output), positives per label, a reliability table per
        probability head, and the resolved settings under ``config``. A label with no positive example in the
        training data leaves its head untrained (listed in ``untrained_heads``; the env then reports no such
        probability rather than a constant 0).

    Raises:
        TypeError: an override that is not a :class:`HeadsConfig` field.
        ValueError: an impossible setting (naming the field), no datasets, a dataset without rewards, or too few
            episodes to hold out.
    """
    from worldsim.pipelines.world_model import WorldModelPipeline
    from worldsim.training.train_world_model import load_latent_cache

    config = config_with(HeadsConfig, config, overrides, "train_heads")
    if not datasets:
        raise ValueError("give at least one dataset")
    model = Path(model)
    pipeline = WorldModelPipeline.from_pretrained(model)
    pipeline.require_per_frame("outcome-head training")
    name = pipeline.embodiment(config.embodiment).name
    try:
        from worldsim.embodiments import make_embodiment

        plugin = make_embodiment(name)
    except ValueError:  # no plug-in for this embodiment: the generic labels
        plugin = None
    torch.manual_seed(config.seed)
    train_x, train_y, val_x, val_y = [], [], [], []
    sources = [(root, False) for root in datasets] + [(root, True) for root in (val_datasets or [])]
    for number, (root, validation_only) in enumerate(sources):
        dataset = LeRobotDataset(root)
        rows, labels = frame_labels(dataset, plugin)
        frames = load_frame_cache(dataset, pipeline.image_size, progress=progress,
                                  video_keys=pipeline.composed_cameras)
        latents = load_latent_cache(dataset, frames, pipeline.autoencoder, model / "autoencoder",
                                    dataset.root / "cache", progress=progress, camera_keys=pipeline.composed_cameras)
        held = np.full(len(rows), validation_only)
        if number == 0 and not val_datasets:
            if len(dataset.episodes) <= config.val_episodes:
                raise ValueError(f"{root} has {len(dataset.episodes)} episodes; cannot hold out {config.val_episodes}")
            held = dataset.episode_index[rows] >= len(dataset.episodes) - config.val_episodes
        columns = [labels["reward"], labels["termination"], labels["success"]]
        if config.value_discount is not None:
            columns.append(discounted_values(labels["reward"], dataset.episode_index[rows], config.value_discount))
        stacked = np.stack(columns, axis=1)
        x = torch.from_numpy(np.asarray(latents[rows], dtype=np.float32))
        train_x.append(x[~held]), train_y.append(torch.from_numpy(stacked[~held]))
        val_x.append(x[held]), val_y.append(torch.from_numpy(stacked[held]))
    train_x, train_y = torch.cat(train_x), torch.cat(train_y)
    val_x, val_y = torch.cat(val_x), torch.cat(val_y)
    reward_min, reward_max = float(train_y[:, 0].min()), float(train_y[:, 0].max())
    if reward_max <= reward_min:
        reward_max = reward_min + 1.0
    positives = train_y[:, 1:].sum(0)
    heads = OutcomeHeads(in_channels=train_x.shape[1], sample_size=size_config(tuple(train_x.shape[-2:])), reward_min=reward_min,
                         reward_max=reward_max, termination_trained=bool(positives[0] > 0),
                         success_trained=bool(positives[1] > 0),
                         embodiment=name, value_discount=config.value_discount)
    optimizer = torch.optim.AdamW(heads.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    started = time.monotonic()
    heads.train()
    for _ in tqdm(range(config.steps), desc="train outcome heads", disable=not progress):
        index = torch.randint(len(train_x), (config.batch_size,), generator=generator)
        out, y = heads(train_x[index]), train_y[index]
        # plain (unweighted) cross-entropy, a proper scoring rule: the probabilities stay calibrated even for rare
        # events, which is what a reliability table checks
        loss = F.mse_loss(out["reward"], y[:, 0]) + F.binary_cross_entropy_with_logits(
            out["termination_logit"], y[:, 1]) + F.binary_cross_entropy_with_logits(out["success_logit"], y[:, 2])
        if config.value_discount is not None:
            loss = loss + F.mse_loss(out["value"], y[:, 3])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    heads.eval()
    predicted = heads.predict(val_x)
    reward, truth = predicted["reward"].numpy(), val_y[:, 0].numpy()
    report = {
        "date": time.strftime("%Y-%m-%d"), "embodiment": name, "datasets": [str(d) for d in datasets],
        "val_datasets": [str(d) for d in val_datasets or []], "steps": config.steps,
        "wall_seconds": time.monotonic() - started, "train_frames": len(train_x), "val_frames": len(val_x),
        "train_positives": {"termination": int(positives[0]), "success": int(positives[1])},
        "val_positives": {"termination": int(val_y[:, 1].sum()), "success": int(val_y[:, 2].sum())},
        "reward_mae": float(np.abs(reward - truth).mean()),
        "reward_mae_predict_mean": float(np.abs(train_y[:, 0].mean().item() - truth).mean()),
        "reward_pearson": float(np.corrcoef(reward, truth)[0, 1]) if truth.std() > 0 else float("nan"),
        "reliability": {name: reliability_table(predicted[f"{name}_probability"].numpy(), val_y[:, column].numpy())
                        for column, name in ((1, "termination"), (2, "success"))
                        if f"{name}_probability" in predicted},
        "value_discount": config.value_discount,
        "untrained_heads": [name for name in ("termination", "success") if f"{name}_probability" not in predicted],
    }
    if config.value_discount is not None:
        value, truth = predicted["value"].numpy(), val_y[:, 3].numpy()
        report["value_mae"] = float(np.abs(value - truth).mean())
        report["value_pearson"] = float(np.corrcoef(value, truth)[0, 1]) if truth.std() > 0 else float("nan")
    report["config"] = asdict(config)
    inside = output is None
    output = Path(output) if output is not None else model / "heads" / name
    if inside:
        _split_single_heads(model, pipeline.default_embodiment)
    # Written beside the target and moved into place, so an interrupted run never leaves half-written heads.
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    heads.save_pretrained(tmp)
    (tmp / "metrics.json").write_text(json.dumps(report, indent=2))
    replace_folder(tmp, output)
    if inside:
        write_manifest(model)
    return report


def _split_single_heads(model: Path, default_embodiment: str) -> None:
    """Moves a single ``<model>/heads`` (saved before heads were per embodiment) to ``<model>/heads/<embodiment>``, so
    that training another embodiment's heads keeps it. Each move is a rename; the manifest is rewritten by the
    caller."""
    root = model / "heads"
    if not (root / "config.json").is_file():
        return
    config = json.loads((root / "config.json").read_text())
    target = config.get("embodiment") or default_embodiment
    moved = model / f".heads-{target}.moving"
    shutil.rmtree(moved, ignore_errors=True)
    root.rename(moved)
    root.mkdir()
    moved.rename(root / target)
