"""Start sets: the real context clips an imagined episode starts from when ``reset()`` is given no context.

A start clip is the first ``num_context`` frames of a recorded episode with the actions between them. A trained
pipeline bundles up to :data:`START_CLIPS` per embodiment (``start_frames.safetensors``); an env can take its start
set from any LeRobot dataset of the embodiment instead (``gym.make(..., start_dataset="data/mine")``), and
``worldsim start-set`` rewrites a model's bundled set from datasets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worldsim.constants import OBS_STATE
from worldsim.data.lerobot import LeRobotDataset

#: start clips a trained pipeline bundles per embodiment (``reset()`` without a context draws one)
START_CLIPS = 100


def start_set(dataset: LeRobotDataset, frames: np.ndarray, episodes: np.ndarray, num_context: int,
              count: int = START_CLIPS, tasks: list[str] | None = None) -> dict:
    """Bundled start set: up to ``count`` real context clips of ``num_context`` frames, the first frames of
    ``episodes`` in order (episodes shorter than ``num_context`` are skipped).

    Args:
        tasks: a task-conditioned model's task texts: each clip then records the index of its episode's task among
            them (``len(tasks)``, the null task, for a text not there).

    Returns:
        ``{"frames": (K, num_context, H, W, 3) uint8, "action": (K, num_context - 1, A) float32}``, plus
        ``"state": (K, num_context, S) float32`` (each frame's ``observation.state``) when the dataset records it and
        ``"task": (K,) int64`` with ``tasks``.

    Raises:
        ValueError: no episode has ``num_context`` frames.
    """
    clips, actions, states, task_ids = [], [], [], []
    recorded = dataset.columns.get(OBS_STATE)
    lookup = {text: index for index, text in enumerate(tasks or [])}
    episode_tasks = dataset.episode_tasks
    for episode in episodes:
        if len(clips) == count:
            break
        segment = dataset.episode_slice(int(episode))
        if segment.stop - segment.start < num_context:
            continue
        clips.append(np.asarray(frames[segment.start:segment.start + num_context]))
        actions.append(dataset.action[segment.start:segment.start + num_context - 1])
        if recorded is not None:
            states.append(recorded[segment.start:segment.start + num_context])
        task_ids.append(lookup.get(episode_tasks[int(episode)], len(lookup)))
    if not clips:
        raise ValueError(f"{dataset.root}: no episode has the {num_context} frames a start clip needs")
    out = {"frames": torch.from_numpy(np.stack(clips)), "action": torch.from_numpy(np.stack(actions).astype(np.float32))}
    if recorded is not None:
        out["state"] = torch.from_numpy(np.stack(states).astype(np.float32))
    if tasks is not None:
        out["task"] = torch.tensor(task_ids, dtype=torch.long)
    return out


def dataset_start_set(root: str | Path | LeRobotDataset, image_size, num_context: int, action_dim: int,
                      count: int = START_CLIPS, progress: bool = False, video_keys: list[str] | None = None,
                      tasks: list[str] | None = None) -> dict:
    """A start set from a LeRobot dataset: the first ``num_context`` frames of its first ``count`` episodes.

    Args:
        root: dataset folder (or a loaded dataset).
        image_size: the model's frame size, an int or ``(height, width)`` (frames are resized through the
            decoded-frame cache).
        num_context: frames per clip (>= 1).
        action_dim: the embodiment's flat action size A, checked against the dataset's.
        count: clips wanted (fewer when the dataset has fewer long-enough episodes).
        video_keys: the model's cameras, side by side in its frames (None: the dataset's).
        tasks: a task-conditioned model's task texts (see :func:`start_set`).

    Returns:
        ``{"frames": (K, num_context, H, W, 3) uint8, "action": (K, num_context - 1, A) float32}`` and, as
        :func:`start_set` gives them, ``"state"`` and ``"task"``.

    Raises:
        ValueError: ``num_context < 1`` or ``count < 1``, actions of another size than ``action_dim``, or no
            episode with ``num_context`` frames.
    """
    from worldsim.data.frame_cache import load_frame_cache

    if num_context < 1 or count < 1:
        raise ValueError(f"need num_context >= 1 and count >= 1, got {num_context} and {count}")
    dataset = root if isinstance(root, LeRobotDataset) else LeRobotDataset(root)
    if dataset.action.shape[1] != action_dim:
        raise ValueError(f"{dataset.root} has actions of size {dataset.action.shape[1]}; the embodiment's are of size "
                         f"{action_dim}")
    frames = load_frame_cache(dataset, image_size, progress=progress, video_keys=video_keys)
    return start_set(dataset, frames, np.arange(dataset.num_episodes), num_context, count, tasks)


def write_start_set(model: str | Path, datasets: list[str | Path], embodiment: str | None = None,
                    num_clips: int = START_CLIPS, num_context: int = 4, progress: bool = True) -> dict:
    """Rewrites a model folder's bundled start set of one embodiment from datasets (``worldsim start-set``).

    Clips are the first ``num_context`` frames of the datasets' episodes, in order, up to ``num_clips`` shared
    evenly among the datasets (a dataset with too few episodes leaves its share to the next ones); the other
    embodiments' clips are kept. ``start_frames.safetensors`` is written beside itself and renamed into place, then
    the folder's manifest is rewritten.

    Returns:
        ``{"embodiment", "clips", "num_context", "datasets"}``.

    Raises:
        ValueError / FileNotFoundError: the model folder does not load, or a dataset does not fit the embodiment
            (:func:`dataset_start_set`); the folder is unchanged then.
    """
    from safetensors.torch import save_file

    from worldsim.pipelines.world_model import WorldModelPipeline
    from worldsim.registry import write_manifest

    model = Path(model)
    pipeline = WorldModelPipeline.from_pretrained(model)
    spec = pipeline.embodiment(embodiment)
    parts = []
    tasks = pipeline.transformer.task_names or None
    for number, root in enumerate(datasets):
        # each dataset gets its share of the clips (one per task, say); a dataset with fewer leaves the rest to later ones
        have = sum(len(part["frames"]) for part in parts)
        wanted = num_clips if number == len(datasets) - 1 else (number + 1) * num_clips // len(datasets)
        if wanted <= have:
            continue
        parts.append(dataset_start_set(root, pipeline.image_size, num_context, spec.action_dim, wanted - have,
                                       progress, pipeline.composed_cameras, tasks))
    joined = {key: torch.cat([part[key] for part in parts]) for key in parts[0] if all(key in part for part in parts)}
    pipeline.set_start_set(joined["frames"], joined["action"], spec.name, joined.get("state"), joined.get("task"))
    target = model / "start_frames.safetensors"
    staged = target.with_name(target.name + ".partial")
    save_file({key: torch.as_tensor(value).contiguous() for key, value in pipeline.start_frames.items()}, staged)
    staged.replace(target)
    write_manifest(model)
    return {"embodiment": spec.name, "clips": len(joined["frames"]), "num_context": num_context,
            "datasets": [str(root) for root in datasets]}
