"""``WorldModelVectorEnv``: N imagined episodes stepped together, one batched forward pass per step.

A native ``gymnasium.vector.VectorEnv`` (not a ``SyncVectorEnv`` of single envs): all sub-envs share one
:class:`~worldsim.pipelines.RolloutState` and one KV cache, so a step of N envs is one batched denoising loop. A
sub-env that restarts (autoreset or a masked reset) gets its new context spliced into the shared cache
(:meth:`~worldsim.pipelines.WorldModelPipeline.restart`); the other sub-envs are not touched.

    >>> envs = gym.make_vec("worldsim/WorldModel-v0", num_envs=16, vectorization_mode="vector_entry_point",
    ...                     model="checkpoints/pusht")                                     # doctest: +SKIP
    >>> obs, infos = envs.reset(seed=0)                                                     # doctest: +SKIP
    >>> obs, rewards, terminations, truncations, infos = envs.step(envs.action_space.sample())  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from worldsim.constants import ACTION, OBS_IMAGE
from worldsim.data.frame_cache import resize_frames
from worldsim.data.spaces import flatten_action, space_to_json
from worldsim.envs.world_model_env import (NO_OUTCOME_NOTE, apply_sampler_settings, embodiment_action_space,
                                          predict_outcomes, validate_action)
from worldsim.pipelines.world_model import WorldModelPipeline


def _rows_of(action: Any, space: gym.Space, num_envs: int) -> list:
    """Splits a batched action (``batch_space`` layout) into one action per sub-env."""
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(action, dict) or set(action) != set(space.spaces):
            raise ValueError(f"actions must be a dict with keys {sorted(space.spaces)} for {space}, got {action!r}")
        parts = {key: _rows_of(action[key], sub, num_envs) for key, sub in space.spaces.items()}
        return [{key: parts[key][index] for key in parts} for index in range(num_envs)]
    array = np.asarray(action)
    if array.ndim == 0 or len(array) != num_envs:
        raise ValueError(f"actions have shape {array.shape}; expected ({num_envs}, *{space.shape}), one action per "
                         f"sub-env for {space}")
    return list(array)


class WorldModelVectorEnv(gym.vector.VectorEnv):
    """N imagined episodes of one world model, stepped in one batched forward pass.

    Args:
        model: a pipeline folder or a loaded :class:`WorldModelPipeline`.
        num_envs: N >= 1.
        render_mode: ``None`` or ``"rgb_array"`` (``render()`` returns the N current frames).
        embodiment, num_inference_steps, timestep_spacing, decoder, context_noise, action_guidance_scale, device: as
            :class:`~worldsim.envs.WorldModelEnv`.
        max_episode_steps: a sub-env is truncated after this many imagined steps (None: never).
        scorer, task, disagreement_samples: as :class:`~worldsim.envs.WorldModelEnv` (a scorer gets all N frames at
            once; ``infos["disagreement"]`` is `(N,)`).

    Observation: `(N, H, W, 3)` uint8. Action: ``batch_space`` of the embodiment's action space (PushT:
    `(N, 2)` float32 in [0, 512]). With outcome heads, rewards and terminations are predicted per imagined frame
    and ``infos`` carries `(N,)` arrays ``success``, ``success_probability``, ``termination_probability``;
    without them rewards are 0.0 and terminations False (``infos["outcome_heads"]``).

    Autoreset: ``AutoresetMode.NEXT_STEP`` (Gymnasium's default): after a sub-env ends, the next ``step`` restarts
    it from a clip of the model's start set and ignores its action for that step. ``reset(options=...)`` takes
    ``"reset_mask"`` `(N,)` bool (restart only those sub-envs) and ``"context"``: ``{"observation.image": (R, n, H',
    W', 3) uint8, "action": (R, n - 1, A)}`` real context for the R restarted sub-envs, in order.

    Raises:
        ValueError: ``num_envs < 1``, bad ``render_mode``; in ``reset``/``step``: malformed context, mask or actions
            (the message names the sub-env and the value; no sub-env's state changes).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, model: str | Path | WorldModelPipeline, num_envs: int = 1, render_mode: str | None = None,
                 embodiment: str | None = None, num_inference_steps: int | None = None,
                 context_noise: float | None = None, action_guidance_scale: float | None = None,
                 max_episode_steps: int | None = None, device: str = "cpu", scorer=None, task: str | None = None,
                 disagreement_samples: int = 1, timestep_spacing: str | None = None, decoder: str | None = None):
        if int(disagreement_samples) < 1:
            raise ValueError(f"disagreement_samples must be >= 1, got {disagreement_samples}")
        self.disagreement_samples = int(disagreement_samples)
        if scorer is not None and not callable(scorer):
            raise ValueError(f"scorer must be callable (frames, task) -> rewards, got {type(scorer).__name__}")
        self.scorer, self.task = scorer, task
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode {render_mode!r} not supported; use None or 'rgb_array'")
        if max_episode_steps is not None and int(max_episode_steps) < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        self.pipeline = model if isinstance(model, WorldModelPipeline) else WorldModelPipeline.from_pretrained(model, device)
        self.embodiment = self.pipeline.embodiment(embodiment)
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.metadata = {**self.metadata, "render_fps": self.embodiment.fps}
        size = self.pipeline.image_size
        self.single_observation_space = gym.spaces.Box(0, 255, (size, size, 3), dtype=np.uint8)
        self.single_action_space = embodiment_action_space(self.embodiment)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._space_json = space_to_json(self.single_action_space)
        # the flat action fed to a sub-env that is restarting this step (its frame is thrown away)
        self._placeholder = flatten_action(self._space_json, self.single_action_space.sample())
        self.num_inference_steps = num_inference_steps
        self.context_noise = context_noise
        self.action_guidance_scale = action_guidance_scale
        self.timestep_spacing = timestep_spacing
        self.decoder = apply_sampler_settings(self.pipeline, num_inference_steps, timestep_spacing, decoder)
        self._state = None
        self._generator = torch.Generator()
        self._observation = np.zeros(self.observation_space.shape, dtype=np.uint8)
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)

    # -- contexts ---------------------------------------------------------------------------------------------
    def _contexts_from_options(self, context: Any, count: int) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(context, dict) or OBS_IMAGE not in context:
            raise ValueError(f"options['context'] must be a dict with {OBS_IMAGE!r} and {ACTION!r}, got {type(context)}")
        frames = np.asarray(context[OBS_IMAGE])
        if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] != 3 or frames.shape[1] == 0:
            raise ValueError(f"context {OBS_IMAGE!r} must be uint8 (R, n, H, W, 3) with n >= 1, got {frames.dtype} "
                             f"{frames.shape}")
        if len(frames) != count:
            raise ValueError(f"context has {len(frames)} clips for {count} sub-envs being reset")
        if frames.shape[2] != frames.shape[3]:
            raise ValueError(f"context frames must be square, got {frames.shape[2]}x{frames.shape[3]}")
        expected = (count, frames.shape[1] - 1, self.embodiment.action_dim)
        action = np.asarray(context.get(ACTION, np.zeros(expected)), dtype=np.float64)
        if action.shape != expected:
            raise ValueError(f"context {ACTION!r} has shape {action.shape}; expected {expected}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"context {ACTION!r} contains NaN or inf")
        resized = np.stack([resize_frames(clip, self.pipeline.image_size) for clip in frames])
        return resized, action.astype(np.float32)

    def _start_contexts(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        start = self.pipeline.start_set(self.embodiment.name)
        if start is None:
            raise ValueError(f"this model has no bundled start set for {self.embodiment.name!r}; pass "
                             f"options={{'context': {{...}}}} to reset (and reset ended sub-envs yourself)")
        index = self.np_random.integers(len(start[0]), size=count)
        return start[0][index].numpy(), start[1][index].numpy()

    def _restart(self, rows: np.ndarray, frames: np.ndarray, action: np.ndarray) -> None:
        if self._state is None or len(rows) == self.num_envs:
            self._state = self.pipeline.encode_context(frames, action, self.context_noise, self._generator,
                                                       embodiment=self.embodiment.name)
        else:
            self._state = self.pipeline.restart(self._state, rows, frames, action, self.context_noise, self._generator)
        self._observation[rows] = frames[:, -1]
        self._steps[rows] = 0
        self._autoreset[rows] = False

    # -- Gymnasium API ----------------------------------------------------------------------------------------
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        """Starts (some of) the imagined episodes; see the class docstring for ``options``.

        Raises:
            ValueError: bad ``reset_mask`` or context, or a partial reset before the first full one; nothing
                changes.
        """
        options = options or {}
        mask = options.get("reset_mask")
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (self.num_envs,):
            raise ValueError(f"reset_mask must be bool of shape ({self.num_envs},), got {mask.dtype} {mask.shape}")
        if self._state is None and not mask.all():
            raise ValueError("the first reset must reset every sub-env (reset_mask all True or absent)")
        rows = np.flatnonzero(mask)
        context = options.get("context")
        if context is not None:
            frames, action = self._contexts_from_options(context, len(rows))  # validate before touching state
        if isinstance(seed, (list, tuple)):
            seed = seed[0] if seed else None
        super().reset(seed=seed)
        if seed is not None:
            self._generator.manual_seed(int(seed))
        if context is None:
            frames, action = self._start_contexts(len(rows))
        if len(rows):
            self._restart(rows, frames, action)
        return self._observation.copy(), self._infos()

    def _infos(self, outcomes: dict | None = None) -> dict:
        has_heads = self.pipeline.heads_for(self.embodiment.name) is not None
        infos = {"imagined_steps": self._steps.copy(), "outcome_heads": has_heads}
        if not has_heads:
            infos["note"] = NO_OUTCOME_NOTE
        infos.update(outcomes or {})
        return infos

    def step(self, actions):
        """Imagines the next frame of every sub-env in one batched pass.

        Raises:
            RuntimeError: called before ``reset``.
            ValueError: an action of a running sub-env is invalid (see
                :func:`~worldsim.envs.world_model_env.validate_action`); nothing changes.
        """
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        rows = _rows_of(actions, self.single_action_space, self.num_envs)
        flat = np.empty((self.num_envs, self.embodiment.action_dim), dtype=np.float32)
        for index, action in enumerate(rows):
            if self._autoreset[index]:  # NEXT_STEP autoreset: this sub-env's action is ignored
                flat[index] = self._placeholder
                continue
            try:
                flat[index] = flatten_action(self._space_json, validate_action(action, self.single_action_space))
            except ValueError as error:
                raise ValueError(f"sub-env {index}: {error}") from None
        restarting = np.flatnonzero(self._autoreset)
        if len(restarting):  # fetch the new contexts first: an error here leaves everything as it was
            frames, action = self._start_contexts(len(restarting))
        disagreement = None
        self.pipeline.set_decoder(self.decoder)  # the pipeline may be shared with an env that decodes otherwise
        if self.disagreement_samples > 1:
            self._state, disagreement = self.pipeline.step_with_disagreement(
                self._state, flat, self.disagreement_samples, self.num_inference_steps, self.context_noise,
                self._generator, self.action_guidance_scale, self.timestep_spacing)
        else:
            self._state = self.pipeline.step(self._state, flat, self.num_inference_steps, self.context_noise,
                                             self._generator, self.action_guidance_scale, self.timestep_spacing)
        self._observation = self._state.frames.cpu().numpy().copy()
        self._steps += 1
        rewards, terminations, outcomes = predict_outcomes(self.pipeline, self._observation, self.scorer, self.task,
                                                           self.embodiment.name, self._state.frame_latents)
        if disagreement is not None:
            outcomes["disagreement"] = disagreement
        truncations = np.zeros(self.num_envs, dtype=bool)
        if self.max_episode_steps is not None:
            truncations = self._steps >= self.max_episode_steps
        if len(restarting):
            self._restart(restarting, frames, action)
            truncations[restarting] = False
            terminations[restarting] = False
            rewards[restarting] = 0.0
        self._autoreset = terminations | truncations
        return self._observation.copy(), rewards, terminations, truncations, self._infos(outcomes)

    def render(self):
        """The N current frames `(N, H, W, 3)` uint8 with ``render_mode="rgb_array"``, else None."""
        if self.render_mode == "rgb_array":
            return self._observation.copy()
        return None
