"""``WorldModelEnv``: a trained world model served as a ``gymnasium.Env``.

Each ``step(action)`` imagines the next frame with :class:`~worldsim.pipelines.WorldModelPipeline` (one
autoregressive step: ``num_inference_steps`` denoising passes over the history window). Observations are the
imagined frames. With outcome heads (``worldsim train-heads``), reward, termination and success are predicted from
each imagined frame; without them reward is 0.0 and terminated False, and ``info["outcome_heads"]`` says so. A
user ``scorer`` (any callable on imagined frames and the task text: a goal-image similarity, a VLM judge) can
replace the reward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from worldsim.constants import ACTION
from worldsim.data.spaces import flatten_action, space_from_json, space_to_json
from worldsim.pipelines.sampler import SamplerSettings
from worldsim.envs.observations import ObservationLayout
from worldsim.pipelines.world_model import WorldModelPipeline

NO_OUTCOME_NOTE = "this model has no outcome heads: reward is 0.0 and terminated is False (not predictions)"


def predict_outcomes(pipeline: WorldModelPipeline, frames: np.ndarray, scorer=None, task: str | None = None,
                     embodiment: str | None = None,
                     latents: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Rewards, terminations and info entries for a batch of imagined frames (shared by the single and vector env).

    Args:
        pipeline: the world model (its outcome heads, if any, are used).
        frames: `(B, H, W, 3)` uint8 imagined frames.
        scorer: optional callable ``scorer(frames (B, H, W, 3) uint8, task) -> (B,)`` float; when given, its
            output is the reward (the heads' reward stays in ``info["head_reward"]``).
        task: task text passed to ``scorer``.
        embodiment: whose frames these are; heads trained for another embodiment are not used.
        latents: `(B, C, h, w)` float32, the frames' imagined latents; when given the heads read them instead of
            re-encoding the decoded frames (one autoencoder pass saved per step).

    Returns:
        rewards `(B,)` float64, terminated `(B,)` bool (termination probability above 0.5; always False when the
        termination head was never trained on a positive example), and a dict of `(B,)` arrays:
        ``head_reward``, ``termination_probability``, ``success_probability`` and ``success`` (bool) for the heads
        the model has, ``score`` with a scorer.

    Raises:
        ValueError: the scorer returned something that is not `(B,)` finite numbers.
    """
    batch = len(frames)
    rewards, terminated, info = np.zeros(batch), np.zeros(batch, dtype=bool), {}
    if pipeline.heads_for(embodiment) is not None:
        outcomes = pipeline.outcomes(frames, embodiment, latents=latents)
        rewards = outcomes["reward"].astype(np.float64)
        info = {"head_reward": rewards.copy()}
        if "termination_probability" in outcomes:
            terminated = outcomes["termination_probability"] > 0.5
            info["termination_probability"] = outcomes["termination_probability"]
        if "success_probability" in outcomes:
            info["success"] = outcomes["success_probability"] > 0.5
            info["success_probability"] = outcomes["success_probability"]
    if scorer is not None:
        score = np.asarray(scorer(frames, task), dtype=np.float64)
        if score.shape != (batch,) or not np.all(np.isfinite(score)):
            raise ValueError(f"scorer returned {score.shape} values (finite: {bool(np.all(np.isfinite(score)))}); "
                             f"expected ({batch},) finite numbers, one per frame")
        info["score"] = score
        rewards = score
    return rewards, terminated, info


def env_sampler(pipeline: WorldModelPipeline, sampler: SamplerSettings | None = None,
                num_inference_steps: int | None = None, timestep_spacing: str | None = None,
                context_noise: float | None = None, action_guidance_scale: float | None = None,
                decoder: str | None = None) -> SamplerSettings:
    """An env's sampler, resolved once: ``sampler`` itself, or the loose settings with the model's defaults filling
    the rest (:meth:`SamplerSettings.resolve`); applied to the pipeline (decoder and timesteps) before the first step.

    Raises:
        ValueError: both ``sampler`` and a loose setting, or a bad setting (a step count below 1, an unknown spacing
            or decoder, ``"light"`` for a model without a light decoder); the pipeline is unchanged then.
    """
    loose = {"num_inference_steps": num_inference_steps or None, "timestep_spacing": timestep_spacing,
             "context_noise": context_noise, "action_guidance_scale": action_guidance_scale, "decoder": decoder}
    if sampler is not None:
        given = sorted(key for key, value in loose.items() if value is not None)
        if given:
            raise ValueError(f"pass either sampler or the separate settings, not both (got sampler and {given})")
        if not isinstance(sampler, SamplerSettings):
            raise ValueError(f"sampler must be a SamplerSettings, got {type(sampler).__name__}")
    else:
        sampler = SamplerSettings.resolve(pipeline, **loose)
    sampler.apply(pipeline)
    return sampler


