"""Action-sensitivity check: does the model imagine *different* futures for different actions, each the right one?

Protocol (per embodiment):

1. Reset the real env with a seed and play ``context`` steps of its scripted or random policy: the shared context.
2. Draw ``branches`` action sequences of ``horizon`` steps and play each from that same state in the real env
   (deterministic replay of seed + context actions), recording the real future of each branch.
3. Imagine every branch with the world model from the same context frames.
4. Locate the controlled entity in every frame (PushT: the agent disc; Breakout: the paddle; MiniGrid: the agent
   triangle) and compare trajectories:

   * *following*: imagined branch k is matched to the real branch whose entity trajectory is closest; it counts as
     correct when that distance is within ``tolerance`` of its distance to real branch k (branches whose real
     futures coincide, e.g. Breakout's NOOP and FIRE with the ball in play, are interchangeable);
   * *spread*: mean pairwise distance between the imagined branches' trajectories, next to the real branches'.

A model that ignores its actions imagines the same future for every branch, so it is matched correctly only at
chance level (about 1 / branches) and its spread is near zero: the check fails. The check passes when the
following accuracy is at least ``min_accuracy`` (default 0.6; chance is 0.25 with 4 branches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from worldsim.data.collect import make_recording_env, _pixels
from worldsim.data.frame_cache import resize_frames
from worldsim.data.policies import make_policy
from worldsim.data.spaces import flatten_action, space_from_json, space_to_json
from worldsim.evaluation.pusht import PUSHT_WORKSPACE, locate_agent


def _redness(frames: np.ndarray) -> np.ndarray:
    rgb = np.asarray(frames, dtype=np.float32)
    return rgb[..., 0] - 0.5 * (rgb[..., 1] + rgb[..., 2])


def _centroid(weights: np.ndarray) -> np.ndarray:
    """`(..., H, W)` weights -> `(..., 2)` (x, y) in [0, 1] frame units; NaN where the mass is under one pixel."""
    height, width = weights.shape[-2:]
    mass = weights.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        x = ((weights * np.arange(width)).sum(axis=(-2, -1)) / mass + 0.5) / width
        y = ((weights * np.arange(height)[:, None]).sum(axis=(-2, -1)) / mass + 0.5) / height
    position = np.stack([x, y], axis=-1)
    position[mass < 0.5] = np.nan
    return position


def locate_breakout_paddle(frames: np.ndarray) -> np.ndarray:
    """Breakout paddle centre: `(..., H, W, 3)` uint8 -> `(..., 1)` x in [0, 1] of the frame width (NaN if absent).

    The paddle is red (200, 72, 72) in the band of rows just above the bottom (0.86-0.96 of the height); the bricks
    of the same colour are far above it.
    """
    frames = np.asarray(frames)
    height = frames.shape[-3]
    band = slice(int(0.86 * height), int(0.96 * height))
    weights = np.zeros(frames.shape[:-1], np.float32)
    weights[..., band, :] = np.clip((_redness(frames[..., band, :, :]) - 50.0) / 50.0, 0.0, 1.0)
    return _centroid(weights)[..., :1]


def locate_minigrid_agent(frames: np.ndarray) -> np.ndarray:
    """MiniGrid agent triangle: `(..., H, W, 3)` uint8 -> `(..., 2)` (x, y) in [0, 1] frame units (NaN if absent)."""
    return _centroid(np.clip((_redness(frames) - 80.0) / 60.0, 0.0, 1.0))


def locate_pusht_agent(frames: np.ndarray) -> np.ndarray:
    """PushT agent disc in [0, 1] frame units (see :func:`worldsim.evaluation.pusht.locate_agent`)."""
    return locate_agent(frames) / PUSHT_WORKSPACE


LOCATORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "pusht": locate_pusht_agent,
    "breakout": locate_breakout_paddle,
    "minigrid": locate_minigrid_agent,
}
"""Controlled-entity locators by embodiment name: frames -> positions in [0, 1] frame units."""


@dataclass
class SensitivityReport:
    """Result of :func:`action_sensitivity` (all distances in [0, 1] frame units, mean over steps)."""

    embodiment: str
    accuracy: float
    chance: float
    imagined_spread: float
    real_spread: float
    mean_own_distance: float
    passed: bool
    num_contexts: int
    branches: int
    horizon: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _trajectory_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over steps of the Euclidean distance between two `(S, d)` trajectories, ignoring missing steps."""
    distance = np.linalg.norm(a - b, axis=-1)
    return float(np.nanmean(distance)) if np.isfinite(distance).any() else np.inf


