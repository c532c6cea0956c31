"""``OutcomePredictor``: imagine the outcome of K candidate action chunks from one real context, in one batch.

The recent real frames and actions are encoded into the KV cache once; the cache is then copied K times and all
K candidates are imagined side by side, one batched step per action of the chunk. Optionally each candidate's
future is then continued in imagination by a follow-up policy (e.g. the base policy's noise-free mode) acting on the
imagined frames, so that a chunk is judged by where it leaves the scene for what comes next, not only by the reward
within its own few steps (a policy rollout as the value estimate, as in rollout-based MPC). Each imagined future is
scored by the model's reward head (the default) or success head, or by any user scorer on the imagined frames and a
task text (the hook a VLM judge plugs into).

Models that observe more than one frame are served too: a model of several cameras imagines their views side by
side in one frame, a model with a state predictor carries ``observation.state`` through every imagined step (seeded
by the last real state), and a task-conditioned model imagines the task it is given. The follow-up policy then
observes what the model's imagined env observes (:class:`~worldsim.envs.observations.ObservationLayout`): a Dict of
camera views and the predicted state. This is the runtime-steering loop of "imagine, score, execute the best" (best-of-N
selection with a learned simulator, as in world-model planning and VLA steering), written for the streaming cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from worldsim.data.frame_cache import resize_frames
from worldsim.envs.observations import ObservationLayout
from worldsim.evaluation.policy_adapters import as_policy
from worldsim.pipelines.world_model import RolloutState, WorldModelPipeline


@dataclass
class Prediction:
    """Imagined futures of K candidates.

    Attributes:
        frames: `(K, H + F, Hf, Wf, 3)` uint8 imagined frames at the model's frame size (the first imagination sample
            of each candidate; several camera views side by side for a multi-camera model): one per action of the
            candidate chunk (H), then one per follow-up step (F, 0 without a follow-up policy).
        rewards: `(K, H + F)` float32 predicted reward per frame, averaged over the imagination samples (NaN when the
            model has no outcome heads).
        scores: `(K,)` float64 the score each candidate was ranked by (higher is better).
        best: index of the highest score.
        chunk_length: H (the frames after it are the follow-up's).
        score_spread: `(K,)` float64 standard deviation of the score across the imagination samples (0 with one).
        success_probabilities: `(K, H + F)` float32 predicted success probability per frame, averaged over the
            samples, or None (no heads, or heads trained without a success label).
        states: `(K, H + F, S)` float32 the state predictor's ``observation.state`` of each imagined frame (env
            units, first sample), or None when the imagination carries no state (no states given, or no predictor).
    """

    frames: np.ndarray
    rewards: np.ndarray
    scores: np.ndarray
    best: int
    chunk_length: int
    score_spread: np.ndarray
    success_probabilities: np.ndarray | None = None
    states: np.ndarray | None = None


#: what a future's frames can be valued by (``value_key``): the outcome heads' per-frame outputs, or a dense progress
#: measure of the predicted ``observation.state`` (``state_value``)
VALUE_KEYS = ("reward", "success_probability", "state_progress")


def reduce_future(values: np.ndarray, aggregate: str) -> np.ndarray:
    """One score per future from its per-step values, as :class:`OutcomePredictor` combines them.

    Args:
        values: `(N, T)` values of N futures of T steps (any float dtype).
        aggregate: ``"max"``, ``"mean"`` or ``"last"`` (the last step's value).

    Returns:
        `(N,)` float64.

    Raises:
        ValueError: another ``aggregate``, or ``values`` that are not `(N, T)` with T >= 1.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] == 0:
        raise ValueError(f"values must be (N, T) with T >= 1, got {values.shape}")
    if aggregate == "max":
        return values.max(axis=1)
    if aggregate == "mean":
        return values.mean(axis=1)
    if aggregate == "last":
        return values[:, -1]
    raise ValueError(f"aggregate must be 'max', 'mean' or 'last', got {aggregate!r}")