def start_clips(pipeline: WorldModelPipeline, embodiment, start_dataset=None, start_context: int = 4):
    """The start clips an env draws from on ``reset()`` without a context: the model's bundled set for the
    embodiment, or the first ``start_context`` frames of up to 100 episodes of ``start_dataset`` (a LeRobot dataset
    folder of the embodiment; :func:`~worldsim.data.starts.dataset_start_set`).

    Returns:
        ``(frames (K, n, H, W, 3) uint8, action (K, n - 1, A) float32, extras)`` tensors, extras as
        :meth:`~worldsim.pipelines.WorldModelPipeline.start_extras` (``"state"`` `(K, n, S)`, ``"task"`` `(K,)`
        where recorded); or None when the model bundles none and no dataset is given.

    Raises:
        ValueError: a dataset whose actions do not fit the embodiment, or with no episode of ``start_context`` frames;
            a ``start_context`` other than ``1 + k m`` for a model of ``k > 1`` frames per latent frame.
    """
    if start_dataset is None:
        bundled = pipeline.start_set(embodiment.name)
        return None if bundled is None else (*bundled, pipeline.start_extras(embodiment.name))
    group = pipeline.frames_per_latent
    if (start_context - 1) % group:
        raise ValueError(f"start_context {start_context} does not fit a model of {group} frames per latent frame: "
                         f"it takes 1 + {group} m context frames (e.g. {1 + group})")
    from worldsim.data.starts import dataset_start_set

    start = dataset_start_set(start_dataset, pipeline.image_size, start_context, embodiment.action_dim,
                              video_keys=pipeline.composed_cameras, tasks=pipeline.transformer.task_names or None)
    return start["frames"], start["action"], {key: start[key] for key in ("state", "task") if key in start}


def embodiment_action_space(embodiment) -> gym.Space:
    """The Gymnasium action space of one of a model's embodiments (env units).

    The space recorded with the embodiment's data (Box, Discrete, MultiBinary, MultiDiscrete, Dict) when there is
    one; otherwise a float32 Box over the action normaliser's range (e.g. an agent's target position).
    """
    if embodiment.action_space:
        return space_from_json(embodiment.action_space)
    bounds = embodiment.normalizer
    return gym.spaces.Box(bounds.minimum, bounds.maximum, dtype=np.float32)


def env_action_space(pipeline: WorldModelPipeline, embodiment) -> gym.Space:
    """The action space an imagined env of ``embodiment`` steps with: :func:`embodiment_action_space`, or for a model
    whose latent frames each hold ``k > 1`` video frames (:attr:`WorldModelPipeline.frames_per_latent`) a Box of
    shape ``(k, *shape)``: the ``k`` actions of one step, in time order, each within the embodiment's Box.

    Raises:
        ValueError: ``k > 1`` with an action space that is not a Box.
    """
    space = embodiment_action_space(embodiment)
    group = pipeline.frames_per_latent
    if group == 1:
        return space
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"a model of {group} frames per step groups Box actions; {embodiment.name!r} acts in {space}")
    return gym.spaces.Box(np.broadcast_to(space.low, (group, *space.shape)).copy(),
                          np.broadcast_to(space.high, (group, *space.shape)).copy(), dtype=space.dtype)


def env_action(action: Any, space: gym.Space, space_json: dict, group: int) -> np.ndarray:
    """A validated env action in the flat layout :meth:`WorldModelPipeline.step` takes: `(A,)` float32, or
    `(k, A)` for a step of ``group = k > 1`` actions (``space`` from :func:`env_action_space`).

    Raises:
        ValueError: as :func:`validate_action`.
    """
    valid = validate_action(action, space)
    if group == 1:
        return flatten_action(space_json, valid)
    return np.asarray(valid, dtype=np.float32).reshape(group, -1)