def score_branches(imagined: np.ndarray, real: np.ndarray, tolerance: float = 0.02) -> tuple[np.ndarray, float, float]:
    """Matches imagined branches to real ones by entity trajectory.

    Args:
        imagined, real: `(K, S, d)` entity positions per branch and step (NaN where not found).
        tolerance: distance slack (frame units) within which another real branch counts as the same future.

    Returns:
        correct `(K,)` bool, imagined spread, real spread (mean pairwise trajectory distances over the pairs that
        share a step where both entities were found; NaN when no pair does). A branch whose entity is never found
        where the real one is (distance inf) is never correct.
    """
    branches = len(imagined)
    distance = np.array([[_trajectory_distance(imagined[i], real[j]) for j in range(branches)] for i in range(branches)])
    own = np.diag(distance)
    correct = np.isfinite(own) & (own <= distance.min(axis=1) + tolerance)
    pairs = [(i, j) for i in range(branches) for j in range(i + 1, branches)]

    def spread(x: np.ndarray) -> float:
        distances = [_trajectory_distance(x[i], x[j]) for i, j in pairs]
        finite = [d for d in distances if np.isfinite(d)]
        return float(np.mean(finite)) if finite else (0.0 if not pairs else float("nan"))

    return correct, spread(imagined), spread(real)


def sample_branch_actions(space_json: dict, branches: int, horizon: int, rng: np.random.Generator,
                          hold: int = 4, start: np.ndarray | None = None, walk_std: float = 0.08) -> list[list]:
    """Action sequences for the branches; each action is held for ``hold`` steps so that branches move apart.

    Box spaces: a random walk of targets that starts at ``start`` (the last context action, flat layout; default
    the middle of the space) and moves by Gaussian steps of ``walk_std`` times the range per ``hold`` steps, clipped
    to the bounds; it stays near what the context was doing, as real policies do. Other spaces: uniformly drawn
    actions.
    """
    space = space_from_json(space_json)
    space.seed(int(rng.integers(2**31)))
    sequences = []
    for _ in range(branches):
        sequence = []
        if space_json["type"] == "Box":
            low, high = space.low.astype(np.float64), space.high.astype(np.float64)
            current = (low + high) / 2 if start is None else np.asarray(start, np.float64).reshape(low.shape)
            while len(sequence) < horizon:
                current = np.clip(current + rng.normal(0.0, walk_std, low.shape) * (high - low), low, high)
                sequence.extend([current.astype(space.dtype)] * hold)
        else:
            while len(sequence) < horizon:
                sequence.extend([space.sample()] * hold)
        sequences.append(sequence[:horizon])
    return sequences


DEFAULT_CONTEXT_POLICY = {"pusht": "pusht-scripted"}
"""Policies that play the context steps by embodiment (the data's own policy); others use ``random``."""


def _play(env_id: str, seed: int, prefix: list, size: int, policy=None, context: int = 0):
    """Resets ``env_id`` with ``seed`` and plays ``prefix`` (or ``context`` policy steps); returns env, frames, actions."""
    env = make_recording_env(env_id)
    observation, info = env.reset(seed=seed)
    frames, actions = [_pixels(observation, env)], []
    steps = prefix if prefix else [None] * context
    for action in steps:
        action = policy(observation, info) if action is None else action
        observation, _, terminated, truncated, info = env.step(action)
        frames.append(_pixels(observation, env))
        actions.append(action)
        if terminated or truncated:
            break
    return env, observation, resize_frames(np.stack(frames), size), actions