class OutcomePredictor:
    """Scores candidate action chunks by imagining them from the current real observation.

    Args:
        model: a pipeline folder or a loaded :class:`WorldModelPipeline` (with outcome heads, unless ``scorer`` or
            ``value_key="state_progress"`` scores instead).
        scorer: optional ``scorer(frames (N, H + F, Hf, Wf, 3) uint8, task) -> (N,)`` float, higher is better, with
            N = K * num_samples futures (candidate-major); replaces the heads' score (and ``state_value``).
        task: the task text. It is handed to ``scorer``, and a task-conditioned model
            (``pipeline.transformer.task_embedder``) imagines every candidate under it: it must then be one of the
            model's tasks, and None imagines the null task. A model without task conditioning ignores it (only the
            scorer reads it). Settable later (``predictor.task = text``, checked the same way; ``steer-eval`` sets
            the env's task); a follow-up policy with ``set_task`` is told it.
        aggregate: how a future is scored from its frames: ``"value"`` (the value head on the final imagined frame:
            the expected discounted future reward from where the chunk leaves the scene, the default when the heads
            have a value output), ``"max"`` (the best ``value_key`` of any frame, the default otherwise), ``"last"``
            (the final frame's; the default for ``value_key="state_progress"``) or ``"mean"``.
        value_key: which per-frame value ``"max"``, ``"last"`` and ``"mean"`` aggregate: the heads' ``"reward"`` (the
            default) or ``"success_probability"`` (for a plug-in whose value is success, e.g. Meta-World:
            :attr:`~worldsim.embodiments.EmbodimentPlugin.imagined_value`), or ``"state_progress"``: ``state_value``
            of the state predictor's ``observation.state`` of every imagined frame (no heads needed; the model must
            predict the state, and :meth:`predict` must be given the context's states; ``aggregate`` defaults to
            ``"last"``). ``"value"`` reads the value head whatever this is.
        state_value: ``state_value(states (N, S) float32) -> (N,)`` float, higher is better, for
            ``value_key="state_progress"``: e.g. a plug-in's
            :meth:`~worldsim.embodiments.EmbodimentPlugin.state_progress` of the task (the distance of an object to its
            goal, read from the predicted state).
        num_inference_steps, context_noise, timestep_spacing: sampler settings (default: the model's; see
            :meth:`WorldModelPipeline.step`; 3 ``"trailing"`` steps are as faithful as the default 10 on the
            shipped model, docs/benchmarks.md).
        embodiment: which embodiment's actions the candidates are (multi-embodiment models).
        seed: seed of the imagination noise (each call advances it).
        follow_policy: optional policy that continues every candidate's future in imagination after its chunk: anything
            :func:`~worldsim.evaluation.policy_adapters.as_policy` accepts (a callable, a chunk callable, a
            LeRobot-style object, or an object with ``reset(num_envs)`` and ``act``). It is reset to
            N = K * num_samples envs per decision and observes what the model's imagined env observes
            (:attr:`layout`): `(N, Hf, Wf, 3)` uint8 frames, or for a model of several cameras or with a state
            predictor a batched Dict ``{camera: (N, Hf, Wf / V, 3) uint8, "observation.state": (N, S) float32}``
            holding the imagined views and the predicted state. The score then covers the chunk and the follow-up
            (``"max"``: the best over both; ``"value"``/``"last"``: the final frame).
        follow_steps: imagined follow-up steps per candidate (F >= 0; needs ``follow_policy`` when > 0). Each adds
            one batched imagined step per decision.
        sampler: a :class:`~worldsim.pipelines.SamplerSettings` instead of ``num_inference_steps``, ``context_noise``
            and ``timestep_spacing`` (not both); either way resolved once into :attr:`sampler` (decoder: the
            pipeline's current one unless the settings name another).
        num_samples: imagined futures per candidate (S >= 1, different noise, all in the same batch of K * S); a
            candidate's score is the mean over its samples, which averages out the sampler's noise (the futures of a
            weak model differ more between samples than between candidates). Costs S times the compute.

    Attributes:
        layout: the model's :class:`~worldsim.envs.observations.ObservationLayout` (what the follow-up policy
            observes; ``layout.state_dim`` is S when the model predicts ``observation.state``, else None).

    Raises:
        ValueError: unknown ``aggregate`` or ``value_key``, ``"value"`` for heads without a value output,
            ``"success_probability"`` for heads trained without a success label, no outcome heads and no scorer,
            ``follow_steps < 0``, ``follow_steps > 0`` without a ``follow_policy``, ``num_samples < 1``, a task the
            task-conditioned model does not know (the message lists its tasks), or ``value_key="state_progress"``
            without a callable ``state_value``, for a model without a state predictor, or with ``aggregate="value"``.
    """

    def __init__(self, model: str | Path | WorldModelPipeline, scorer: Callable | None = None,
                 task: str | None = None, aggregate: str | None = None, num_inference_steps: int | None = None,
                 context_noise: float | None = None, embodiment: str | None = None, seed: int = 0,
                 follow_policy=None, follow_steps: int = 0, timestep_spacing: str | None = None,
                 num_samples: int = 1, sampler=None, value_key: str = "reward", state_value: Callable | None = None):
        self.pipeline = model if isinstance(model, WorldModelPipeline) else WorldModelPipeline.from_pretrained(model)
        self.pipeline.require_per_frame("steering (one candidate action per video frame)")
        self.embodiment = self.pipeline.embodiment(embodiment).name
        heads = self.pipeline.heads_for(self.embodiment)
        if value_key not in VALUE_KEYS:
            raise ValueError(f"value_key must be one of {list(VALUE_KEYS)}, got {value_key!r}")
        self.layout = ObservationLayout(self.pipeline, self.embodiment, start_state=True)
        by_state = value_key == "state_progress" and scorer is None
        if state_value is not None and not by_state:
            raise ValueError(f"state_value is used only with value_key='state_progress' and no scorer; got "
                             f"value_key={value_key!r}" + (" and a scorer" if scorer is not None else ""))
        if by_state:
            if not callable(state_value):
                raise ValueError(f"value_key='state_progress' needs state_value, a callable of the predicted states "
                                 f"(N, S) -> (N,), e.g. the plug-in's state_progress for the task; got "
                                 f"{type(state_value).__name__}")
            if self.layout.state_dim is None:
                raise ValueError(f"value_key='state_progress' reads the predicted observation.state, but the model has "
                                 f"no state predictor for {self.embodiment!r} (worldsim train-state)")
            aggregate = aggregate or "last"
            if aggregate == "value":
                raise ValueError("aggregate='value' reads the value head; with value_key='state_progress' use 'last', "
                                 "'max' or 'mean'")
        elif scorer is None and heads is None:
            raise ValueError(f"the model has no outcome heads for {self.embodiment!r}; pass a scorer or train heads "
                             f"(worldsim train-heads)")
        has_value = heads is not None and heads.config.value_discount is not None
        if aggregate is None:
            aggregate = "value" if has_value else "max"
        if aggregate not in ("value", "max", "last", "mean"):
            raise ValueError(f"aggregate must be 'value', 'max', 'last' or 'mean', got {aggregate!r}")
        if aggregate == "value" and scorer is None and not has_value:
            raise ValueError("aggregate='value' needs heads with a value output (worldsim train-heads "
                             "--value-discount)")
        if value_key == "success_probability" and scorer is None and not heads.config.success_trained:
            raise ValueError("value_key='success_probability' needs heads trained with successes in their data (these "
                             "heads never saw one)")
        if scorer is not None and not callable(scorer):
            raise ValueError(f"scorer must be callable, got {type(scorer).__name__}")
        if int(follow_steps) != follow_steps or follow_steps < 0:
            raise ValueError(f"follow_steps must be an integer >= 0, got {follow_steps!r}")
        if follow_steps > 0 and follow_policy is None:
            raise ValueError(f"follow_steps={follow_steps} needs a follow_policy to act in the imagined future")
        from worldsim.envs.world_model_env import embodiment_action_space

        action_shape = embodiment_action_space(self.pipeline.embodiment(self.embodiment)).shape
        self.follow_policy = None if follow_policy is None else as_policy(follow_policy, action_shape)
        self.follow_steps = int(follow_steps)
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
        self.num_samples = int(num_samples)
        self.scorer, self.aggregate, self.value_key = scorer, aggregate, value_key
        self.state_value = state_value if by_state else None
        self.task = task  # checked by the setter
        if sampler is not None and (num_inference_steps or context_noise is not None or timestep_spacing):
            raise ValueError("pass either sampler or num_inference_steps / context_noise / timestep_spacing, not both")
        #: the imagination's sampler, resolved once (bad settings fail here)
        self.sampler = sampler or self.pipeline.sampler_settings(
            num_inference_steps=num_inference_steps, context_noise=context_noise, timestep_spacing=timestep_spacing)
        # what the caller asked for (None: the model's default), as reports record it
        self.num_inference_steps, self.context_noise = num_inference_steps, context_noise
        self.timestep_spacing = timestep_spacing
        if sampler is not None:
            self.num_inference_steps, self.context_noise = sampler.num_inference_steps, sampler.context_noise
            self.timestep_spacing = sampler.timestep_spacing
        self.generator = torch.Generator().manual_seed(seed)
        self.last_prediction: Prediction | None = None  # the most recent decision's futures and scores

    @property
    def task(self) -> str | None:
        """The task text (the scorer's, and what a task-conditioned model imagines; see the class docstring)."""
        return self._task

    @task.setter
    def task(self, task: str | None) -> None:
        if task is not None and not isinstance(task, str):
            raise ValueError(f"task must be a text or None, got {type(task).__name__}")
        if self.is_task_conditioned:
            self.pipeline.task_ids(task, 1)  # a text the model does not know fails here, naming the known ones
        self._task = task
        if task is not None and callable(getattr(self.follow_policy, "set_task", None)):
            self.follow_policy.set_task(task)

    @property
    def is_task_conditioned(self) -> bool:
        """Whether the model imagines a given task (its transformer has a task embedder)."""
        return self.pipeline.transformer.task_embedder is not None

    @property
    def condition_task(self) -> str | None:
        """The task the imagination is conditioned on: :attr:`task` for a task-conditioned model, else None."""
        return self._task if self.is_task_conditioned else None

    def _check_states(self, states, count: int) -> np.ndarray | None:
        """``states`` as `(count, S)` float32, checked against the model's state predictor; None stays None."""
        if states is None:
            return None
        if self.layout.state_dim is None:
            raise ValueError(f"states were given but the model has no state predictor for {self.embodiment!r}; "
                             f"pass states=None")
        states = np.asarray(states, dtype=np.float32)
        if states.shape != (count, self.layout.state_dim) or not np.all(np.isfinite(states)):
            raise ValueError(f"states must be finite float32 (n, S) = ({count}, {self.layout.state_dim}) (one "
                             f"observation.state per context frame), got shape {states.shape}")
        return states

    def encode(self, frames: np.ndarray, actions: np.ndarray, states: np.ndarray | None = None) -> RolloutState:
        """Encodes the recent real context into the KV cache (once per decision).

        Args:
            frames: `(n, H', W', 3)` uint8 real frames in the model's layout (several camera views already side by
                side, :meth:`~worldsim.envs.observations.ObservationLayout.from_real`), oldest first; resized to the
                model's :attr:`~worldsim.pipelines.WorldModelPipeline.frame_size`.
            actions: `(n - 1, A)` float32 env-unit actions between them.
            states: `(n, S)` float32 env-unit ``observation.state`` of the frames, or None; the last one seeds the
                state predictor (the imagined frames then carry predicted states). Only for a model with a state
                predictor for the embodiment.

        Returns:
            A :class:`RolloutState` of batch 1, conditioned on :attr:`condition_task`.

        Raises:
            ValueError: frames that are not uint8 `(n, H', W', 3)`, actions of the wrong shape, states of the wrong
                shape or not finite, or states for a model without a state predictor.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.dtype != np.uint8 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (n, H, W, 3), got {frames.dtype} {frames.shape}")
        states = self._check_states(states, len(frames))
        frames = resize_frames(frames, self.pipeline.frame_size)
        return self.pipeline.encode_context(frames[None], np.asarray(actions, dtype=np.float32)[None],
                                            self.sampler.context_noise, self.generator, embodiment=self.embodiment,
                                            task=self.condition_task,
                                            observation_state=None if states is None else states[-1:])

    @torch.no_grad()
    def predict(self, frames: np.ndarray, actions: np.ndarray, candidates: np.ndarray,
                states: np.ndarray | None = None) -> Prediction:
        """Imagines and scores every candidate chunk.

        Args:
            frames: `(n, H', W', 3)` uint8 recent real frames in the model's layout, oldest first (resized to the
                model's frame size; see :meth:`encode`).
            actions: `(n - 1, A)` float32 env-unit actions between them.
            candidates: `(K, H, A)` float32 env-unit action chunks to compare.
            states: `(n, S)` float32 real ``observation.state`` of the frames (a model with a state predictor), or
                None. Needed when a follow-up policy runs and the model observes the state (it reads the predicted
                state), and with ``value_key="state_progress"`` (it values the predicted state); otherwise optional
                (with them, :attr:`Prediction.states` holds the predicted states).

        Returns:
            :class:`Prediction`.

        Raises:
            ValueError: malformed frames, actions, states or candidates (the message names the shape expected), no
                states where the follow-up policy observes them or ``value_key="state_progress"`` values them, or a
                scorer (``state_value``) output that is not one finite number per future (per imagined state).
        """
        candidates = np.asarray(candidates, dtype=np.float32)
        action_dim = self.pipeline.embodiment(self.embodiment).action_dim
        if candidates.ndim != 3 or candidates.shape[-1] != action_dim or 0 in candidates.shape[:2]:
            raise ValueError(f"candidates must be (K, H, {action_dim}) with K, H >= 1, got {candidates.shape}")
        if not np.all(np.isfinite(candidates)):
            raise ValueError("candidates contain NaN or inf")
        if self.follow_steps and self.layout.state_dim is not None and states is None:
            raise ValueError(f"the follow-up policy observes observation.state (the model predicts it): pass the "
                             f"context frames' states, shape (n, {self.layout.state_dim})")
        if self.state_value is not None and states is None:
            raise ValueError(f"value_key='state_progress' values the predicted observation.state: pass the context "
                             f"frames' states, shape (n, {self.layout.state_dim})")
        self.pipeline.set_decoder(self.sampler.decoder)  # the pipeline may be shared with an env that decodes otherwise
        shared = self.encode(frames, actions, states)  # the context is encoded once, not K times
        count, horizon = candidates.shape[:2]
        runs = count * self.num_samples  # candidate-major: the samples of candidate k are rows k*S .. k*S + S - 1
        copies = torch.zeros(runs, dtype=torch.long)
        state = shared.select(copies)
        chunks = np.repeat(candidates, self.num_samples, axis=0)
        imagined, imagined_states = [], []

        def keep(rollout) -> None:
            imagined.append(rollout.frames.cpu().numpy())  # (K * S, Hf, Wf, 3)
            if rollout.observation_state is not None:
                imagined_states.append(rollout.observation_state.float().cpu().numpy())  # (K * S, S_dim)

        for step in range(horizon):
            state = self.pipeline.step(state, chunks[:, step], generator=self.generator, **self.sampler.step_kwargs())
            keep(state)
        if self.follow_steps:
            self.follow_policy.reset(runs)
            for _ in range(self.follow_steps):
                observation = self.layout.observe(imagined[-1], imagined_states[-1] if imagined_states else None)
                actions = np.asarray(self.follow_policy.act(observation), dtype=np.float32)
                state = self.pipeline.step(state, actions.reshape(runs, -1), generator=self.generator,
                                           **self.sampler.step_kwargs())
                keep(state)
        futures = np.stack(imagined, axis=1)  # (K * S, H + F, Hf, Wf, 3)
        length = futures.shape[1]
        rewards = np.full((runs, length), np.nan, dtype=np.float32)
        values = success = None
        if self.pipeline.heads_for(self.embodiment) is not None:
            outcomes = self.pipeline.outcomes(futures.reshape(-1, *futures.shape[2:]), self.embodiment)
            rewards = outcomes["reward"].reshape(runs, length)
            if "value" in outcomes:
                values = outcomes["value"].reshape(runs, length)
            if "success_probability" in outcomes:
                success = outcomes["success_probability"].reshape(runs, length)
        if self.scorer is not None:
            scores = np.asarray(self.scorer(futures, self.task), dtype=np.float64)
            if scores.shape != (runs,) or not np.all(np.isfinite(scores)):
                raise ValueError(f"scorer returned {scores.shape} values; expected ({runs},) finite numbers")
        elif self.aggregate == "value":
            scores = values[:, -1].astype(np.float64)
        else:
            if self.state_value is not None:
                flat = np.stack(imagined_states, axis=1).reshape(runs * length, -1)
                valued = np.asarray(self.state_value(flat), dtype=np.float64)
                if valued.shape != (runs * length,):
                    raise ValueError(f"state_value returned shape {valued.shape} for {runs * length} states; "
                                     f"expected ({runs * length},)")
                if not np.all(np.isfinite(valued)):
                    raise ValueError(f"state_value returned {int((~np.isfinite(valued)).sum())} non-finite values of "
                                     f"{runs * length}")
                valued = valued.reshape(runs, length)
            else:
                valued = rewards if self.value_key == "reward" else success
            scores = reduce_future(valued, self.aggregate)
        per_sample = scores.reshape(count, self.num_samples)
        scores = per_sample.mean(axis=1)
        first = np.arange(count) * self.num_samples
        per_candidate = lambda per_run: per_run.reshape(count, self.num_samples, length).mean(1)  # noqa: E731
        self.last_prediction = Prediction(
            futures[first], per_candidate(rewards), scores, int(np.argmax(scores)), horizon, per_sample.std(axis=1),
            success_probabilities=None if success is None else per_candidate(success),
            states=np.stack(imagined_states, axis=1)[first] if imagined_states else None)
        return self.last_prediction