def validate_action(action: Any, space: gym.Space) -> Any:
    """Checks an action against its space and returns it in canonical form.

    Box actions come back as float32 arrays; Discrete as a Python int; MultiBinary / MultiDiscrete as int64 arrays;
    Dict as a dict of those.

    Raises:
        ValueError: non-numeric dtype, wrong shape, NaN / inf, a non-integer where an index is expected, or a value
            outside the space; the message names the offending value and the expected space.
    """
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(action, dict) or set(action) != set(space.spaces):
            raise ValueError(f"action {action!r} must be a dict with keys {sorted(space.spaces)} for {space}")
        return {key: validate_action(action[key], sub) for key, sub in space.spaces.items()}
    array = np.asarray(action)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
                                     or array.dtype == bool):
        raise ValueError(f"action {action!r} has dtype {array.dtype}; expected numbers for {space}")
    if array.shape != space.shape:
        raise ValueError(f"action has shape {array.shape}; expected {space.shape} for {space}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"action {array.tolist()} contains NaN or inf; expected finite values in {space}")
    if isinstance(space, gym.spaces.Box):
        array = array.astype(np.float32)
        if np.any(array < space.low) or np.any(array > space.high):
            raise ValueError(f"action {array.tolist()} is outside the action space: low {space.low.tolist()}, "
                             f"high {space.high.tolist()}")
        return array
    if np.any(array != np.round(array)):
        raise ValueError(f"action {array.tolist()} is not integer-valued; expected indices for {space}")
    integer = array.astype(np.int64)
    if not space.contains(integer if not isinstance(space, gym.spaces.Discrete) else int(integer)):
        raise ValueError(f"action {array.tolist()} is outside the action space {space}")
    return int(integer) if isinstance(space, gym.spaces.Discrete) else integer


class WorldModelEnv(gym.Env):
    """A Gymnasium env whose dynamics are a trained world model.

    Args:
        model: a pipeline folder (``checkpoints/joint``) or a loaded :class:`WorldModelPipeline`.
        render_mode: ``None`` or ``"rgb_array"`` (``render()`` returns the current frame).
        num_inference_steps: denoising steps per frame; default: the model's.
        timestep_spacing: ``"linspace"`` or ``"trailing"`` (equal steps; the few-step sampler, see
            :meth:`~worldsim.pipelines.WorldModelPipeline.set_timesteps`); default: the model's.
        decoder: ``"full"`` (the autoencoder's decoder) or ``"light"`` (the model's light decoder, about 3.5x fewer
            FLOPs per frame; :meth:`~worldsim.pipelines.WorldModelPipeline.set_decoder`, which raises ValueError when
            the model has none); default: the given pipeline's current choice, for a model folder the one its
            ``worldsim.json`` names (``decoder``; ``"full"`` when it names none).
        context_noise: history noise level; default: the model's.
        action_guidance_scale: classifier-free guidance on the action; default: the model's (1.0: off).
        device: torch device for the model.
        embodiment: which of the model's embodiments to serve (its action space and start set); default: the
            model's default embodiment.
        scorer: optional ``scorer(frames (B, H, W, 3) uint8, task) -> (B,)`` float that replaces the reward (see
            :func:`predict_outcomes`).
        task: the task text: what a task-conditioned model imagines (default: each start clip's task; an unknown
            text raises ValueError at ``reset``) and what ``scorer`` is handed.
        disagreement_samples: when >= 2, every step is imagined this many times in one batch and
            ``info["disagreement"]`` reports how much the samples differ
            (:meth:`~worldsim.pipelines.WorldModelPipeline.step_with_disagreement`); 1 (default) is off.
        start_dataset: a LeRobot dataset folder of the embodiment whose episodes' first ``start_context`` frames are
            the start set ``reset()`` draws from without a context (up to 100 clips); default: the model's bundled
            start set (:func:`start_clips`).
        start_context: frames per start clip taken from ``start_dataset``.
        sampler: a :class:`~worldsim.pipelines.SamplerSettings` instead of the separate ``num_inference_steps``,
            ``timestep_spacing``, ``context_noise``, ``action_guidance_scale`` and ``decoder`` (not both); either way
            the env resolves its sampler once into :attr:`sampler`. Default: the model's (``worldsim.json``).

    Observation: `np.ndarray` `(H, W, 3)` uint8, the imagined frame (the model's frame size); or, for a model of
    several cameras or with a state predictor for the embodiment, a ``Dict`` with one `(H, W / V, 3)` uint8 image per
    camera key and ``"observation.state"`` `(S,)` float32 (:class:`~worldsim.envs.observations.ObservationLayout`),
    the layout of the real env's LeRobot-style wrapper.
    Action: the embodiment's action space (e.g. ``Box(0, 512, (2,), float32)``, a target position;
    ``Discrete(7)``, grid moves; any Box / Discrete / MultiBinary / MultiDiscrete / Dict of those).

    ``reset(options={"context": {"observation.image": frames, "action": actions}})`` starts from real frames:
    ``frames`` `(n, H', W', 3)` uint8 (resized to the model's size if needed) and ``actions`` `(n - 1, A)`, the
    actions between consecutive frames; a Dict-observation env takes one entry per camera key instead of
    ``"observation.image"`` and ``"observation.state"`` `(n, S)`. ``options["task"]`` sets the episode's task text. Without a context the env starts from a clip of the model's bundled start
    set, chosen with the env's seeded RNG.

    >>> import gymnasium as gym, worldsim                                              # doctest: +SKIP
    >>> env = gym.make("worldsim/WorldModel-v0", model="checkpoints/joint", embodiment="minigrid")           # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                                                  # doctest: +SKIP
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample()) # doctest: +SKIP
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, model: str | Path | WorldModelPipeline, render_mode: str | None = None,
                 num_inference_steps: int | None = None, context_noise: float | None = None,
                 action_guidance_scale: float | None = None, device: str = "cpu", embodiment: str | None = None,
                 scorer=None, task: str | None = None, disagreement_samples: int = 1,
                 timestep_spacing: str | None = None, decoder: str | None = None, start_dataset=None,
                 start_context: int = 4, sampler: SamplerSettings | None = None):
        if int(disagreement_samples) < 1:
            raise ValueError(f"disagreement_samples must be >= 1, got {disagreement_samples}")
        self.disagreement_samples = int(disagreement_samples)
        if scorer is not None and not callable(scorer):
            raise ValueError(f"scorer must be callable (frames, task) -> rewards, got {type(scorer).__name__}")
        self.scorer, self.task = scorer, task
        self.pipeline = model if isinstance(model, WorldModelPipeline) else WorldModelPipeline.from_pretrained(model, device)
        self.embodiment = self.pipeline.embodiment(embodiment)
        metadata = self.pipeline.metadata
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode {render_mode!r} not supported; use None or 'rgb_array'")
        self.render_mode = render_mode
        # a step of a time-compressed model is k frames; render() shows the last, so k times fewer frames per second
        self.metadata = {"render_modes": ["rgb_array"],
                         "render_fps": self.embodiment.fps / self.pipeline.frames_per_latent}
        self.action_space = env_action_space(self.pipeline, self.embodiment)
        self._space_json = space_to_json(embodiment_action_space(self.embodiment))
        #: the sampler, resolved once (the loose settings above are shorthands for it)
        self.sampler = env_sampler(self.pipeline, sampler, num_inference_steps, timestep_spacing, context_noise,
                                   action_guidance_scale, decoder)
        self.decoder = self.sampler.decoder
        self._start = start_clips(self.pipeline, self.embodiment, start_dataset, start_context)
        self.layout = ObservationLayout(self.pipeline, self.embodiment.name,
                                        self._start is not None and "state" in self._start[2])
        self.observation_space = self.layout.space()
        self._state = None
        self._generator = torch.Generator()
        self._frame = None  # the current frame (the camera views side by side)

    def _context_from_options(self, context: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        frames, state = self.layout.context_frames(context, batched=False)
        action = np.asarray(context.get(ACTION, np.zeros((0, self.embodiment.action_dim))), dtype=np.float64)
        expected = (len(frames) - 1, self.embodiment.action_dim)
        if action.shape != expected:
            raise ValueError(f"context {ACTION!r} has shape {action.shape}; expected {expected} (one action between "
                             f"each pair of the {len(frames)} context frames, in the flat layout of "
                             f"worldsim.data.spaces)")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"context {ACTION!r} contains NaN or inf")
        return frames, action.astype(np.float32), state

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Starts a new imagined episode. See the class docstring for ``options["context"]``.

        Raises:
            ValueError: malformed context (the env keeps its previous state).
        """
        options = options or {}
        task = options.get("task")
        if task is None and self.pipeline.transformer.task_embedder is not None:
            task = self.task  # for a model without tasks the env's task is only the scorer's text
        task_ids = self.pipeline.task_ids(task, 1) if task is not None else None  # validate before touching state
        if "context" in options and options["context"] is not None:
            frames, action, state = self._context_from_options(options["context"])
            super().reset(seed=seed)
        else:
            super().reset(seed=seed)
            start = self._start
            if start is None:
                raise ValueError(f"this model has no bundled start set for {self.embodiment.name!r}; "
                                 f"pass options={{'context': {{...}}}} or start_dataset=...")
            index = int(self.np_random.integers(len(start[0])))
            frames, action = start[0][index].numpy(), start[1][index].numpy()
            state = start[2]["state"][index].numpy() if self.layout.state_dim is not None else None
            if task_ids is None and "task" in start[2]:
                task_ids = start[2]["task"][index:index + 1]
        if task_ids is None and self.pipeline.transformer.task_embedder is not None:
            task_ids = self.pipeline.task_ids(None, 1)
        self._generator.manual_seed(int(self.np_random.integers(0, 2**62)))
        self._state = self.pipeline.encode_context(frames[None], action[None], self.sampler.context_noise,
                                                   self._generator, embodiment=self.embodiment.name, task=task_ids,
                                                   observation_state=None if state is None else state[None, -1])
        self._frame = frames[-1].copy()
        return self.layout.single(self._observation_batch(), 0), self._info()

    def _observation_batch(self):
        """The current observation as a batch of one (:meth:`ObservationLayout.observe`)."""
        state = self._state.observation_state
        return self.layout.observe(self._frame[None], None if state is None else state.cpu().numpy())

    def _info(self, outcomes: dict | None = None) -> dict:
        has_heads = self.pipeline.heads_for(self.embodiment.name) is not None
        info = {"outcome_heads": has_heads, "imagined_steps": self._state.num_steps,
                "embodiment": self.embodiment.name}
        if not has_heads:
            info["note"] = NO_OUTCOME_NOTE
        for key, value in (outcomes or {}).items():
            info[key] = value[0].item()
        return info

    def step(self, action):
        """Imagines the frame that follows ``action``. For a model of ``k > 1`` frames per latent frame, ``action``
        is ``k`` actions (:func:`env_action_space`), the observation shows the last of the ``k`` imagined frames and
        ``info["frames"]`` holds all of them, `(k, H, W, 3)` uint8.

        Raises:
            RuntimeError: called before ``reset``.
            ValueError: bad action (see :func:`validate_action`); the env state is unchanged.
        """
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        action = env_action(action, self.action_space, self._space_json, self.pipeline.frames_per_latent)
        disagreement = None
        self.pipeline.set_decoder(self.decoder)  # the pipeline may be shared with an env that decodes otherwise
        if self.disagreement_samples > 1:
            self._state, disagreement = self.pipeline.step_with_disagreement(
                self._state, action[None], self.disagreement_samples, generator=self._generator,
                **self.sampler.step_kwargs())
        else:
            self._state = self.pipeline.step(self._state, action[None], generator=self._generator,
                                             **self.sampler.step_kwargs())
        self._frame = self._state.frames[0].cpu().numpy()
        reward, terminated, outcomes = predict_outcomes(self.pipeline, self._frame[None], self.scorer, self.task,
                                                        self.embodiment.name, self._state.frame_latents)
        if disagreement is not None:
            outcomes["disagreement"] = disagreement
        info = self._info(outcomes)
        if self._state.chunk_frames is not None:
            info["frames"] = self._state.chunk_frames[0].cpu().numpy()
        return self.layout.single(self._observation_batch(), 0), float(reward[0]), bool(terminated[0]), False, info

    def render(self):
        if self.render_mode == "rgb_array":
            return None if self._frame is None else self._frame.copy()
        return None