def action_sensitivity(pipeline, embodiment: str | None = None, num_contexts: int = 4, branches: int = 4,
                       horizon: int = 16, context: int = 8, seed: int = 0, policy: str | None = None,
                       min_accuracy: float = 0.6, tolerance: float = 0.02, generator_seed: int = 0,
                       progress: bool = True) -> tuple[SensitivityReport, np.ndarray]:
    """Runs the action-sensitivity check (module docstring) for one embodiment of a pipeline.

    Args:
        pipeline: a :class:`~worldsim.pipelines.WorldModelPipeline`.
        embodiment: which embodiment (its env id and action space come from the model); default: the model's.
        num_contexts: real starting states (env seeds ``seed, seed + 1, ...``).
        branches: action sequences per context (K).
        horizon: imagined steps per branch (S).
        context: policy steps played before branching; the last ``window_size - 1`` frames are the model's context.
        policy: the policy that plays the context steps (``random``, ``pusht-scripted`` or ``module:callable``);
            default: :data:`DEFAULT_CONTEXT_POLICY` for the embodiment, else ``random``.
        min_accuracy: following accuracy needed to pass.
        tolerance: see :func:`score_branches`.

    Returns:
        (:class:`SensitivityReport`, frames `(num_contexts, K, S, H, 2W, 3)` uint8: real | imagined side by side).

    Raises:
        ValueError: the embodiment has no env id, or no locator is known for it.
    """
    spec = pipeline.embodiment(embodiment)
    if not spec.env_id:
        raise ValueError(f"embodiment {spec.name!r} records no env id; cannot replay the real env")
    if spec.name not in LOCATORS:
        raise ValueError(f"no entity locator for embodiment {spec.name!r}; known: {sorted(LOCATORS)}")
    locate = LOCATORS[spec.name]
    policy = policy or DEFAULT_CONTEXT_POLICY.get(spec.name, "random")
    space_json = spec.action_space or space_to_json(make_recording_env(spec.env_id).action_space)
    rng = np.random.default_rng(seed)
    size = pipeline.image_size
    correct, imagined_spreads, real_spreads, own = [], [], [], []
    videos = []
    for index in tqdm(range(num_contexts), desc=f"sensitivity ({spec.name})", disable=not progress):
        env_seed = seed + index
        actor = make_policy(policy, space_from_json(space_json))
        if hasattr(actor, "reset"):
            actor.reset(env_seed)
        _, _, context_frames, prefix = _play(spec.env_id, env_seed, [], size, policy=actor, context=context)
        last = flatten_action(space_json, prefix[-1]) if prefix else None
        sequences = sample_branch_actions(space_json, branches, horizon, rng, start=last)
        real = []
        for sequence in sequences:  # deterministic replay of the context, then the branch
            env, observation, _, _ = _play(spec.env_id, env_seed, prefix, size)
            frames = []
            for action in sequence:
                observation, _, terminated, truncated, _ = env.step(action)
                frames.append(_pixels(observation, env))
                if terminated or truncated:
                    break
            frames += [frames[-1]] * (horizon - len(frames))  # an ended episode stays on its last frame
            real.append(resize_frames(np.stack(frames), size))
            env.close()
        real = np.stack(real)  # (K, S, H, W, 3)
        keep = min(len(context_frames), pipeline.window_size)
        flat_prefix = np.stack([flatten_action(space_json, a) for a in prefix]) if prefix else \
            np.zeros((0, spec.action_dim), np.float32)
        context_action = flat_prefix[len(flat_prefix) - (keep - 1):] if keep > 1 else flat_prefix[:0]
        flat_sequences = np.stack([[flatten_action(space_json, a) for a in sequence] for sequence in sequences])
        imagined = pipeline.rollout(
            np.repeat(context_frames[None, -keep:], branches, axis=0),
            np.repeat(context_action[None], branches, axis=0), flat_sequences, embodiment=spec.name,
            generator=torch.Generator().manual_seed(generator_seed + index))
        ok, imagined_spread, real_spread = score_branches(locate(imagined), locate(real), tolerance)
        correct.extend(ok.tolist())
        imagined_spreads.append(imagined_spread)
        real_spreads.append(real_spread)
        own.extend(_trajectory_distance(a, b) for a, b in zip(locate(imagined), locate(real)))
        videos.append(np.concatenate([real, imagined], axis=3))
    accuracy = float(np.mean(correct))
    report = SensitivityReport(
        embodiment=spec.name, accuracy=accuracy, chance=1.0 / branches,
        imagined_spread=float(np.nanmean(imagined_spreads)), real_spread=float(np.nanmean(real_spreads)),
        mean_own_distance=float(np.nanmean([d for d in own if np.isfinite(d)])) if any(np.isfinite(own)) else np.inf,
        passed=accuracy >= min_accuracy, num_contexts=num_contexts, branches=branches, horizon=horizon)
    return report, np.stack(videos)


__all__ = ["LOCATORS", "SensitivityReport", "action_sensitivity", "locate_breakout_paddle", "locate_minigrid_agent",
           "locate_pusht_agent", "sample_branch_actions", "score_branches"]
