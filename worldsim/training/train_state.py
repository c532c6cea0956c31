"""Trains a state predictor (:class:`~worldsim.models.state.StatePredictor`) of a pipeline on real episodes.

Each frame ``t`` of an episode gives one training pair: (the latent of frame ``t``, the state of frame ``t - 1``)
-> the state of frame ``t``; the first frame of an episode is its own "previous" frame. Latents come from the
pipeline's own autoencoder (cached per dataset, as for the outcome heads), so the predictor reads imagined frames the
way it reads real ones. Gaussian noise is added to the previous state in training (``previous_state_noise``,
normalised units), so that the predictor stays stable when fed its own predictions in an imagined rollout.
Dimensions that never change within a training episode (a goal) are copied from the previous state, not predicted
(:func:`carried_dims`): noise on a dimension the frame does not show can only be averaged away, which would make it
drift towards its mean over a long rollout.

With ``action_input`` the predictor also reads the action that produced each frame (the dataset's ``action`` of the
previous frame; zeros for an episode's first frame, whose target is its own state), and with ``latent_noise`` the
latents are noised in training, each sample at a level drawn uniformly up to that standard deviation, so that
the predictor learns to lean on the previous state and the action where a frame is unclear. With
``imagined_fraction`` a share of every batch comes from frames the model itself imagined (:func:`imagined_pairs`):
the predictor then learns how imagined frames, which blur and lose small objects over a long rollout, relate to the
real states, which is what it reads in an imagined env. The imagined latents are cached under ``<dataset>/cache``,
named by a digest of the model's weights, the sampler and the windows, so a second run with other predictor settings
(steps, noise) does not imagine them again.

The report is measured on held-out episodes (``val_datasets``, else the last ``val_episodes`` episodes of the first
dataset): the mean absolute error per state dimension against the baseline "copy the previous state", and a
closed-loop check: the predictor rolled over each whole held-out episode from its first real state, fed its own
predictions (on the real frames' latents), against the baseline "copy the first state".

    worldsim train-state --model <model folder> --dataset <recorded episodes with observation.state> [--embodiment E]

A pipeline carries one predictor per embodiment (``<model>/state/<embodiment>/``); training one keeps the others'.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from worldsim.constants import OBS_STATE
from worldsim.data.frame_cache import load_frame_cache
from worldsim.data.lerobot import LeRobotDataset
from worldsim.models.state import MIN_STATE_STD, StatePredictor
from worldsim.registry import write_manifest
from worldsim.training.config import StateConfig, config_with
from worldsim.utils.digest import modules_sha256, update_digest
from worldsim.utils.shapes import size_config

IMAGINE_BATCH = 16  # windows imagined together (the generator's draws, so the latents, depend on it)


def dataset_states(dataset: LeRobotDataset) -> np.ndarray:
    """Every frame's ``observation.state``.

    Returns:
        `(N, S)` float32, row ``i`` = dataset frame ``i``.

    Raises:
        ValueError: the dataset has no ``observation.state`` column, or it holds NaN or inf (the message names the
            first bad frame).
    """
    if OBS_STATE not in dataset.columns:
        raise ValueError(f"{dataset.root}: no {OBS_STATE!r} column; a state predictor needs the recorded state")
    states = np.asarray(dataset.columns[OBS_STATE], dtype=np.float32)
    states = states.reshape(len(states), -1)
    bad = np.flatnonzero(~np.isfinite(states).all(axis=1))
    if len(bad):
        raise ValueError(f"{dataset.root}: {OBS_STATE} of frame {int(bad[0])} is not finite: {states[bad[0]].tolist()}")
    return states


def state_names(dataset: LeRobotDataset, state_dim: int) -> list[str] | None:
    """The names of the state dimensions from ``meta/info.json`` (LeRobot's ``names``: a list, or a dict holding one
    list), or None when the dataset names none or not ``state_dim`` of them."""
    names = (dataset.info.get("features", {}).get(OBS_STATE) or {}).get("names")
    if isinstance(names, dict) and len(names) == 1:
        names = next(iter(names.values()))
    if isinstance(names, list) and len(names) == state_dim and all(isinstance(name, str) for name in names):
        return list(names)
    return None


def previous_rows(dataset: LeRobotDataset) -> np.ndarray:
    """The row of each frame's previous frame: ``i - 1``, or ``i`` itself for the first frame of an episode.

    Returns:
        `(N,)` int64.

    Raises:
        ValueError: rows are not ordered by episode and frame.
    """
    rows = np.arange(len(dataset.frame_index))
    previous = np.where(dataset.frame_index > 0, rows - 1, rows)
    if np.any(previous < 0) or not np.all(dataset.episode_index[previous] == dataset.episode_index):
        raise ValueError(f"{dataset.root}: rows are not ordered by episode and frame")
    return previous


def producing_actions(dataset: LeRobotDataset, previous: np.ndarray) -> np.ndarray:
    """The action that produced each frame: the ``action`` of the previous frame, zeros for an episode's first frame.

    Args:
        dataset: the episodes (their ``action`` column, env units).
        previous: `(N,)` int, each frame's previous row within ``dataset`` (:func:`previous_rows`).

    Returns:
        `(N, A)` float32, env units.

    Raises:
        ValueError: the dataset's actions are not finite (the message names the first bad frame).
    """
    actions = np.asarray(dataset.action, dtype=np.float32).reshape(len(previous), -1)
    bad = np.flatnonzero(~np.isfinite(actions).all(axis=1))
    if len(bad):
        raise ValueError(f"{dataset.root}: action of frame {int(bad[0])} is not finite: {actions[bad[0]].tolist()}")
    produced = actions[previous].copy()
    produced[previous == np.arange(len(previous))] = 0.0
    return produced


def imagined_pairs(pipeline, dataset: LeRobotDataset, states: np.ndarray, horizon: int, num_context: int,
                   rng: np.random.Generator, embodiment: str | None = None, seed: int = 0,
                   progress: bool = True, episodes=None, cache_dir: str | Path | None = None) -> dict:
    """Training pairs on imagined frames: one window per episode of at least ``num_context + horizon`` frames (at a
    random start), imagined open-loop from its first ``num_context`` real frames under its recorded actions
    (:func:`~worldsim.evaluation.fidelity.imagine_windows`, the model's default sampler); each imagined frame is
    paired with the real states around it.

    Args:
        pipeline: the :class:`~worldsim.pipelines.WorldModelPipeline`.
        dataset: recorded episodes of the embodiment (frames, finite ``action`` in env units).
        states: `(N, S)` float32, the dataset's every frame's state (:func:`dataset_states`).
        horizon, num_context: imagined and real frames per window.
        rng: draws the window starts.
        embodiment: whose actions the dataset holds (None: the model's default).
        seed: the imagination's generator seed.
        progress: show progress bars.
        episodes: the episode indices to cut windows from (None: all).
        cache_dir: where to keep the imagined latents (None: nowhere). The file is named by a SHA-256 of everything
            they depend on (:func:`imagination_key`): the transformer's and autoencoder's weights, the scheduler and
            default sampler, the windows' frames, actions and task texts, ``num_context``, ``seed`` and the
            embodiment, so a later call with the same inputs reads them back instead of imagining them again (about
            16 minutes for 700 Meta-World windows of 44 frames on 2 CPU cores) and any change imagines afresh.

    Returns:
        ``{"latents": (M, C, h, w) float16, "previous": (M, S) float32 the real state of the frame before,
        "target": (M, S) float32 the real state of the frame, "action": (M, A) float32 the action that produced
        it (env units), "cached": bool, whether the latents were read from ``cache_dir``}``, M = windows x
        ``horizon``; M = 0 when no episode is long enough.

    Raises:
        ValueError: what :func:`~worldsim.evaluation.fidelity.imagine_windows` refuses (an episode task text a
            task-conditioned model does not know, actions of the wrong width).
    """
    from worldsim.evaluation.fidelity import Windows, imagine_windows

    length = num_context + horizon
    frames = load_frame_cache(dataset, pipeline.image_size, progress=progress, video_keys=pipeline.composed_cameras)
    actions = np.asarray(dataset.action, dtype=np.float32).reshape(len(states), -1)
    starts = []
    for episode in range(dataset.num_episodes) if episodes is None else episodes:
        segment = dataset.episode_slice(int(episode))
        room = segment.stop - segment.start - length
        if room >= 0:
            starts.append((int(episode), segment.start + int(rng.integers(0, room + 1))))
    if not starts:
        size = (pipeline.transformer.config.in_channels, *pipeline.transformer.latent_size)
        return {"latents": np.empty((0, *size), np.float16), "previous": np.empty((0, states.shape[1]), np.float32),
                "target": np.empty((0, states.shape[1]), np.float32),
                "action": np.empty((0, actions.shape[1]), np.float32), "cached": False}
    rows = np.array([row for _, row in starts])
    episodes = np.array([episode for episode, _ in starts])
    windows = Windows(np.stack([np.asarray(frames[row:row + length]) for row in rows]),
                      np.stack([actions[row:row + length - 1] for row in rows]), episodes,
                      rows - np.array([dataset.episode_slice(int(e)).start for e in episodes]),
                      [dataset.episode_tasks[int(e)] for e in episodes])
    path = None if cache_dir is None else \
        Path(cache_dir) / f"imagined_{imagination_key(pipeline, windows, num_context, seed, embodiment)[:16]}.npy"
    cached = path is not None and path.is_file()
    if cached:
        latents = np.load(path)  # a plain array: allow_pickle stays off
    else:
        _, latents = imagine_windows(pipeline, windows, num_context, batch_size=IMAGINE_BATCH, seed=seed,
                                     progress=progress, embodiment=embodiment, return_latents=True)
        latents = latents.astype(np.float16)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial.npy")
            np.save(partial, latents)
            os.replace(partial, path)  # whole or absent
    if latents.shape[:2] != (len(rows), horizon):
        raise ValueError(f"{path}: imagined latents of shape {latents.shape}, expected {len(rows)} windows of "
                         f"{horizon} frames; delete the file to imagine them again")
    frame_rows = (rows[:, None] + num_context + np.arange(horizon)[None]).reshape(-1)  # each imagined frame's row
    return {"latents": latents.reshape(-1, *latents.shape[2:]), "previous": states[frame_rows - 1],
            "target": states[frame_rows], "action": actions[frame_rows - 1], "cached": cached}


def imagination_key(pipeline, windows, num_context: int, seed: int, embodiment: str | None) -> str:
    """SHA-256 (hex) of everything that :func:`imagined_pairs`' latents depend on: the transformer's and
    autoencoder's weights (:func:`~worldsim.utils.digest.modules_sha256`), the scheduler's config, the model's
    default sampler, the batch size, the windows' frames, actions and task texts, ``num_context``, ``seed`` and
    ``embodiment``.

    Args:
        pipeline: the :class:`~worldsim.pipelines.WorldModelPipeline`.
        windows: a :class:`~worldsim.evaluation.fidelity.Windows` (frames `(W, L, H, W', 3)` uint8, actions
            `(W, L - 1, A)` float32, task texts).
        num_context, seed, embodiment: as :func:`imagined_pairs` passes them to
            :func:`~worldsim.evaluation.fidelity.imagine_windows`.

    Returns:
        64 hexadecimal characters (:func:`imagined_pairs` names its file by the first 16).
    """
    digest = hashlib.sha256(b"worldsim imagined_pairs 1")
    digest.update(modules_sha256(pipeline.transformer, pipeline.autoencoder).encode())
    update_digest(digest, {"scheduler": dict(pipeline.scheduler.config), "sampler": asdict(pipeline.sampler_settings()),
                           "batch_size": IMAGINE_BATCH, "num_context": int(num_context), "seed": int(seed),
                           "embodiment": embodiment, "frames": np.asarray(windows.frames),
                           "action": np.asarray(windows.action, np.float32),
                           "tasks": [str(text) for text in windows.tasks]})
    return digest.hexdigest()


def carried_dims(states: np.ndarray, previous: np.ndarray, rows: np.ndarray) -> list[int]:
    """The state dimensions that never change within an episode of the given rows (a goal, an empty object slot):
    the predictor copies them instead of predicting them.

    Args:
        states: `(N, S)` float, every frame's state.
        previous: `(N,)` int, each frame's previous row (:func:`previous_rows`).
        rows: the rows to look at (the training frames).

    Returns:
        The indices d with ``|state[t, d] - state[t - 1, d]| <= 1e-6 * (1 + max |state[:, d]|)`` for every row t.
    """
    if not len(rows):
        return []
    change = np.abs(states[rows] - states[previous[rows]]).max(axis=0)
    tolerance = 1e-6 * (1.0 + np.abs(states[rows]).max(axis=0))
    return [int(d) for d in np.flatnonzero(change <= tolerance)]


def dataset_latents(dataset: LeRobotDataset, pipeline, model: Path, progress: bool = True) -> np.ndarray:
    """Every frame of ``dataset`` as the pipeline sees it (its frame size; a multi-camera model's views side by side,
    :attr:`~worldsim.pipelines.WorldModelPipeline.composed_cameras`), encoded by its autoencoder; both the frames and
    the latents are cached under ``<dataset>/cache`` (as for the outcome heads).

    Args:
        pipeline: the :class:`~worldsim.pipelines.WorldModelPipeline` loaded from ``model``.
        model: its folder (the latent cache is keyed by its autoencoder's weights).

    Returns:
        `(N, C, h, w)` float16 (a memory map), row ``i`` = dataset frame ``i``.
    """
    from worldsim.training.train_world_model import load_latent_cache

    cameras = pipeline.composed_cameras  # a multi-camera model's views, side by side; None: the one camera
    frames = load_frame_cache(dataset, pipeline.image_size, progress=progress, video_keys=cameras)
    return load_latent_cache(dataset, frames, pipeline.autoencoder, Path(model) / "autoencoder",
                             dataset.root / "cache", progress=progress, camera_keys=cameras)


@torch.no_grad()
def rollout_states(predictor: StatePredictor, latents: list, first_states: np.ndarray,
                   batch_size: int = 4096, actions: list | None = None) -> list[np.ndarray]:
    """Closed loop: each episode's states predicted frame by frame from its first state, each prediction fed back
    as the next frame's previous state (what an imagined rollout does). Episodes advance together, one frame per
    step.

    Args:
        latents: one `(T_e, C, h, w)` float array or tensor per episode (frame 0 first; frame 0 is not read).
        first_states: `(E, S)` float, each episode's real first state, env units.
        batch_size: the most episodes in one forward pass.
        actions: for a predictor that reads actions, one `(T_e, A)` float array per episode, row ``t`` the action
            that produced frame ``t`` (env units; row 0 is not read); else None.

    Returns:
        One `(T_e, S)` float32 array per episode, env units: row 0 is the first state, row ``t`` the prediction for
        frame ``t``.

    Raises:
        ValueError: ``first_states`` is not `(E, S)` for the E episodes, a latent has the wrong shape, or actions are
            missing for a predictor that reads them (or given to one that does not).
    """
    if (actions is None) != (predictor.action_dim == 0):
        raise ValueError(f"this predictor reads {predictor.action_dim} action dimensions; give actions exactly when "
                         f"it reads them")
    first_states = np.asarray(first_states, dtype=np.float32)
    if first_states.shape != (len(latents), predictor.config.state_dim):
        raise ValueError(f"first_states must be ({len(latents)}, {predictor.config.state_dim}), got "
                         f"{first_states.shape}")
    lengths = np.array([len(episode) for episode in latents])
    out = [np.empty((length, predictor.config.state_dim), np.float32) for length in lengths]
    current = torch.tensor(first_states, device=predictor.shift.device)  # a copy: the caller's array is kept
    for episode, states in enumerate(out):
        states[0] = first_states[episode]
    for t in range(1, int(lengths.max(initial=0))):
        active = np.flatnonzero(lengths > t)
        for start in range(0, len(active), batch_size):
            chunk = active[start:start + batch_size]
            frame = torch.stack([torch.as_tensor(np.asarray(latents[e][t])) for e in chunk]).float()
            action = None if actions is None else np.stack([np.asarray(actions[e][t], np.float32) for e in chunk])
            predicted = predictor.predict(frame.to(current.device), current[torch.from_numpy(chunk)], action)
            current[torch.from_numpy(chunk)] = predicted
            for row, e in zip(predicted.cpu().numpy(), chunk):
                out[e][t] = row
    return out


def _mae(difference: np.ndarray, scale: np.ndarray) -> dict:
    """Overall and per-dimension mean absolute error of `(M, S)` differences, plus the overall error in units of
    each dimension's training spread (comparable across dimensions of different units)."""
    per_dim = np.abs(difference).mean(axis=0) if len(difference) else np.full(difference.shape[1], np.nan)
    return {"mae": float(per_dim.mean()), "mae_per_dim": [float(v) for v in per_dim],
            "mae_normalized": float((per_dim / scale).mean())}


def train_state_predictor(model: str | Path, datasets: list[str | Path], config: StateConfig | None = None,
                          val_datasets: list[str | Path] | None = None, embodiment: str | None = None,
                          output: str | Path | None = None, progress: bool = True, **overrides) -> dict:
    """Trains a state predictor for the pipeline at ``model`` and writes it to ``output`` (default
    ``model/state/<embodiment>``).

    Args:
        model: pipeline folder (its autoencoder encodes the frames).
        datasets: LeRobot dataset folders with ``observation.state`` (all of one width S), showing ``embodiment``.
        config: the settings (:class:`~worldsim.training.config.StateConfig`: AdamW steps, batch size, learning rate
            and seed; the predictor's ``hidden_dim``; ``previous_state_noise``, normalised units; ``action_input``,
            ``latent_noise``, ``imagined_fraction`` / ``imagined_horizon`` / ``imagined_context`` (see the module
            docstring); ``val_episodes`` last episodes of the first dataset held out when no ``val_datasets``).
            None: the defaults.
        val_datasets: datasets used only for the report (all their episodes); then nothing is held out of
            ``datasets``.
        embodiment: the embodiment the datasets show, one of the model's (None: its default); the predictor is
            used only for it.
        output: where to write the predictor; default ``model/state/<embodiment>`` (then the model's manifest is
            rewritten, other embodiments' predictors kept). Written atomically (a staged folder moved into place).
        progress: show progress bars.
        **overrides: :class:`StateConfig` fields replacing ``config``'s (``steps=60, batch_size=32``).

    Returns:
        The report (also written as ``metrics.json`` beside the weights), env units unless named ``_normalized``
        (there: in units of each dimension's training standard deviation, averaged over dimensions):
        ``held_out`` (teacher-forced on held-out frames with a previous frame: ``mae``, ``mae_per_dim``,
        ``mae_normalized`` of the predictor and ``copy_previous`` of the baseline that repeats the previous state),
        ``closed_loop`` (over whole held-out episodes fed the predictor's own states: ``final`` at each episode's
        last frame and ``mean`` over its frames 1.., each against ``copy_first``, the baseline that repeats the
        first state), the frame and episode counts (``imagined_frames``: the imagined training frames, with
        ``imagined_seconds`` the wall time spent imagining them or reading them back, and
        ``imagined_cached_datasets``: how many datasets' imagined frames came from ``<dataset>/cache``,
        :func:`imagined_pairs`), ``state_dim``, ``state_names``, ``carried_dims`` (the dimensions that never changed
        within a training episode, copied rather than predicted, :func:`carried_dims`) and the resolved ``config``.

    Raises:
        TypeError: an override that is not a :class:`StateConfig` field.
        ValueError: an impossible setting (naming the field), no datasets, an unknown embodiment, a dataset without
            ``observation.state`` or of another state width, actions that are not finite or not as wide as the
            embodiment's (read with ``action_input`` or ``imagined_fraction``), too few episodes to hold out, or an
            ``imagined_fraction`` with no training episode of ``imagined_context + imagined_horizon`` frames.
    """
    from worldsim.pipelines.loading import save_state_predictor, state_folder
    from worldsim.pipelines.world_model import WorldModelPipeline

    config = config_with(StateConfig, config, overrides, "train_state_predictor")
    if not datasets:
        raise ValueError("give at least one dataset")
    model = Path(model)
    pipeline = WorldModelPipeline.from_pretrained(model)
    pipeline.require_per_frame("state-predictor training")
    name = pipeline.embodiment(embodiment).name
    target = Path(output) if output is not None else state_folder(model, name)  # refuses a name unfit for a folder
    torch.manual_seed(config.seed)

    latents, states, previous, held, episodes = [], [], [], [], []  # episodes: (start, stop) held-out row ranges
    produced = []  # the action that produced each frame (action_input only)
    imagined, imagined_seconds = [], 0.0  # imagined_pairs of each training dataset (imagined_fraction > 0)
    imagined_cached = 0  # how many of them were read from the dataset's cache
    rng = np.random.default_rng(config.seed)
    action_width = pipeline.embodiment(name).action_dim
    offset, names = 0, None
    sources = [(root, False) for root in datasets] + [(root, True) for root in (val_datasets or [])]
    for number, (root, validation_only) in enumerate(sources):
        dataset = LeRobotDataset(root)
        state = dataset_states(dataset)
        if states and state.shape[1] != states[0].shape[1]:
            raise ValueError(f"{root}: {OBS_STATE} has {state.shape[1]} dimensions, {sources[0][0]} has "
                             f"{states[0].shape[1]}; one predictor serves one state layout")
        names = names or state_names(dataset, state.shape[1])
        held_episodes = np.arange(dataset.num_episodes) if validation_only else np.array([], np.int64)
        if number == 0 and not val_datasets:
            if dataset.num_episodes <= config.val_episodes:
                raise ValueError(f"{root} has {dataset.num_episodes} episodes; cannot hold out {config.val_episodes}")
            held_episodes = np.arange(dataset.num_episodes - config.val_episodes, dataset.num_episodes)
        if config.action_input or config.imagined_fraction:
            actions = producing_actions(dataset, previous_rows(dataset))  # checks the actions are finite
            if actions.shape[1] != action_width:
                raise ValueError(f"{root}: action has {actions.shape[1]} dimensions, the model's {name!r} actions "
                                 f"have {action_width}")
            if config.action_input:
                produced.append(actions)
        latents.append(np.asarray(dataset_latents(dataset, pipeline, model, progress)))
        if config.imagined_fraction and not validation_only:
            started = time.monotonic()
            pairs = imagined_pairs(pipeline, dataset, state, config.imagined_horizon, config.imagined_context, rng,
                                   name, config.seed, progress,
                                   np.setdiff1d(np.arange(dataset.num_episodes), held_episodes),
                                   cache_dir=dataset.root / "cache")
            imagined_cached += int(pairs.pop("cached"))
            imagined.append(pairs)
            imagined_seconds += time.monotonic() - started
        states.append(state)
        previous.append(previous_rows(dataset) + offset)
        held.append(np.isin(dataset.episode_index, held_episodes))
        episodes += [(offset + int(dataset.episode_from[e]), offset + int(dataset.episode_to[e]))
                     for e in held_episodes]
        offset += len(state)
    latents = torch.from_numpy(np.concatenate(latents))  # float16: converted per batch
    states, previous, held = np.concatenate(states), np.concatenate(previous), np.concatenate(held)
    produced = np.concatenate(produced) if config.action_input else None
    train_rows = np.flatnonzero(~held)
    if not len(train_rows):
        raise ValueError("no training frames: every frame is held out")
    if config.imagined_fraction:
        imagined = {key: np.concatenate([pairs[key] for pairs in imagined if len(pairs["target"])])
                    if any(len(pairs["target"]) for pairs in imagined) else None for key in imagined[0]}
        if imagined["target"] is None:
            raise ValueError(f"imagined_fraction {config.imagined_fraction} needs training episodes of at least "
                             f"{config.imagined_context + config.imagined_horizon} frames (imagined_context + "
                             f"imagined_horizon); none is that long")
    action_stats = {}
    if produced is not None:
        moved = train_rows[previous[train_rows] != train_rows]  # first frames' zero actions are not statistics
        train_actions = produced[moved if len(moved) else train_rows].astype(np.float64)
        action_stats = {"action_dim": int(produced.shape[1]), "action_mean": train_actions.mean(0).tolist(),
                        "action_std": np.maximum(train_actions.std(0), MIN_STATE_STD).tolist()}

    train_states = states[train_rows].astype(np.float64)
    carried = carried_dims(states, previous, train_rows)
    predictor = StatePredictor(in_channels=latents.shape[1], sample_size=size_config(tuple(latents.shape[-2:])),
                               state_dim=states.shape[1], hidden_dim=config.hidden_dim,
                               state_mean=train_states.mean(0).tolist(),
                               state_std=np.maximum(train_states.std(0), MIN_STATE_STD).tolist(),
                               embodiment=name, state_names=names, carried_dims=carried,
                               state_min=train_states.min(0).tolist(), state_max=train_states.max(0).tolist(),
                               **action_stats)
    normalized = predictor.normalize(torch.from_numpy(states))
    normalized_action = None if produced is None else predictor.normalize_action(torch.from_numpy(produced))
    num_imagined = round(config.batch_size * config.imagined_fraction) if config.imagined_fraction else 0
    if num_imagined:
        imagined_latents = torch.from_numpy(imagined["latents"])
        imagined_target = predictor.normalize(torch.from_numpy(imagined["target"]))
        imagined_previous = predictor.normalize(torch.from_numpy(imagined["previous"]))
        imagined_action = predictor.normalize_action(torch.from_numpy(imagined["action"])) if produced is not None \
            else None
    optimizer = torch.optim.AdamW(predictor.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    train_index, previous_index = torch.from_numpy(train_rows), torch.from_numpy(previous)
    moving = predictor.moving  # no noise on carried dimensions: they are copied, never predicted
    started = time.monotonic()
    predictor.train()
    for _ in tqdm(range(config.steps), desc="train state predictor", disable=not progress):
        index = train_index[torch.randint(len(train_index), (config.batch_size - num_imagined,), generator=generator)]
        before, frame, truth = normalized[previous_index[index]], latents[index].float(), normalized[index]
        action = None if normalized_action is None else normalized_action[index]
        if num_imagined:
            pick = torch.randint(len(imagined_target), (num_imagined,), generator=generator)
            before = torch.cat([before, imagined_previous[pick]])
            frame = torch.cat([frame, imagined_latents[pick].float()])
            truth = torch.cat([truth, imagined_target[pick]])
            action = None if action is None else torch.cat([action, imagined_action[pick]])
        before = before + config.previous_state_noise * torch.randn(before.shape, generator=generator) * moving
        if config.latent_noise:  # each sample at its own level, up to latent_noise
            level = config.latent_noise * torch.rand(len(frame), 1, 1, 1, generator=generator)
            frame = frame + level * torch.randn(frame.shape, generator=generator)
        loss = F.mse_loss(predictor(frame, before, action), truth)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    predictor.eval()
    wall_seconds = time.monotonic() - started

    scale = predictor.scale.numpy().astype(np.float64)
    rows = np.flatnonzero(held & (previous != np.arange(len(states))))  # held-out frames with a previous frame
    predicted = np.concatenate([predictor.predict(latents[chunk].float(), states[previous[chunk]],
                                                  None if produced is None else produced[chunk]).numpy()
                                for chunk in np.array_split(rows, max(1, len(rows) // 4096 + 1))]) \
        if len(rows) else np.empty((0, states.shape[1]), np.float32)
    held_out = _mae(predicted - states[rows], scale)
    held_out["copy_previous"] = _mae(states[previous[rows]] - states[rows], scale)

    long_enough = [(start, stop) for start, stop in episodes if stop - start >= 2]
    rolled = rollout_states(predictor, [latents[start:stop] for start, stop in long_enough],
                            np.array([states[start] for start, _ in long_enough]).reshape(-1, states.shape[1]),
                            actions=None if produced is None else [produced[start:stop] for start, stop in long_enough])
    truth = [states[start:stop] for start, stop in long_enough]
    final = np.array([r[-1] - s[-1] for r, s in zip(rolled, truth)]).reshape(-1, states.shape[1])
    final_copy = np.array([s[0] - s[-1] for s in truth]).reshape(-1, states.shape[1])
    every = np.concatenate([r[1:] - s[1:] for r, s in zip(rolled, truth)]) if truth else final
    every_copy = np.concatenate([s[:1] - s[1:] for s in truth]) if truth else final
    closed_loop = {"episodes": len(long_enough),
                   "mean_length": float(np.mean([stop - start for start, stop in long_enough])) if long_enough else 0.0,
                   "final": _mae(final, scale), "mean": _mae(every, scale),
                   "copy_first": {"final": _mae(final_copy, scale), "mean": _mae(every_copy, scale)}}
    report = {
        "date": time.strftime("%Y-%m-%d"), "embodiment": name, "datasets": [str(d) for d in datasets],
        "val_datasets": [str(d) for d in val_datasets or []], "steps": config.steps, "wall_seconds": wall_seconds,
        "train_frames": len(train_rows), "val_frames": len(rows), "val_episodes": len(episodes),
        "imagined_frames": 0 if not config.imagined_fraction else len(imagined["target"]),
        "imagined_seconds": imagined_seconds, "imagined_cached_datasets": imagined_cached,
        "state_dim": int(states.shape[1]), "state_names": names, "carried_dims": carried,
        "held_out": held_out, "closed_loop": closed_loop, "config": asdict(config),
    }
    save_state_predictor(predictor, target, metrics=report)
    if output is None:
        write_manifest(model)
    return report
