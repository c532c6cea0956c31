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

from worldsim.data.lerobot import LeRobotDataset

#: start clips a trained pipeline bundles per embodiment (``reset()`` without a context draws one)
START_CLIPS = 100


def start_set(dataset: LeRobotDataset, frames: np.ndarray, episodes: np.ndarray, num_context: int,
              count: int = START_CLIPS) -> dict:
    """Bundled start set: up to ``count`` real context clips of ``num_context`` frames, the first frames of
    ``episodes`` in order (episodes shorter than ``num_context`` are skipped).

    Returns:
        ``{"frames": (K, num_context, H, W, 3) uint8, "action": (K, num_context - 1, A) float32}``.

    Raises:
        ValueError: no episode has ``num_context`` frames.
    """
    clips, actions = [], []
    for episode in episodes:
        if len(clips) == count:
            break
        segment = dataset.episode_slice(int(episode))
        if segment.stop - segment.start < num_context:
            continue
        clips.append(np.asarray(frames[segment.start:segment.start + num_context]))
        actions.append(dataset.action[segment.start:segment.start + num_context - 1])
    if not clips:
        raise ValueError(f"{dataset.root}: no episode has the {num_context} frames a start clip needs")
    return {"frames": torch.from_numpy(np.stack(clips)), "action": torch.from_numpy(np.stack(actions).astype(np.float32))}


def dataset_start_set(root: str | Path | LeRobotDataset, image_size: int, num_context: int, action_dim: int,
                      count: int = START_CLIPS, progress: bool = False) -> dict:
    """A start set from a LeRobot dataset: the first ``num_context`` frames of its first ``count`` episodes.

    Args:
        root: dataset folder (or a loaded dataset).
        image_size: the model's frame size (frames are resized through the decoded-frame cache).
        num_context: frames per clip (>= 1).
        action_dim: the embodiment's flat action size A, checked against the dataset's.
        count: clips wanted (fewer when the dataset has fewer long-enough episodes).

    Returns:
        ``{"frames": (K, num_context, S, S, 3) uint8, "action": (K, num_context - 1, A) float32}``.

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
    frames = load_frame_cache(dataset, image_size, progress=progress)
    return start_set(dataset, frames, np.arange(dataset.num_episodes), num_context, count)


def write_start_set(model: str | Path, datasets: list[str | Path], embodiment: str | None = None,
                    num_clips: int = START_CLIPS, num_context: int = 4, progress: bool = True) -> dict:
    """Rewrites a model folder's bundled start set of one embodiment from datasets (``worldsim start-set``).

    Clips are the first ``num_context`` frames of the datasets' episodes, in order, up to ``num_clips``; the other
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
    frames, actions = [], []
    for root in datasets:
        if sum(len(f) for f in frames) >= num_clips:
            break
        start = dataset_start_set(root, pipeline.image_size, num_context, spec.action_dim,
                                  num_clips - sum(len(f) for f in frames), progress)
        frames.append(start["frames"])
        actions.append(start["action"])
    pipeline.set_start_set(torch.cat(frames), torch.cat(actions), spec.name)
    target = model / "start_frames.safetensors"
    staged = target.with_name(target.name + ".partial")
    save_file({key: torch.as_tensor(value).contiguous() for key, value in pipeline.start_frames.items()}, staged)
    staged.replace(target)
    write_manifest(model)
    return {"embodiment": spec.name, "clips": int(sum(len(f) for f in frames)), "num_context": num_context,
            "datasets": [str(root) for root in datasets]}
