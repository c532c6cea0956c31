"""Soak tests: long imagined rollouts and many resets, watching resident memory and the outputs.

A learned simulator runs unattended for hours; a cache that grows by one frame per step, a tensor kept alive by a
list, or a NaN that appears after thousands of frames would all pass a short test. :func:`soak_rollout` steps one
env for ``steps`` steps and samples resident memory along the way; :func:`soak_resets` resets an env ``resets``
times from real-looking contexts. Both check every observation and reward for finiteness and report memory at the
start and the end. ``worldsim soak`` runs both and writes the report (figures in docs/reliability.md).
"""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from worldsim.constants import OBS_IMAGE
from worldsim.utils.measure import resident_mib


def soak_rollout(env, steps: int, warmup: int = 100, samples: int = 20, seed: int = 0, progress: bool = True) -> dict:
    """Steps ``env`` (a ``WorldModelEnv``, no time limit) ``steps`` times with random actions.

    Args:
        env: the env; reset here with ``seed``.
        steps: steps after the warm-up.
        warmup: steps before the first memory reading (allocator pools and caches fill up in the first steps).
        samples: memory readings spread over the run.
        seed: seed of the reset and of the uniform random actions (drawn from ``env.action_space``).
        progress: show a progress bar.

    Returns:
        ``{"steps", "seconds", "memory_mib": [(step, MiB), ...], "start_mib", "end_mib", "growth_mib",
        "finite": bool, "first_non_finite_step": int | None, "observation_range": [min, max]}``.

    Raises:
        ValueError: ``steps < 1`` or ``warmup < 0``.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got {steps} and {warmup}")
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high

    extremes = [255, 0]  # darkest and brightest pixel seen: a rollout that fades to one colour shows here

    def step() -> bool:
        observation, reward, *_ = env.step(rng.uniform(low, high).astype(np.float32))
        extremes[0], extremes[1] = min(extremes[0], int(observation.min())), max(extremes[1], int(observation.max()))
        return bool(np.isfinite(reward)) and observation.dtype == np.uint8

    for _ in range(warmup):
        step()
    every = max(1, steps // samples)
    memory = [(0, resident_mib())]
    first_bad = None
    started = time.perf_counter()
    for index in tqdm(range(1, steps + 1), desc="soak rollout", disable=not progress):
        if not step() and first_bad is None:
            first_bad = index
        if index % every == 0 or index == steps:
            memory.append((index, resident_mib()))
    lowest, highest = extremes
    return {"steps": steps, "warmup": warmup, "seconds": time.perf_counter() - started, "memory_mib": memory,
            "start_mib": memory[0][1], "end_mib": memory[-1][1], "growth_mib": memory[-1][1] - memory[0][1],
            "finite": first_bad is None, "first_non_finite_step": first_bad,
            "observation_range": [lowest, highest]}


def soak_resets(env, resets: int, steps_between: int = 1, warmup: int = 20, samples: int = 20, seed: int = 0,
                progress: bool = True) -> dict:
    """Resets ``env`` ``resets`` times, alternating the bundled start set and random real-shaped contexts.

    Args:
        env: a ``WorldModelEnv`` with a bundled start set; odd resets pass ``options={"context": ...}`` with 4
            random `(S, S, 3)` uint8 frames and 3 random actions instead.
        resets: resets measured (after ``warmup`` unmeasured ones).
        steps_between: random-action steps after each reset (the outputs checked for finiteness).
        warmup, samples, seed, progress: as in :func:`soak_rollout`.

    Returns:
        ``{"resets", "seconds", "memory_mib": [(reset, MiB), ...], "start_mib", "end_mib", "growth_mib",
        "finite": bool}``.

    Raises:
        ValueError: ``resets < 1``.
    """
    if resets < 1:
        raise ValueError(f"need resets >= 1, got {resets}")
    rng = np.random.default_rng(seed)
    size = env.observation_space.shape[0]
    low, high = env.action_space.low, env.action_space.high
    finite = True

    def cycle(index: int) -> None:
        nonlocal finite
        if index % 2:
            frames = rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8)
            context = {OBS_IMAGE: frames, "action": rng.uniform(low, high, (3, len(low))).astype(np.float32)}
            env.reset(seed=index, options={"context": context})
        else:
            env.reset(seed=index)
        for _ in range(steps_between):
            _, reward, *_ = env.step(rng.uniform(low, high).astype(np.float32))
            finite = finite and bool(np.isfinite(reward))

    for index in range(warmup):
        cycle(index)
    every = max(1, resets // samples)
    memory = [(0, resident_mib())]
    started = time.perf_counter()
    for index in tqdm(range(1, resets + 1), desc="soak resets", disable=not progress):
        cycle(warmup + index)
        if index % every == 0 or index == resets:
            memory.append((index, resident_mib()))
    return {"resets": resets, "steps_between": steps_between, "seconds": time.perf_counter() - started,
            "memory_mib": memory, "start_mib": memory[0][1], "end_mib": memory[-1][1],
            "growth_mib": memory[-1][1] - memory[0][1], "finite": finite}
