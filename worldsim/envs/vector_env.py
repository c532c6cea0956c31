"""``WorldModelVectorEnv``: N imagined episodes stepped together, one batched forward pass per step.

A native ``gymnasium.vector.VectorEnv`` (not a ``SyncVectorEnv`` of single envs): all sub-envs share one
:class:`~worldsim.pipelines.RolloutState` and one KV cache, so a step of N envs is one batched denoising loop. A
sub-env that restarts (autoreset or a masked reset) gets its new context spliced into the shared cache
(:meth:`~worldsim.pipelines.WorldModelPipeline.restart`); the other sub-envs are not touched.

Attention sinks (``sink_size`` in the model's ``worldsim.json``; :mod:`worldsim.models.kv_cache`) work with both kinds
of restart: a restarted sub-env's sinks are the first frames of *its* new episode, never the previous episode's, and
it attends to exactly what a fresh env started from the same context attends to.

    >>> envs = gym.make_vec("worldsim/WorldModel-v0", num_envs=16, vectorization_mode="vector_entry_point",
    ...                     model="checkpoints/joint")                                     # doctest: +SKIP
    >>> obs, infos = envs.reset(seed=0)                                                     # doctest: +SKIP
    >>> obs, rewards, terminations, truncations, infos = envs.step(envs.action_space.sample())  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils.seeding import np_random as np_random_from_seed
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from worldsim.constants import ACTION
from worldsim.data.spaces import space_to_json
from worldsim.envs.world_model_env import (NO_OUTCOME_NOTE, embodiment_action_space, env_action, env_action_space,
                                          env_sampler, predict_outcomes, start_clips)
from worldsim.pipelines.sampler import SamplerSettings
from worldsim.envs.observations import ObservationLayout
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
        start_dataset, start_context: the start set, as :class:`~worldsim.envs.WorldModelEnv`.
        sampler: a :class:`~worldsim.pipelines.SamplerSettings` instead of the separate sampler settings, as
            :class:`~worldsim.envs.WorldModelEnv`.

    Observation: `(N, H, W, 3)` uint8, or for a Dict-observation model (several cameras, or a state predictor:
    :class:`~worldsim.envs.observations.ObservationLayout`) a dict of `(N, H, W / V, 3)` uint8 per camera key and
    ``"observation.state"`` `(N, S)` float32. Action: ``batch_space`` of the embodiment's action space (a Box
    of shape `(2,)` gives `(N, 2)` float32; a Discrete gives `(N,)` int64). With outcome heads, rewards and terminations are predicted per imagined frame
    and ``infos`` carries `(N,)` arrays ``success``, ``success_probability``, ``termination_probability``;
    without them rewards are 0.0 and terminations False (``infos["outcome_heads"]``).

    Autoreset: ``AutoresetMode.NEXT_STEP`` (Gymnasium's default): after a sub-env ends, the next ``step`` restarts
    it from a clip of the model's start set and ignores its action for that step. ``reset(options=...)`` takes
    ``"reset_mask"`` `(N,)` bool (restart only those sub-envs) and ``"context"``: ``{"observation.image": (R, n, H',
    W', 3) uint8, "action": (R, n - 1, A)}`` real context for the R restarted sub-envs, in order (a Dict-observation
    env: one entry per camera key and ``"observation.state"`` `(R, n, S)`). A task-conditioned model imagines the task
    ``task`` (default: each start clip's own; ``options["task"]``: a text or R texts for the restarted sub-envs).

    Seeds: ``reset(seed=s)`` with an int seeds one random stream shared by all sub-envs (start-clip choice and
    diffusion noise, drawn for the whole batch at once). ``reset(seed=[s_0, ..., s_{N-1}])`` gives every sub-env its
    own streams (a numpy RNG for its start clips, a ``torch.Generator`` for its noise, drawn row by row): sub-env i
    then imagines what a 1-env ``reset(seed=s_i)`` imagines with the same actions, autoresets included (the same
    frames up to float rounding between batch sizes), and a restart of one sub-env leaves the others' randomness
    alone. A ``None`` entry keeps that sub-env's stream (one
    derived from the shared stream when it had none); entries of sub-envs outside ``reset_mask`` are ignored. A later
    int seed goes back to the shared stream.

    Attention sinks: a model whose ``worldsim.json`` sets ``sink_size`` > 0 keeps each rollout's first frames in its
    KV cache for ever, next to the sliding window of the last ``local_attn_size - 1`` frames (StreamingLLM-style;
    they help long rollouts keep the scene's static content). Sinks are per sub-env: a sub-env restarted by
    ``reset_mask`` or by autoreset gets the first frames of its new episode as sinks (filled by its next frames when
    its context is shorter than ``sink_size``), and its frames equal those of a fresh env started from the same
    context and seed (per-sub-env seeds, above).

    Raises:
        ValueError: ``num_envs < 1``, bad ``render_mode``; in ``reset``/``step``: malformed context, mask, seed list or
            actions (the message names the sub-env and the value; no sub-env's state changes).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, model: str | Path | WorldModelPipeline, num_envs: int = 1, render_mode: str | None = None,
                 embodiment: str | None = None, num_inference_steps: int | None = None,
                 context_noise: float | None = None, action_guidance_scale: float | None = None,
                 max_episode_steps: int | None = None, device: str = "cpu", scorer=None, task: str | None = None,
                 disagreement_samples: int = 1, timestep_spacing: str | None = None, decoder: str | None = None,
                 start_dataset=None, start_context: int = 4, sampler: SamplerSettings | None = None):
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
        self.metadata = {**self.metadata, "render_fps": self.embodiment.fps / self.pipeline.frames_per_latent}
        self._start = start_clips(self.pipeline, self.embodiment, start_dataset, start_context)
        self.layout = ObservationLayout(self.pipeline, self.embodiment.name,
                                        self._start is not None and "state" in self._start[2])
        self.single_observation_space = self.layout.space()
        self.single_action_space = env_action_space(self.pipeline, self.embodiment)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._space_json = space_to_json(embodiment_action_space(self.embodiment))
        self._group = self.pipeline.frames_per_latent
        # the flat action fed to a sub-env that is restarting this step (its frame is thrown away)
        self._placeholder = env_action(self.single_action_space.sample(), self.single_action_space, self._space_json,
                                       self._group)
        #: the sampler, resolved once (the loose settings above are shorthands for it)
        self.sampler = env_sampler(self.pipeline, sampler, num_inference_steps, timestep_spacing, context_noise,
                                   action_guidance_scale, decoder)
        self.decoder = self.sampler.decoder
        self._state = None
        self._generator = torch.Generator()  # the shared noise stream (int or no seed)
        # per-sub-env streams after reset(seed=[...]): start-clip RNGs and noise generators, one of each per sub-env
        self._sub_env_np_random: list[np.random.Generator] | None = None
        self._sub_env_generators: list[torch.Generator] | None = None
        self._frames = np.zeros((self.num_envs, *self.pipeline.frame_size, 3), dtype=np.uint8)
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)

    # -- contexts ---------------------------------------------------------------------------------------------
    def _contexts_from_options(self, context: Any, count: int) -> dict:
        frames, state = self.layout.context_frames(context, batched=True)
        if len(frames) != count:
            raise ValueError(f"context has {len(frames)} clips for {count} sub-envs being reset")
        expected = (count, frames.shape[1] - 1, self.embodiment.action_dim)
        action = np.asarray(context.get(ACTION, np.zeros(expected)), dtype=np.float64)
        if action.shape != expected:
            raise ValueError(f"context {ACTION!r} has shape {action.shape}; expected {expected}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"context {ACTION!r} contains NaN or inf")
        return {"frames": frames, "action": action.astype(np.float32), "state": state}

    def _start_contexts(self, rows: np.ndarray) -> dict:
        """Start clips for the sub-envs ``rows``: ``{"frames", "action", "state" (or None), "task" (or None)}``."""
        start = self._start
        if start is None:
            raise ValueError(f"this model has no bundled start set for {self.embodiment.name!r}; pass "
                             f"options={{'context': {{...}}}} to reset (and reset ended sub-envs yourself)")
        if self._sub_env_np_random is None:
            index = self.np_random.integers(len(start[0]), size=len(rows))
        else:  # each sub-env draws from its own RNG, as a 1-env vector env seeded alike would
            index = np.concatenate([self._sub_env_np_random[row].integers(len(start[0]), size=1) for row in rows])
        extras = start[2]
        return {"frames": start[0][index].numpy(), "action": start[1][index].numpy(),
                "state": extras["state"][index].numpy() if self.layout.state_dim is not None else None,
                "task": extras["task"][index] if "task" in extras else None}

    def _generator_for(self, rows) -> torch.Generator | list[torch.Generator]:
        """The noise stream of sub-envs ``rows``: the shared generator, or one generator per row."""
        if self._sub_env_generators is None:
            return self._generator
        return [self._sub_env_generators[row] for row in rows]

    def _task_for(self, context: dict, rows: np.ndarray, task) -> Any:
        """The tasks of restarted sub-envs: ``task`` (a text, or one per row), else the env's ``task``, else the start
        clips' own (the null task for a context without one)."""
        if self.pipeline.transformer.task_embedder is None:
            return None  # the env's task is then only the scorer's text
        if task is None:
            task = self.task
        if task is None:
            return context.get("task")
        return [task] * len(rows) if isinstance(task, str) else task

    def _restart(self, rows: np.ndarray, context: dict, task=None) -> None:
        generator = self._generator_for(rows)
        frames, action, state = context["frames"], context["action"], context.get("state")
        task = self._task_for(context, rows, task)
        last_state = None if state is None else state[:, -1]
        if self._state is None or len(rows) == self.num_envs:
            self._state = self.pipeline.encode_context(frames, action, self.sampler.context_noise, generator,
                                                       embodiment=self.embodiment.name, task=task,
                                                       observation_state=last_state)
        else:
            self._state = self.pipeline.restart(self._state, rows, frames, action, self.sampler.context_noise, generator,
                                                task=task, observation_state=last_state)
        self._frames[rows] = frames[:, -1]
        self._steps[rows] = 0
        self._autoreset[rows] = False

    def _check_seed(self, seed) -> list[int | None] | None:
        """The per-sub-env seeds of a list ``seed`` (validated), or None for an int or no seed.

        Raises:
            ValueError: a list whose length is not ``num_envs`` or with an entry that is not None or an int in
                ``[0, 2**64)`` (the message names it).
        """
        if not isinstance(seed, (list, tuple, np.ndarray)):
            return None
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"seed is a list of {len(seeds)} entries {seeds!r}; a list needs one entry per sub-env "
                             f"(num_envs={self.num_envs}), each an int or None")
        for index, value in enumerate(seeds):
            if value is not None and (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))
                                      or not 0 <= int(value) < 2**64):
                raise ValueError(f"seed[{index}] is {value!r}; expected None or an int in [0, 2**64)")
        return [None if value is None else int(value) for value in seeds]

    def _seed_sub_envs(self, rows: np.ndarray, seeds: list[int | None]) -> None:
        """Gives the sub-envs in ``rows`` the streams of their seeds (entries None keep theirs)."""
        if self._sub_env_np_random is None:  # leaving the shared stream: every sub-env gets one derived from it
            derived = self.np_random.integers(0, 2**62, size=self.num_envs)
            self._sub_env_np_random = [np.random.default_rng(int(value)) for value in derived]
            self._sub_env_generators = [torch.Generator().manual_seed(int(value)) for value in derived]
        for row in rows:
            if seeds[row] is not None:  # exactly what a 1-env reset(seed=seeds[row]) seeds
                self._sub_env_np_random[row] = np_random_from_seed(seeds[row])[0]
                self._sub_env_generators[row] = torch.Generator().manual_seed(seeds[row])

    # -- Gymnasium API ----------------------------------------------------------------------------------------
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        """Starts (some of) the imagined episodes; see the class docstring for ``seed`` and ``options``.

        Args:
            seed: None, an int (one stream shared by all sub-envs) or a list of ``num_envs`` ints or None (one stream
                per sub-env: sub-env i as a 1-env ``reset(seed=seed[i])``).
            options: ``"reset_mask"`` and ``"context"``, see the class docstring.

        Returns:
            ``(observation, infos)``: `(N, H, W, 3)` uint8 frames (the last context frame of each restarted
            sub-env, the current frame of the others) and the infos dict.

        Raises:
            ValueError: bad ``reset_mask``, context or seed list, or a partial reset before the first full one; nothing
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
        task = options.get("task")
        if task is not None:  # validate before touching state
            self.pipeline.task_ids([task] * len(rows) if isinstance(task, str) else task, len(rows))
        if context is not None:
            context = self._contexts_from_options(context, len(rows))  # validate before touching state
        seeds = self._check_seed(seed)
        if seeds is not None:
            self._seed_sub_envs(rows, seeds)
        else:
            super().reset(seed=seed)
            if seed is not None:
                self._generator.manual_seed(int(seed))
                self._sub_env_np_random = self._sub_env_generators = None  # back to the shared stream
        if context is None:
            context = self._start_contexts(rows)
        if len(rows):
            self._restart(rows, context, task)
        return self._observe(), self._infos()

    def _observe(self):
        """The current batched observation (:meth:`ObservationLayout.observe`)."""
        state = None if self._state is None else self._state.observation_state
        return self.layout.observe(self._frames.copy(), None if state is None else state.cpu().numpy())

    def _infos(self, outcomes: dict | None = None) -> dict:
        has_heads = self.pipeline.heads_for(self.embodiment.name) is not None
        infos = {"imagined_steps": self._steps.copy(), "outcome_heads": has_heads}
        if not has_heads:
            infos["note"] = NO_OUTCOME_NOTE
        infos.update(outcomes or {})
        return infos

    def step(self, actions):
        """Imagines the next frame of every sub-env in one batched pass. For a model of ``k > 1`` frames per latent
        frame each action is ``k`` actions and ``infos["frames"]`` `(N, k, H, W, 3)` uint8 holds every imagined frame
        (the observation shows the last).

        Raises:
            RuntimeError: called before ``reset``.
            ValueError: an action of a running sub-env is invalid (see
                :func:`~worldsim.envs.world_model_env.validate_action`); nothing changes.
        """
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        rows = _rows_of(actions, self.single_action_space, self.num_envs)
        flat = np.empty((self.num_envs, *self._placeholder.shape), dtype=np.float32)
        for index, action in enumerate(rows):
            if self._autoreset[index]:  # NEXT_STEP autoreset: this sub-env's action is ignored
                flat[index] = self._placeholder
                continue
            try:
                flat[index] = env_action(action, self.single_action_space, self._space_json, self._group)
            except ValueError as error:
                raise ValueError(f"sub-env {index}: {error}") from None
        restarting = np.flatnonzero(self._autoreset)
        if len(restarting):  # fetch the new contexts first: an error here leaves everything as it was
            fresh = self._start_contexts(restarting)
        disagreement = None
        generator = self._generator_for(range(self.num_envs))
        self.pipeline.set_decoder(self.decoder)  # the pipeline may be shared with an env that decodes otherwise
        if self.disagreement_samples > 1:
            self._state, disagreement = self.pipeline.step_with_disagreement(
                self._state, flat, self.disagreement_samples, generator=generator, **self.sampler.step_kwargs())
        else:
            self._state = self.pipeline.step(self._state, flat, generator=generator, **self.sampler.step_kwargs())
        self._frames = self._state.frames.cpu().numpy().copy()
        chunks = None if self._state.chunk_frames is None else self._state.chunk_frames.cpu().numpy().copy()
        self._steps += 1
        rewards, terminations, outcomes = predict_outcomes(self.pipeline, self._frames, self.scorer, self.task,
                                                           self.embodiment.name, self._state.frame_latents)
        if disagreement is not None:
            outcomes["disagreement"] = disagreement
        truncations = np.zeros(self.num_envs, dtype=bool)
        if self.max_episode_steps is not None:
            truncations = self._steps >= self.max_episode_steps
        if len(restarting):
            self._restart(restarting, fresh)
            truncations[restarting] = False
            terminations[restarting] = False
            rewards[restarting] = 0.0
        self._autoreset = terminations | truncations
        infos = self._infos(outcomes)
        if chunks is not None:  # every frame of the step; a restarted sub-env shows its new context's last
            chunks[restarting] = self._frames[restarting][:, None]
            infos["frames"] = chunks
        return self._observe(), rewards, terminations, truncations, infos

    def render(self):
        """The N current frames `(N, H, W, 3)` uint8 with ``render_mode="rgb_array"``, else None."""
        if self.render_mode == "rgb_array":
            return self._frames.copy()
        return None
