"""Action-sensitivity check: does the model imagine *different* futures for different actions, each the right one?

Protocol (per embodiment):

1. Reset the real env with a seed and play ``context`` steps of a policy (the embodiment plug-in's data policy, or
   random): the shared context.
2. Draw ``branches`` action sequences of ``horizon`` steps and play each from that same state in the real env
   (deterministic replay of seed + context actions), recording the real future of each branch.
3. Imagine every branch with the world model from the same context frames.
4. Locate the controlled entity in every frame (the plug-in's
   :meth:`~worldsim.embodiments.EmbodimentPlugin.locate_controlled`: an agent, a paddle, a gripper) and compare
   trajectories:

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

import numpy as np
import torch
from tqdm.auto import tqdm

from worldsim.data.collect import _pixels
from worldsim.data.frame_cache import resize_frames
from worldsim.data.policies import make_policy
from worldsim.data.spaces import flatten_action, space_from_json, space_to_json


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


def _play(plugin, env_id: str, seed: int, prefix: list, size: int, policy=None, context: int = 0):
    """Resets ``env_id`` with ``seed`` and plays ``prefix`` (or ``context`` policy steps); returns env, frames, actions."""
    env = plugin.make_env(env_id)
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
                       progress: bool = True, sampler=None) -> tuple[SensitivityReport, np.ndarray]:
    """Runs the action-sensitivity check (module docstring) for one embodiment of a pipeline.

    Args:
        pipeline: a :class:`~worldsim.pipelines.WorldModelPipeline`.
        embodiment: which embodiment (its env id and action space come from the model); default: the model's.
        num_contexts: real starting states (env seeds ``seed, seed + 1, ...``).
        branches: action sequences per context (K).
        horizon: imagined steps per branch (S).
        context: policy steps played before branching; the last ``window_size - 1`` frames are the model's context.
        policy: the policy that plays the context steps (a collection policy name for
            :func:`~worldsim.data.policies.make_policy`, or ``module:callable``); default: the plug-in's
            :attr:`~worldsim.embodiments.EmbodimentPlugin.data_policy`, else ``random``.
        min_accuracy: following accuracy needed to pass.
        tolerance: see :func:`score_branches`.
        sampler: the imagination's :class:`~worldsim.pipelines.SamplerSettings` (default: the model's).

    Returns:
        (:class:`SensitivityReport`, frames `(num_contexts, K, S, H, 2W, 3)` uint8: real | imagined side by side).

    Raises:
        ValueError: the embodiment has no env id or no plug-in (:func:`~worldsim.embodiments.resolve_embodiment`).
        NotImplementedError: its plug-in has no locator for the controlled entity.
    """
    from worldsim.embodiments import resolve_embodiment

    name, plugin = resolve_embodiment(pipeline, embodiment)
    spec = pipeline.embodiment(name)
    if not spec.env_id:
        raise ValueError(f"embodiment {spec.name!r} records no env id; cannot replay the real env")
    sampler = sampler or pipeline.sampler_settings()
    pipeline.set_decoder(sampler.decoder)
    locate = plugin.locate_controlled
    locate(np.zeros((1, 8, 8, 3), np.uint8))  # a plug-in without a locator fails here, before any rollout
    policy = policy or plugin.data_policy or "random"
    space_json = spec.action_space or space_to_json(plugin.make_env(spec.env_id).action_space)
    rng = np.random.default_rng(seed)
    size = pipeline.image_size
    correct, imagined_spreads, real_spreads, own = [], [], [], []
    videos = []
    for index in tqdm(range(num_contexts), desc=f"sensitivity ({spec.name})", disable=not progress):
        env_seed = seed + index
        actor = make_policy(policy, space_from_json(space_json), embodiment=plugin)
        if hasattr(actor, "reset"):
            actor.reset(env_seed)
        _, _, context_frames, prefix = _play(plugin, spec.env_id, env_seed, [], size, policy=actor, context=context)
        last = flatten_action(space_json, prefix[-1]) if prefix else None
        sequences = sample_branch_actions(space_json, branches, horizon, rng, start=last)
        real = []
        for sequence in sequences:  # deterministic replay of the context, then the branch
            env, observation, _, _ = _play(plugin, spec.env_id, env_seed, prefix, size)
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
            generator=torch.Generator().manual_seed(generator_seed + index), **sampler.step_kwargs())
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


__all__ = ["SensitivityReport", "action_sensitivity", "sample_branch_actions", "score_branches"]
