"""Policy ranking in imagination against the real env or logged episodes (``worldsim rank``).

Protocol (the same for every embodiment; what is specific to an env comes from its plug-in,
:class:`~worldsim.embodiments.EmbodimentPlugin`):

1. Initial states are the plug-in's starts ``seed .. seed + num_states - 1``
   (:meth:`~worldsim.embodiments.EmbodimentPlugin.reset_start`). From each, the plug-in's context policy plays
   ``num_context - 1`` steps (:meth:`~worldsim.embodiments.EmbodimentPlugin.context_policy`; e.g. an agent holding
   still); those real frames and actions are the shared start of the real and the imagined episode, so both begin in
   exactly the same state.
2. Real value: each policy then acts for ``horizon`` steps in the real env (it sees the frames at the model's
   resolution, so it meets the same input in both worlds); each step's value is the plug-in's
   (:meth:`~worldsim.embodiments.EmbodimentPlugin.step_value`, by default the reward) and the episode's value their
   largest (``value_aggregation="max"``: a goal coverage, a success) or their sum (``"sum"``: a return). Success is
   the plug-in's :meth:`~worldsim.embodiments.EmbodimentPlugin.is_success` at any step.
3. Imagined value: the same policy acts for ``horizon`` steps in :class:`~worldsim.envs.WorldModelVectorEnv`,
   all states in one batch, from the same real context; the rewards are the model's outcome heads' for the
   embodiment. With ``"max"``, the predicted rewards are noisier than the real ones and the largest of 64 noisy
   numbers is biased upwards, so each imagined episode's rewards first pass a centred running median of width
   ``reward_median`` (default 3; :func:`episode_values`), which keeps a trend and drops single-frame spikes. With
   ``samples > 1`` the imagination is repeated with other seeds; the spread across samples is reported per policy
   and widens its interval.
4. A stochastic policy draws the same randomness in both worlds from the same start (common random numbers): a
   policy whose ``reset`` takes ``seeds`` (:func:`reset_policy`) is reset with each episode's start seed, in the
   real env one episode at a time and in imagination for the whole batch, so the real and the imagined episode of a
   start differ only by the world. Without it, a policy reset for one real episode at a time would replay its first
   env's random stream in every real episode: every start would share one draw of its noise.
5. Across policies: Pearson, Spearman, Kendall and MMRV (:mod:`worldsim.evaluation.ranking_metrics`) between the
   imagined and the real mean values, each with a paired bootstrap 95% interval over the initial states (another
   set of states would give another ranking); per policy, bootstrap 95% intervals of the values.

Without a real env (:func:`rank_from_dataset`), the initial states are the first frames of recorded episodes and a
policy's real value is the value of its own recorded episodes, found by the policy name each episode carries.
"""

from __future__ import annotations

import inspect
import operator
import time
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from worldsim.constants import OBS_STATE
from worldsim.data.frame_cache import resize_frames
from worldsim.data.spaces import flatten_action, space_to_json
from worldsim.evaluation.policy_adapters import as_policy
from worldsim.evaluation.ranking_metrics import (AGREEMENT_METRICS, agreement_intervals, bootstrap_mean_interval,
                                                 ranking_agreement)
from worldsim.evaluation.report import (check_mergeable, check_new_states, format_interval, markdown_lines,
                                        mean_interval, pyplot, save_figure, side_by_side, write_html_page,
                                        write_row_videos)

# running-median width of ``worldsim rank`` since 2026-11-24: chosen on a dev set of other initial states, then
# checked against the raw maximum on the 100 test states (docs/results.md, "Imagined values: a running median")
DEFAULT_REWARD_MEDIAN = 3


def check_reward_median(width) -> int:
    """A running-median width for :func:`episode_values`, checked.

    Returns:
        ``width`` as an ``int`` (a step count: 1 means no smoothing).

    Raises:
        ValueError: ``width`` is not an odd integer >= 1 (a bool, a float, 0, an even or a negative number),
            named in the message.
    """
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1 or width % 2 == 0:
        raise ValueError(f"reward_median must be an odd integer >= 1 (1: no smoothing), got {width!r}")
    return int(width)


def episode_values(rewards: np.ndarray, in_episode: np.ndarray, reward_median: int = 1,
                   aggregation: str = "max") -> np.ndarray:
    """Each episode's value: its largest per-step reward after an optional centred running median, or its return.

    Args:
        rewards: `(S, T)` float, the reward of each of the ``T`` steps of ``S`` episodes.
        in_episode: `(S, T)` bool, which steps belong to the episode: a prefix of each row that holds at least the
            first step (steps after an episode ended belong to the next, autoreset episode).
        reward_median: width of the running median (odd, >= 1; 1 takes the raw maximum), for ``"max"`` only. The
            window is centred and cut at the episode's ends, whose values are repeated
            (``scipy.ndimage.median_filter``, ``mode="nearest"``), so a monotone trace is kept exactly and a
            single-step spike is removed, except at the first and the last step, which are kept (there a spike and
            the start of a rise look alike; an episode that ends on reaching a goal keeps its last reward).
        aggregation: ``"max"`` or ``"sum"`` (the episode's return; no median).

    Returns:
        `(S,)` float64 values.

    Raises:
        ValueError: shapes that differ or are not 2-D, a row of ``in_episode`` that is not a non-empty prefix, a
            bad ``reward_median`` or an unknown ``aggregation``.
    """
    from scipy.ndimage import median_filter

    width = check_reward_median(reward_median)
    if aggregation not in ("max", "sum"):
        raise ValueError(f"aggregation must be 'max' or 'sum', got {aggregation!r}")
    rewards, in_episode = np.asarray(rewards, dtype=np.float64), np.asarray(in_episode, dtype=bool)
    if rewards.ndim != 2 or rewards.shape != in_episode.shape:
        raise ValueError(f"rewards {rewards.shape} and in_episode {in_episode.shape} must be the same (S, T) shape")
    lengths = in_episode.sum(1)
    prefix = np.arange(rewards.shape[1])[None, :] < lengths[:, None]
    if rewards.shape[1] == 0 or (lengths < 1).any() or (prefix != in_episode).any():
        raise ValueError("in_episode must mark a non-empty prefix of every episode's steps")
    if aggregation == "sum":
        return np.where(prefix, rewards, 0.0).sum(1)
    last = rewards[np.arange(len(rewards)), lengths - 1]
    padded = np.where(prefix, rewards, last[:, None])  # the window's "nearest" edge at the episode's own end
    if width > 1:
        padded = median_filter(padded, size=(1, width), mode="nearest")
    return np.where(prefix, padded, -np.inf).max(1)


class _FrameLayout:
    """The frame-only observation of a model of ``size``: a real observation's frame, resized (see
    :meth:`~worldsim.envs.observations.ObservationLayout.from_real`)."""

    is_dict = False

    def __init__(self, size):
        self.frame_size = size

    def from_real(self, observation, env=None):
        from worldsim.data.collect import _pixels

        frame = resize_frames(np.asarray(_pixels(observation, env))[None], self.frame_size)[0]
        return frame, frame, None


def model_layout(pipeline, embodiment: str | None = None):
    """What ``pipeline``'s imagined env observes for ``embodiment``, which the real env's observations are converted
    to: an :class:`~worldsim.envs.observations.ObservationLayout` (a frame, or a Dict of camera views and the robot
    state when the model has several cameras or a state predictor)."""
    from worldsim.envs.observations import ObservationLayout

    return ObservationLayout(pipeline, pipeline.embodiment(embodiment).name, start_state=True)


def _batched(observation):
    """One env's observation as a batch of one (an array, or a dict of arrays)."""
    if isinstance(observation, dict):
        return {key: np.asarray(value)[None] for key, value in observation.items()}
    return np.asarray(observation)[None]


def _play_context(plugin, env, seed: int, num_context: int, layout, frames: bool = True):
    """Resets ``env`` to start ``seed`` and plays the plug-in's context steps.

    Returns:
        ``(observation, frames (num_context, H, W, 3) uint8, actions (num_context - 1, A) float32 flat,
        states (num_context, S) float32 or None)``: the model's frames and states (``layout.from_real``); with
        ``frames=False`` only the observation is read (frames and states are None).
    """
    space = space_to_json(env.action_space)
    observation, info = plugin.reset_start(env, seed)
    context = plugin.context_policy(env)
    seen = [layout.from_real(observation, env)[1:]] if frames else []
    actions = []
    for _ in range(num_context - 1):
        action = context(observation, info)
        observation, _, _, _, info = env.step(action)
        if frames:
            seen.append(layout.from_real(observation, env)[1:])
        actions.append(flatten_action(space, action))
    flat = np.stack(actions) if actions else np.zeros((0, len(flatten_action(space, env.action_space.sample()))))
    if not frames:
        return observation, None, flat.astype(np.float32), None
    states = None if seen[0][1] is None else np.stack([state for _, state in seen]).astype(np.float32)
    return observation, np.stack([frame for frame, _ in seen]), flat.astype(np.float32), states


def real_start_clips(plugin, seeds: list[int], num_context: int, layout, env_id: str | None = None) -> dict:
    """Real start clips: the plug-in's start of each seed, then ``num_context - 1`` context steps.

    Args:
        plugin: the :class:`~worldsim.embodiments.EmbodimentPlugin` of the real env.
        layout: the model's observation (:func:`model_layout`), or a frame size (an int or ``(H, W)``).
        env_id: the plug-in's env to make (a task of a multi-task plug-in; None: its default).

    Returns:
        ``{"frames": (S, num_context, H, W, 3) uint8, "actions": (S, num_context - 1, A) float32 (the flat action
        layout, env units), "states": (S, num_context, D) float32 or None}``; :func:`run_real` replays the same steps,
        so the real episode starts from the same state.
    """
    layout = layout if hasattr(layout, "from_real") else _FrameLayout(layout)
    env = plugin.make_env(env_id)
    frames, actions, states = [], [], []
    try:
        for seed in seeds:
            _, clip, clip_actions, clip_states = _play_context(plugin, env, seed, num_context, layout)
            frames.append(clip)
            actions.append(clip_actions)
            states.append(clip_states)
    finally:
        env.close()
    return {"frames": np.stack(frames), "actions": np.stack(actions).astype(np.float32),
            "states": None if states[0] is None else np.stack(states)}


def real_starts(plugin, seeds: list[int], num_context: int, image_size, env_id: str | None = None):
    """The frames and actions of :func:`real_start_clips` (a frame-only model of ``image_size``, an int or
    ``(H, W)``, or a model's :func:`model_layout`): `(S, num_context, H, W, 3)` uint8 and
    `(S, num_context - 1, A)` float32."""
    clips = real_start_clips(plugin, seeds, num_context, image_size, env_id)
    return clips["frames"], clips["actions"]


def set_policy_task(policy, task: str | None) -> None:
    """Tells a policy that takes an instruction which task it plays: a policy (or adapter) with a ``set_task(text)``
    method, such as :class:`~worldsim.evaluation.policy_adapters.LeRobotPolicy` (which then passes
    ``batch["task"]`` to ``select_action``), is called with ``task``; other policies are left as they are. Nothing
    happens for ``task=None``."""
    if task is not None and callable(getattr(policy, "set_task", None)):
        policy.set_task(task)


def _reads_state_only(policy, layout) -> bool:
    """Whether ``policy`` declares (``input_keys``) that it reads no camera of a Dict layout."""
    keys = getattr(policy, "input_keys", None)
    return bool(layout.is_dict and keys is not None and not set(keys) & set(layout.cameras))


def reset_policy(policy, num_envs: int, seeds) -> None:
    """Starts ``num_envs`` episodes of ``policy``, each with its own random stream where the policy allows it.

    A policy whose ``reset`` accepts a ``seeds`` keyword (every built-in plug-in's stochastic zoo policies do) gets
    ``seeds``, one int per env: the start seed of each episode, so that the same start draws the
    same noise in the real env (one episode at a time) and in imagination (a batch). Any other policy gets
    ``reset(num_envs)``, as the policy protocol of :func:`~worldsim.evaluation.policy_adapters.as_policy` defines it.

    Args:
        policy: a batched policy (``reset``, ``act``).
        num_envs: N, the episodes about to run together.
        seeds: N ints (Python or numpy integers), each episode's start seed.

    Raises:
        ValueError: ``seeds`` not N integers (a float or bool among them, or another count).
    """
    given = list(seeds)
    try:
        if any(isinstance(seed, bool) for seed in given):
            raise TypeError
        seeds = [operator.index(seed) for seed in given]
    except TypeError:
        raise ValueError(f"reset_policy needs integer seeds, got {given!r}") from None
    if len(seeds) != num_envs:
        raise ValueError(f"reset_policy needs one integer seed per env: {num_envs} envs, got {seeds!r}")
    try:
        takes_seeds = "seeds" in inspect.signature(policy.reset).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        takes_seeds = False
    if takes_seeds:
        policy.reset(num_envs, seeds=seeds)
    else:
        policy.reset(num_envs)


def run_real(plugin, policy, seeds: list[int], num_context: int, horizon: int, image_size,
             keep_frames: int = 1, progress: bool = False, env_id: str | None = None) -> dict:
    """Runs ``policy`` in the plug-in's real env from each seed's start (see the module docstring).

    A policy that declares ``input_keys`` naming no camera (it reads the state alone, such as the Meta-World zoo)
    runs in the plug-in's state-only env (:attr:`~worldsim.embodiments.EmbodimentPlugin.state_only_env_kwargs`, where
    the plug-in has one): the same physics without rendering, except on the ``keep_frames`` episodes whose video is
    kept. A policy whose ``reset`` takes ``seeds`` is reset with each episode's seed (:func:`reset_policy`).

    Args:
        image_size: the model's observation (:func:`model_layout`: the policy gets each real observation as the
            imagined env would give it, cameras resized, with the state), or a frame size (an int or ``(H, W)``).
        env_id: the plug-in's env (a task of a multi-task plug-in; None: its default).

    Returns:
        ``{"values": (S,), "success": (S,) bool, "returns": (S,) float64 (the sum of the env's rewards),
        "frames": (keep_frames, horizon, H, W, 3) uint8}``.
    """
    layout = image_size if hasattr(image_size, "from_real") else _FrameLayout(image_size)
    state_only = _reads_state_only(policy, layout) and plugin.state_only_env_kwargs is not None
    env = plugin.make_env(env_id)
    fast = plugin.make_env(env_id, **plugin.state_only_env_kwargs) if state_only else None
    values, successes, returns, videos = [], [], [], []
    try:
        for index, seed in enumerate(tqdm(seeds, desc="real episodes", disable=not progress, leave=False)):
            filmed = index < keep_frames
            world = fast if state_only and not filmed else env
            observation, _, _, _ = _play_context(plugin, world, seed, num_context, layout, frames=False)
            reset_policy(policy, 1, [seed])
            steps, success, video, total = [], False, [], 0.0
            for _ in range(horizon):
                seen = ({OBS_STATE: np.asarray(observation[OBS_STATE], np.float32)} if world is fast
                        else layout.from_real(observation, world)[0])
                observation, reward, terminated, truncated, info = world.step(policy.act(_batched(seen))[0])
                value = plugin.step_value(float(reward), bool(terminated), info)
                steps.append(value)
                total += float(reward)
                success = success or plugin.is_success(value, info)
                if filmed:
                    video.append(layout.from_real(observation, world)[1])
                if terminated or truncated:
                    break
            if filmed:
                video += [video[-1]] * (horizon - len(video))
                videos.append(np.stack(video))
            values.append(max(steps) if plugin.value_aggregation == "max" else float(np.sum(steps)))
            successes.append(success)
            returns.append(total)
    finally:
        env.close()
        if fast is not None:
            fast.close()
    return {"values": np.asarray(values), "success": np.asarray(successes), "returns": np.asarray(returns),
            "frames": np.asarray(videos)}


def run_imagined(pipeline, policy, frames: np.ndarray, actions: np.ndarray, horizon: int, seed: int = 0,
                 batch_size: int = 64, keep_frames: int = 1, progress: bool = False, offset: int = 0,
                 num_inference_steps: int | None = None, timestep_spacing: str | None = None,
                 reward_median: int = DEFAULT_REWARD_MEDIAN, embodiment: str | None = None,
                 aggregation: str = "max", sampler=None, states: np.ndarray | None = None, task: str | None = None,
                 value_key: str = "reward", state_value: Callable | None = None,
                 policy_seeds=None) -> dict:
    """Runs ``policy`` in the vector env from real start clips, ``batch_size`` states per batch.

    The batch of states ``[start, stop)`` is reset with seed ``seed + offset + start``: ``offset`` is the index of
    ``frames[0]`` among all states, so a shard of the states (:func:`rank_policies` under several processes) gives
    exactly the values the whole run gives for them. ``sampler`` (a :class:`~worldsim.pipelines.SamplerSettings`)
    is how every frame is imagined; without it ``num_inference_steps`` and ``timestep_spacing`` (None: the model's)
    are resolved with the model's defaults and the pipeline's current decoder.

    Args:
        frames, actions: the start clips `(S, n, H, W, 3)` uint8 and `(S, n - 1, A)` float32
            (:func:`real_start_clips`).
        states: `(S, n, D)` float32, the clips' ``observation.state`` (required when the imagined env observes a
            state: a model with a state predictor).
        task: the task text every imagined episode is conditioned on (a task-conditioned model; None: each clip's
            null task). A policy with a ``task`` attribute is told it (:func:`set_policy_task`).
        embodiment: the model's embodiment whose actions the policy takes (default: the model's).
        aggregation: ``"max"`` or ``"sum"`` (:func:`episode_values`).
        value_key: the per-step number valued: ``"reward"`` (the heads' reward, or a scorer's) or an entry of the
            env's infos such as ``"success_probability"`` (the plug-in's
            :attr:`~worldsim.embodiments.EmbodimentPlugin.imagined_value`), or ``"state_success"``: ``state_value``
            of each imagined step's predicted ``observation.state``.
        state_value: ``(N, S) float32 states -> (N,) values`` (the plug-in's
            :meth:`~worldsim.embodiments.EmbodimentPlugin.state_success`), for ``value_key="state_success"``.
        policy_seeds: S ints, each clip's start seed, handed to a policy whose ``reset`` takes ``seeds``
            (:func:`reset_policy`), so that it draws the noise it draws from that start in the real env; None:
            ``reset(count)`` for every policy.

    Returns:
        ``{"values": (S,), "returns": (S,) float64 (each episode's summed predicted reward), "rewards": (S, horizon)
        float32 (the valued numbers), "in_episode": (S, horizon) bool, "frames": (keep_frames, horizon, H, W, 3)
        uint8}``; values aggregate each episode's valued numbers (the largest after a running median of width
        ``reward_median``, or the sum: :func:`episode_values`).

    Raises:
        RuntimeError: the model has no outcome heads for the embodiment (nothing to score imagined frames with).
        ValueError: a bad ``reward_median`` or ``aggregation``, or ``policy_seeds`` not one per clip, before
            anything runs; a ``value_key`` the env's infos do not have, at the first step.
    """
    from worldsim.envs import WorldModelVectorEnv

    check_reward_median(reward_median)
    sampler = sampler or pipeline.sampler_settings(num_inference_steps=num_inference_steps,
                                                   timestep_spacing=timestep_spacing)
    if value_key == "state_success" and (state_value is None or states is None):
        raise ValueError("value_key='state_success' needs state_value and the start clips' states")
    if aggregation not in ("max", "sum"):
        raise ValueError(f"aggregation must be 'max' or 'sum', got {aggregation!r}")
    if policy_seeds is not None and len(policy_seeds) != len(frames):
        raise ValueError(f"policy_seeds must be one int per start clip ({len(frames)}), got {len(policy_seeds)}")
    if pipeline.heads_for(embodiment) is None:
        raise RuntimeError(f"ranking needs predicted rewards: train the model's outcome heads for "
                           f"{pipeline.embodiment(embodiment).name!r} (worldsim train-heads)")
    if pipeline.transformer.task_embedder is None:
        task = None  # a model without task conditioning imagines every task alike
    set_policy_task(policy, task)
    rewards, summed, in_episode, video = [], [], [], None
    for start in range(0, len(frames), batch_size):
        chunk = slice(start, start + batch_size)
        count = len(frames[chunk])
        envs = WorldModelVectorEnv(pipeline, num_envs=count, embodiment=embodiment, sampler=sampler,
                                   render_mode="rgb_array", task=task)
        context = {"observation.image": frames[chunk], "action": actions[chunk]}
        if states is not None and envs.layout.state_dim is not None:
            context["observation.state"] = states[chunk]
        observation, _ = envs.reset(seed=seed + offset + start, options={"context": context})
        if policy_seeds is None:
            policy.reset(count)
        else:
            reset_policy(policy, count, policy_seeds[chunk])
        running = np.ones(count, dtype=bool)  # an episode that ended is autoreset: later frames are not its own
        trace, mask, kept, total = [], [], [], np.zeros(count)
        for _ in tqdm(range(horizon), desc="imagined steps", disable=not progress, leave=False):
            observation, reward, terminated, truncated, infos = envs.step(policy.act(observation))
            if value_key == "state_success":
                trace.append(np.asarray(state_value(observation["observation.state"]), dtype=np.float32))
            elif value_key != "reward" and value_key not in infos:
                raise ValueError(f"the imagined env's infos have no {value_key!r} (they have {sorted(infos)}); "
                                 "train the outcome heads it comes from or value 'reward'")
            else:
                trace.append(np.asarray(reward if value_key == "reward" else infos[value_key], dtype=np.float32))
            mask.append(running.copy())
            total += np.where(running, np.asarray(reward, dtype=np.float64), 0.0)
            running &= ~(terminated | truncated)
            if start == 0:
                kept.append(envs.render()[:keep_frames])  # the model's frames (camera views side by side)
        if start == 0:
            video = np.stack(kept, axis=1)
        rewards.append(np.stack(trace, axis=1))
        summed.append(total)
        in_episode.append(np.stack(mask, axis=1))
    rewards, in_episode = np.concatenate(rewards), np.concatenate(in_episode)
    return {"values": episode_values(rewards, in_episode, reward_median, aggregation), "returns": np.concatenate(summed),
            "rewards": rewards, "in_episode": in_episode, "frames": video}


def _rank_sampler(pipeline, sampler, num_inference_steps, timestep_spacing):
    """The ranking's sampler: ``sampler``, or the shorthands resolved with the model's defaults (not both)."""
    if sampler is not None and (num_inference_steps or timestep_spacing):
        raise ValueError("pass either sampler or num_inference_steps / timestep_spacing, not both")
    return sampler or pipeline.sampler_settings(num_inference_steps=num_inference_steps,
                                                timestep_spacing=timestep_spacing)


def state_batches(num_states: int, batch_size: int, process_index: int = 0, num_processes: int = 1
                  ) -> list[tuple[int, int]]:
    """The ``[start, stop)`` batches of initial states that process ``process_index`` of ``num_processes`` runs.

    States are cut into batches of ``batch_size`` (the unit the vector env imagines together) and the batches are
    dealt round-robin, so every batch is the same with or without sharding and the gathered values are identical.

    Raises:
        ValueError: ``process_index`` outside ``[0, num_processes)`` or a non-positive size.
    """
    if num_states < 1 or batch_size < 1 or not 0 <= process_index < num_processes:
        raise ValueError(f"need num_states >= 1, batch_size >= 1 and 0 <= process_index < num_processes, got "
                         f"{num_states}, {batch_size}, {process_index}, {num_processes}")
    batches = [(start, min(start + batch_size, num_states)) for start in range(0, num_states, batch_size)]
    return batches[process_index::num_processes]


def _gather_single(values: list) -> list:
    return values


IMAGINED_VALUES = ("reward", "success_probability", "state_success")


#: the plug-in methods that read ``observation.state``: name -> (what the plug-in lacks without it, what to use instead)
STATE_RULES = {
    "state_success": ("success rule on the state", "value imagined episodes by 'reward' or 'success_probability'"),
    "state_progress": ("progress measure of the state", "score futures by the heads' 'reward' or "
                                                        "'success_probability'"),
}


def state_rule_for(pipeline, plugin, embodiment: str | None, env_id: str | None,
                   rule: str) -> Callable[[np.ndarray], np.ndarray]:
    """A plug-in's rule on the predicted ``observation.state`` for ``env_id``, checked against the model: what
    ranking values imagined episodes by (``"state_success"``,
    :meth:`~worldsim.embodiments.EmbodimentPlugin.state_success`) and steering scores futures by
    (``"state_progress"``, :meth:`~worldsim.embodiments.EmbodimentPlugin.state_progress`).

    Args:
        pipeline: the :class:`~worldsim.pipelines.WorldModelPipeline` whose state predictor gives the states.
        plugin: the embodiment plug-in.
        embodiment: the model's embodiment name (None: its default).
        env_id: the env (task) the rule is for (None: the plug-in's default).
        rule: a key of :data:`STATE_RULES`.

    Returns:
        ``rule(states (N, S) float32) -> (N,) float32`` (success in {0, 1}, or progress, higher is better).

    Raises:
        ValueError: an unknown ``rule``, a model with no state predictor for the embodiment, or a plug-in without
            the rule for the env.
    """
    if rule not in STATE_RULES:
        raise ValueError(f"rule must be one of {list(STATE_RULES)}, got {rule!r}")
    predictor = pipeline.state_predictor_for(embodiment)
    if predictor is None:
        raise ValueError(f"{rule} reads the predicted observation.state, but the model has no state predictor for "
                         f"{embodiment!r} (worldsim train-state)")
    method = getattr(plugin, rule)
    if method(np.zeros((1, predictor.config.state_dim), np.float32), env_id) is None:
        lacking, instead = STATE_RULES[rule]
        raise ValueError(f"the {plugin.name!r} plug-in has no {lacking} for {env_id or plugin.default_env_id!r}; "
                         f"{instead}")
    return lambda state: method(state, env_id)


def _state_value(plugin, pipeline, embodiment: str, env_id: str | None, imagined_value: str) -> Callable | None:
    """The ``(N, S) -> (N,)`` state-success function ``imagined_value="state_success"`` needs (None otherwise).

    Raises:
        ValueError: an unknown ``imagined_value``, or what :func:`state_rule_for` raises.
    """
    if imagined_value not in IMAGINED_VALUES:
        raise ValueError(f"imagined_value must be one of {IMAGINED_VALUES}, got {imagined_value!r}")
    if imagined_value != "state_success":
        return None
    return state_rule_for(pipeline, plugin, embodiment, env_id, "state_success")


def rank_policies(pipeline, policies: dict, num_states: int = 50, horizon: int = 64, num_context: int = 4,
                  samples: int = 1, seed: int = 0, real: bool = True, batch_size: int = 64,
                  progress: bool = True, process_index: int = 0, num_processes: int = 1,
                  gather=_gather_single, num_inference_steps: int | None = None,
                  timestep_spacing: str | None = None, reward_median: int = DEFAULT_REWARD_MEDIAN,
                  embodiment: str | None = None, sampler=None, env_id: str | None = None,
                  imagined_value: str | None = None) -> dict:
    """Imagined vs real values of every policy, their intervals, and the ranking agreement.

    Args:
        pipeline: a :class:`~worldsim.pipelines.WorldModelPipeline` with outcome heads for the embodiment.
        policies: ``{name: policy}``; anything :func:`~worldsim.evaluation.policy_adapters.as_policy` accepts
            (actions of the embodiment's action space).
        embodiment: the model's embodiment, or a plug-in (``module:object``) serving it
            (:func:`~worldsim.embodiments.resolve_embodiment`); default: the model's.
        num_states: initial states (the plug-in's starts ``seed ..``).
        env_id: the plug-in's env to rank on (one task of a multi-task plug-in such as Meta-World; None: its default).
            A task-conditioned model imagines that env's task (:meth:`~worldsim.embodiments.EmbodimentPlugin.
            task_text`), and a policy with a ``task`` attribute is told it (:func:`set_policy_task`). Policies observe
            what the imagined env observes (:func:`model_layout`): a frame, or every camera and the state.
        horizon: policy steps per episode, after the shared context.
        num_context: real frames shared by both worlds at the start (the agent holds still between them).
        samples: imagined repetitions with different seeds (uncertainty).
        real: also run the real env (otherwise only imagined values, no agreement).
        sampler: the imagination's :class:`~worldsim.pipelines.SamplerSettings`, resolved once and carried to every
            imagined env; without it ``num_inference_steps`` and ``timestep_spacing`` (None: the model's) are
            resolved with the model's other defaults.
        num_inference_steps, timestep_spacing: shorthands for ``sampler`` (not with it); the frame decoder is
            the pipeline's current one (``pipeline.set_decoder``). Both are recorded in the report's settings.
        reward_median: width of the running median over each imagined episode's rewards before its maximum is
            taken (odd, >= 1; 1: the raw maximum; default 3; :func:`episode_values`). Real values are always the raw
            maximum: the real reward is exact.
        imagined_value: what values an imagined step: ``"reward"``, ``"success_probability"`` (outcome heads on the
            imagined latents) or ``"state_success"`` (the plug-in's success rule on the predicted
            ``observation.state``, :meth:`~worldsim.embodiments.EmbodimentPlugin.state_success`); default: the
            plug-in's :attr:`~worldsim.embodiments.EmbodimentPlugin.imagined_value`. Recorded in the settings.
        process_index, num_processes, gather: scale-out over several processes (``worldsim rank`` under
            ``accelerate launch``): this process runs its share of the state batches (:func:`state_batches`), and
            ``gather(list)`` (``accelerate.utils.gather_object``) returns the concatenation of every process's list,
            in process order. The result, on every process, equals the single-process result.

    Returns:
        ``{"policies": {name: {...}}, "agreement": {...} | None, "agreement_intervals": {metric: {"low", "high"}} |
        None, "return_agreement": {...} | None, "settings": {...}, "videos": {name: (real, imagined)}}``: per policy
        the imagined and real mean values with 95% intervals, real success rate with its interval, the mean returns
        (summed rewards: the env's and the heads'), the per-sample imagined means and their standard deviation and the
        per-state values; across policies the agreement of the values
        (:func:`~worldsim.evaluation.ranking_metrics.ranking_agreement`) and its bootstrap intervals over initial
        states (:func:`~worldsim.evaluation.ranking_metrics.agreement_intervals`), and the agreement of the returns.

    Raises:
        ValueError: fewer than 2 policies, ``samples < 1``, ``num_states < 2``, a sampler the scheduler refuses
            (``num_inference_steps < 1``, an unknown ``timestep_spacing``) or a bad ``reward_median``, before
            anything runs.
    """
    from worldsim.embodiments import resolve_embodiment
    from worldsim.envs.world_model_env import embodiment_action_space

    pipeline.require_per_frame("ranking (one policy action per video frame)")
    name, plugin = resolve_embodiment(pipeline, embodiment)
    action_shape = embodiment_action_space(pipeline.embodiment(name)).shape
    imagined_value = imagined_value or plugin.imagined_value
    state_value = _state_value(plugin, pipeline, name, env_id, imagined_value)
    if len(policies) < 2:
        raise ValueError(f"need at least 2 policies to rank, got {len(policies)}")
    if samples < 1 or num_states < 2:
        raise ValueError(f"need samples >= 1 and num_states >= 2, got {samples} and {num_states}")
    sampler = _rank_sampler(pipeline, sampler, num_inference_steps, timestep_spacing)  # refused now, not after the
    # real runs
    reward_median = check_reward_median(reward_median)
    started = time.perf_counter()
    seeds = list(range(seed, seed + num_states))
    layout = model_layout(pipeline, name)
    task = plugin.task_text(env_id) if pipeline.transformer.task_embedder is not None else None
    clips = real_start_clips(plugin, seeds, num_context, layout, env_id)
    frames, actions, states = clips["frames"], clips["actions"], clips["states"]
    results, videos = {}, {}
    mine = state_batches(num_states, batch_size, process_index, num_processes)
    for policy_name, raw in tqdm(policies.items(), desc="policies", disable=not progress):
        policy = as_policy(raw, action_shape)
        set_policy_task(policy, plugin.task_text(env_id))
        local = {}
        for start, stop in mine:
            part = {}
            if real:
                outcome = run_real(plugin, policy, seeds[start:stop], num_context, horizon, layout,
                                   keep_frames=int(start == 0), progress=progress, env_id=env_id)
                part.update(real_values=outcome["values"], real_success=outcome["success"], real_video=outcome["frames"],
                            real_returns=outcome["returns"])
            part["imagined"], part["imagined_returns"] = [], []
            for sample in range(samples):
                imagined = run_imagined(pipeline, policy, frames[start:stop], actions[start:stop], horizon,
                                        seed=seed + 1000 * sample, batch_size=stop - start,
                                        keep_frames=int(start == 0), progress=progress, offset=start,
                                        sampler=sampler, reward_median=reward_median, embodiment=name,
                                        aggregation=plugin.value_aggregation,
                                        states=None if states is None else states[start:stop], task=task,
                                        value_key=imagined_value, state_value=state_value,
                                        policy_seeds=seeds[start:stop])
                part["imagined"].append(imagined["values"])
                part["imagined_returns"].append(imagined["returns"])
                if sample == 0:
                    part["imagined_video"] = imagined["frames"]
            local[start] = part
        parts = {start: part for shard in gather([local]) for start, part in shard.items()}
        order = sorted(parts)
        entry = {}
        if real:
            values = np.concatenate([parts[start]["real_values"] for start in order])
            success = np.concatenate([parts[start]["real_success"] for start in order])
            entry["real"] = dict(zip(("mean", "low", "high"), bootstrap_mean_interval(values)))
            entry["real_success"] = dict(zip(("mean", "low", "high"), bootstrap_mean_interval(success.astype(float))))
            entry["real_values"] = values.tolist()
            entry["real_success_values"] = success.astype(float).tolist()
            entry["real_returns"] = np.concatenate([parts[start]["real_returns"] for start in order]).tolist()
        entry["imagined_returns"] = np.mean([np.concatenate([parts[start]["imagined_returns"][sample] for start in order])
                                             for sample in range(samples)], axis=0).tolist()
        imagined_values = [np.concatenate([parts[start]["imagined"][sample] for start in order])
                           for sample in range(samples)]
        entry.update(_imagined_entry(np.mean(imagined_values, axis=0),  # per state, averaged over samples
                                     [float(values.mean()) for values in imagined_values]))
        results[policy_name] = entry
        videos[policy_name] = (parts[0].get("real_video") if real else None, parts[0]["imagined_video"])
    agreement, intervals = _agreement(results, seed) if real else (None, None)
    settings = {"embodiment": name, "env_id": env_id or plugin.default_env_id, "task": task,
                "imagined_value": imagined_value, "num_states": num_states, "horizon": horizon, "num_context": num_context, "samples": samples,
                "num_processes": num_processes, "decoder": sampler.decoder,
                "quantization": pipeline.quantization,
                "sampler": {"num_inference_steps": sampler.num_inference_steps,
                            "timestep_spacing": sampler.timestep_spacing},
                "context_noise": sampler.context_noise, "action_guidance_scale": sampler.action_guidance_scale,
                "seed": seed, "policy_seeds": "per start", "batch_size": batch_size,
                "seconds": time.perf_counter() - started,
                "date": time.strftime("%Y-%m-%d"),
                "value": plugin.value_description,
                "reward_median": reward_median}
    return {"policies": results, "agreement": agreement, "agreement_intervals": intervals,
            "return_agreement": _return_agreement(results) if real else None, "settings": settings, "videos": videos}


def rank_from_dataset(pipeline, policies: dict, dataset, num_states: int | None = None, horizon: int = 64,
                      num_context: int = 4, samples: int = 1, seed: int = 0, batch_size: int = 64,
                      progress: bool = True, num_inference_steps: int | None = None,
                      timestep_spacing: str | None = None, reward_median: int = DEFAULT_REWARD_MEDIAN,
                      embodiment: str | None = None, sampler=None) -> dict:
    """Ranks policies against their own logged episodes instead of a real env (no simulator, no robot).

    Each episode carries the name of the policy that produced it
    (:attr:`~worldsim.data.lerobot.LeRobotDataset.episode_policies`; ``worldsim collect --policy zoo:<member>``
    records it). For every policy in ``policies``, its first ``num_states`` episodes (over the datasets, in order) are
    its initial states: the imagined episode starts from the episode's first ``num_context`` frames and recorded
    actions, and the policy then acts ``horizon`` steps in imagination. Its real value is the value of the same
    episode's recorded steps after the context (the plug-in's :meth:`~worldsim.embodiments.EmbodimentPlugin.step_value`
    over ``next.reward``, ``next.terminated`` and ``next.success``, aggregated as in :func:`rank_policies`; an episode
    that ended earlier contributes the steps it has). Episodes are paired across policies by their order, so collect
    every policy with the same seeds (then episode i of each policy starts from the same state) for the paired
    intervals to mean what they say.

    Args:
        pipeline, policies, samples, seed, batch_size, progress, sampler, num_inference_steps, timestep_spacing,
            reward_median, embodiment: as :func:`rank_policies`.
        dataset: a :class:`~worldsim.data.lerobot.LeRobotDataset` or its folder, or a list of them (e.g. one per
            policy).
        num_states: episodes per policy (default: as many as every policy has).
        horizon: imagined steps, and the recorded steps valued, after the context.
        num_context: recorded frames that start each imagined episode.

    Returns:
        A report like :func:`rank_policies`'s; ``settings["source"]`` names the datasets and ``settings["episodes"]``
        lists each policy's ``[dataset index, episode index]`` pairs.

    Raises:
        ValueError: fewer than 2 policies; a policy with no episode in the datasets (the message lists the names they
            have); ``num_states`` outside [2, the fewest episodes a policy has]; episodes shorter than
            ``num_context + 1`` frames; or the checks of :func:`rank_policies`.
    """
    from worldsim.constants import REWARD, SUCCESS
    from worldsim.data.frame_cache import load_frame_cache
    from worldsim.data.lerobot import LeRobotDataset
    from worldsim.embodiments import resolve_embodiment
    from worldsim.envs.world_model_env import embodiment_action_space

    pipeline.require_per_frame("ranking (one policy action per video frame)")
    name, plugin = resolve_embodiment(pipeline, embodiment)
    action_shape = embodiment_action_space(pipeline.embodiment(name)).shape
    sources = dataset if isinstance(dataset, (list, tuple)) else [dataset]
    datasets = [item if isinstance(item, LeRobotDataset) else LeRobotDataset(item) for item in sources]
    if len(policies) < 2:
        raise ValueError(f"need at least 2 policies to rank, got {len(policies)}")
    if samples < 1 or num_context < 1 or horizon < 1:
        raise ValueError(f"need samples >= 1, num_context >= 1 and horizon >= 1, got {samples}, {num_context}, "
                         f"{horizon}")
    sampler = _rank_sampler(pipeline, sampler, num_inference_steps, timestep_spacing)
    reward_median = check_reward_median(reward_median)
    episodes = {}  # policy -> [(dataset index, episode index)]
    for policy_name in policies:
        own = [(d, e) for d, data in enumerate(datasets) for e, label in enumerate(data.episode_policies)
               if label == policy_name]
        if not own:
            names = sorted({label for data in datasets for label in data.episode_policies})
            raise ValueError(f"{[str(data.root) for data in datasets]} hold no episode of policy {policy_name!r}; "
                             f"their episodes' policies: {names}")
        short = [(d, e) for d, e in own if datasets[d].episode_to[e] - datasets[d].episode_from[e] <= num_context]
        if short:
            raise ValueError(f"episodes {short[:5]} (dataset, episode) of {policy_name!r} have at most {num_context} "
                             f"frames; need num_context + 1 or more")
        episodes[policy_name] = own
    available = min(len(own) for own in episodes.values())
    count = available if num_states is None else int(num_states)
    if count < 2 or count > available:
        raise ValueError(f"num_states must be in [2, {available}] (the fewest episodes any policy has), got {count}")
    columns = []
    for data in datasets:
        table = data.columns
        terminated_key = "next.terminated" if "next.terminated" in table else "next.done"
        columns.append({
            "reward": np.asarray(table[REWARD], np.float64).reshape(-1),
            "terminated": np.asarray(table[terminated_key], bool).reshape(-1),
            "success": (np.asarray(table[SUCCESS], bool).reshape(-1) if SUCCESS in table
                        else np.zeros(data.num_frames, bool)),
            "frames": load_frame_cache(data, pipeline.image_size, progress=progress,
                                             video_keys=pipeline.composed_cameras)})
    started = time.perf_counter()
    results, videos = {}, {}
    for policy_name, raw in tqdm(policies.items(), desc="policies", disable=not progress):
        policy = as_policy(raw, action_shape)
        chosen = episodes[policy_name][:count]
        context, context_action, values, successes = [], [], [], []
        for d, e in chosen:
            data, table = datasets[d], columns[d]
            start, stop = int(data.episode_from[e]), int(data.episode_to[e])
            context.append(np.asarray(table["frames"][start:start + num_context]))
            context_action.append(data.action[start:start + num_context - 1])
            steps = range(start + num_context - 1, min(start + num_context - 1 + horizon, stop))
            infos = [{"is_success": bool(table["success"][row])} for row in steps]
            step_values = [plugin.step_value(table["reward"][row], bool(table["terminated"][row]), info)
                           for row, info in zip(steps, infos)]
            values.append(max(step_values) if plugin.value_aggregation == "max" else float(np.sum(step_values)))
            successes.append(any(plugin.is_success(value, info) for value, info in zip(step_values, infos)))
        values, successes = np.asarray(values), np.asarray(successes)
        context, context_action = np.stack(context), np.stack(context_action).astype(np.float32)
        imagined_values, video = [], None
        for sample in range(samples):
            imagined = run_imagined(pipeline, policy, context, context_action, horizon, seed=seed + 1000 * sample,
                                    batch_size=batch_size, progress=progress, sampler=sampler,
                                    reward_median=reward_median, embodiment=name,
                                    aggregation=plugin.value_aggregation)
            imagined_values.append(imagined["values"])
            video = imagined["frames"] if sample == 0 else video
        d, e = chosen[0]
        first, stop = int(datasets[d].episode_from[e]) + num_context, int(datasets[d].episode_to[e])
        real_video = np.asarray(columns[d]["frames"][first:min(first + horizon, stop)])
        real_video = np.concatenate([real_video, np.repeat(real_video[-1:], horizon - len(real_video), axis=0)])
        entry = {"real": dict(zip(("mean", "low", "high"), bootstrap_mean_interval(values))),
                 "real_success": dict(zip(("mean", "low", "high"), bootstrap_mean_interval(successes.astype(float)))),
                 "real_values": values.tolist()}
        entry.update(_imagined_entry(np.mean(imagined_values, axis=0), [float(v.mean()) for v in imagined_values]))
        results[policy_name] = entry
        videos[policy_name] = (real_video[None], video)
    agreement, intervals = _agreement(results, seed)
    settings = {"embodiment": name, "source": [str(data.root) for data in datasets], "num_states": count,
                "horizon": horizon, "num_context": num_context, "samples": samples, "decoder": sampler.decoder,
                "quantization": pipeline.quantization, "seed": seed,
                "sampler": {"num_inference_steps": sampler.num_inference_steps,
                            "timestep_spacing": sampler.timestep_spacing},
                "context_noise": sampler.context_noise, "action_guidance_scale": sampler.action_guidance_scale,
                "seconds": time.perf_counter() - started, "date": time.strftime("%Y-%m-%d"),
                "value": plugin.value_description + " (recorded episodes)", "reward_median": reward_median,
                "episodes": {policy_name: [list(pair) for pair in episodes[policy_name][:count]]
                             for policy_name in policies}}
    return {"policies": results, "agreement": agreement, "agreement_intervals": intervals, "settings": settings,
            "videos": videos}


def _imagined_entry(pooled: np.ndarray, per_sample: list[float]) -> dict:
    """A policy's imagined summary from its per-state values `(S,)` (averaged over samples) and per-sample means.

    The interval is the bootstrap interval over states, widened by the spread across samples: half-widths add in
    quadrature with 1.96 sample standard deviations.
    """
    mean, low, high = bootstrap_mean_interval(pooled)
    spread = float(np.std(per_sample, ddof=1)) if len(per_sample) > 1 else 0.0
    widen = lambda half: float(np.hypot(half, 1.96 * spread))
    return {"imagined": {"mean": mean, "low": mean - widen(mean - low), "high": mean + widen(high - mean)},
            "imagined_per_sample": list(per_sample), "imagined_sample_std": spread,
            "imagined_values": np.asarray(pooled).tolist()}


def _agreement(results: dict, seed: int) -> tuple[dict, dict]:
    """Agreement of the policies' imagined and real means, and its bootstrap intervals over the per-state values."""
    agreement = ranking_agreement([results[n]["imagined"]["mean"] for n in results],
                                  [results[n]["real"]["mean"] for n in results])
    intervals = agreement_intervals([results[n]["imagined_values"] for n in results],
                                    [results[n]["real_values"] for n in results], seed=seed)
    return agreement, intervals


def _return_agreement(results: dict) -> dict | None:
    """Agreement of the policies' mean imagined and real returns (summed rewards), or None without real returns."""
    if any("real_returns" not in entry for entry in results.values()):
        return None
    return ranking_agreement([float(np.mean(results[n]["imagined_returns"])) for n in results],
                             [float(np.mean(results[n]["real_returns"])) for n in results])


def pool_task_reports(reports: dict[str, dict], seed: int = 0) -> dict:
    """Pools the rankings of the same policies on several tasks (envs) into one ranking over all their states.

    Per policy the per-state real and imagined values, successes and returns of every task are concatenated (a
    task's states count as much as their number) and the intervals recomputed; across policies the agreement and its
    paired bootstrap intervals over the pooled states are recomputed.

    Args:
        reports: ``{env id: report}``, each from :func:`rank_policies` with real values, the same policy names.
        seed: the bootstrap's seed.

    Returns:
        A report like :func:`rank_policies`'s (no videos), ``settings["env_id"]`` the list of env ids and
        ``settings["num_states"]`` the total.

    Raises:
        ValueError: no reports, a report without real values, or policy names that differ (both lists named).
    """
    if not reports:
        raise ValueError("no task reports to pool")
    items = list(reports.items())
    names = list(items[0][1]["policies"])
    for env_id, report in items:
        if report.get("agreement") is None:
            raise ValueError(f"the {env_id!r} report has no real values")
        if list(report["policies"]) != names:
            raise ValueError(f"the {env_id!r} report ranks {list(report['policies'])}, the {items[0][0]!r} one {names}")
    sizes = np.array([report["settings"]["num_states"] for _, report in items], dtype=np.float64)
    results = {}
    for name in names:
        entries = [report["policies"][name] for _, report in items]
        joined = lambda key: np.concatenate([np.asarray(entry[key], dtype=np.float64) for entry in entries])
        per_sample = (np.array([entry["imagined_per_sample"] for entry in entries]) * sizes[:, None]).sum(0) / sizes.sum()
        results[name] = {"real": mean_interval(joined("real_values")),
                         "real_success": mean_interval(joined("real_success_values")),
                         "real_values": joined("real_values").tolist(),
                         "real_success_values": joined("real_success_values").tolist(),
                         "real_returns": joined("real_returns").tolist(),
                         "imagined_returns": joined("imagined_returns").tolist(),
                         **_imagined_entry(joined("imagined_values"), per_sample.tolist())}
    agreement, intervals = _agreement(results, seed)
    first = items[0][1]["settings"]
    settings = {**first, "env_id": [env_id for env_id, _ in items], "task": [r["settings"].get("task") for _, r in items],
                "num_states": int(sizes.sum()), "seconds": sum(r["settings"]["seconds"] for _, r in items)}
    return {"policies": results, "agreement": agreement, "agreement_intervals": intervals,
            "return_agreement": _return_agreement(results), "settings": settings}


def rank_tasks(pipeline, policies, env_ids: list[str], progress: bool = True, **kwargs) -> dict:
    """Ranks the same policies on several envs of one plug-in (the tasks of a multi-task model) and pools them.

    Args:
        pipeline: as :func:`rank_policies`.
        policies: ``{name: policy}`` used on every task (a policy with a ``task`` attribute is told each task), or a
            callable ``env_id -> {name: policy}`` giving each task its own (e.g. a plug-in's per-task zoo,
            :meth:`~worldsim.embodiments.EmbodimentPlugin.task_zoo`); the names must be the same for every task.
        env_ids: the envs (tasks), at least one.
        kwargs: :func:`rank_policies`'s other arguments (``num_states`` is per task).

    Returns:
        ``{"tasks": {env id: report}, "pooled": report}``: :func:`rank_policies`'s report per task and
        :func:`pool_task_reports` over them (None when ``real=False``).

    Raises:
        ValueError: no env ids, or policy names that differ between tasks; and :func:`rank_policies`'s errors.
    """
    if not env_ids:
        raise ValueError("rank_tasks needs at least one env id")
    reports, names = {}, None
    for env_id in env_ids:
        chosen = policies(env_id) if callable(policies) and not isinstance(policies, dict) else policies
        if names is not None and list(chosen) != names:
            raise ValueError(f"task {env_id!r} has policies {list(chosen)}, the first task {names}")
        names = list(chosen)
        if progress:
            print(f"ranking on {env_id}", flush=True)
        reports[env_id] = rank_policies(pipeline, chosen, env_id=env_id, progress=progress, **kwargs)
    pooled = pool_task_reports(reports, seed=kwargs.get("seed", 0)) if kwargs.get("real", True) else None
    return {"tasks": reports, "pooled": pooled}


# settings that may differ between runs of one protocol on other initial states
_RUN_KEYS = ("seed", "num_states", "seconds", "date", "num_processes", "batch_size", "real_rerun")
_SETTING_DEFAULTS = {"reward_median": 1}  # settings added later: what reports written before them used
# settings added later with no value that fits every earlier report: compared only when both reports have them
_COMPARED_IF_PRESENT = ("embodiment", "env_id", "context_noise", "action_guidance_scale")


def merge_rank_reports(reports: list[dict]) -> dict:
    """Pools ``worldsim rank`` reports of the same policies on disjoint initial states into one ranking.

    A 100-state ranking can be run as states 0-49 (``--seed 0``) and 50-99 (``--seed 50``), on other days or
    machines. The runs must share every setting but the seed, state count, time, date and process count, and the
    policies. Per policy the per-state real and imagined values are concatenated and the intervals recomputed
    (imagined: with each sample's mean weighted by its run's states); across policies the agreement and its
    bootstrap intervals are recomputed on the pooled states. The real success rate is the state-weighted mean of the
    runs' rates; its interval is not recomputed (the reports keep no per-state success) and is dropped. With exactly
    two runs, ``real_split_agreement`` is :func:`~worldsim.evaluation.ranking_metrics.ranking_agreement` between the
    two runs' real means: how well reality ranks the policies the same on the two sets of states.

    Args:
        reports: dicts as :func:`rank_policies` returns them or ``worldsim rank --json`` writes them, with real
            values.

    Returns:
        A report like :func:`rank_policies`'s (no videos), ``settings["seed"]`` the smallest seed,
        ``settings["num_states"]`` the total, ``settings["date"]`` the runs' dates, plus ``real_split_agreement``
        (None unless two runs).

    Raises:
        ValueError: fewer than two reports; a report without real values; settings or policy names that differ
            (names the key and both values; :func:`~worldsim.evaluation.report.check_mergeable`); state ranges
            that overlap.
    """
    check_mergeable(reports, _RUN_KEYS, _COMPARED_IF_PRESENT, _SETTING_DEFAULTS)
    first, covered = reports[0], set()
    for index, report in enumerate(reports):
        if report.get("agreement") is None:
            raise ValueError(f"report {index} has no real values (run without --no-real to merge)")
        if list(report["policies"]) != list(first["policies"]):
            raise ValueError(f"report {index} ranks {list(report['policies'])}, report 0 {list(first['policies'])}")
        start, stop = report["settings"]["seed"], report["settings"]["seed"] + report["settings"]["num_states"]
        check_new_states(covered, start, stop, index)
        covered.update(range(start, stop))
    sizes = np.array([r["settings"]["num_states"] for r in reports], dtype=np.float64)
    results = {}
    for name in first["policies"]:
        entries = [r["policies"][name] for r in reports]
        real_values = np.concatenate([e["real_values"] for e in entries])
        per_sample = (np.array([e["imagined_per_sample"] for e in entries]) * sizes[:, None]).sum(0) / sizes.sum()
        results[name] = {
            "real": mean_interval(real_values),
            "real_success": {"mean": float(np.dot([e["real_success"]["mean"] for e in entries], sizes) / sizes.sum())},
            "real_values": real_values.tolist(),
            **_imagined_entry(np.concatenate([e["imagined_values"] for e in entries]), per_sample.tolist())}
        for key in _PER_STATE_KEYS:  # per-state lists added later: kept when every run has them
            if all(key in e for e in entries):
                results[name][key] = np.concatenate([np.asarray(e[key], np.float64) for e in entries]).tolist()
        if "real_success_values" in results[name]:
            results[name]["real_success"] = mean_interval(results[name]["real_success_values"])
    seed = min(r["settings"]["seed"] for r in reports)
    agreement, intervals = _agreement(results, seed)
    split = None
    if len(reports) == 2:
        split = ranking_agreement(*[[r["policies"][n]["real"]["mean"] for n in first["policies"]] for r in reports])
    settings = {**first["settings"], "seed": seed, "num_states": int(sizes.sum()),
                "seconds": sum(r["settings"]["seconds"] for r in reports),
                "date": sorted({str(r["settings"]["date"]) for r in reports})}
    return {"policies": results, "agreement": agreement, "agreement_intervals": intervals, "settings": settings,
            "return_agreement": _return_agreement(results), "real_split_agreement": split}


#: per-state lists of a report's policy entries besides the values (merged and pooled alike)
_PER_STATE_KEYS = ("real_success_values", "real_returns", "imagined_returns")


def join_policy_reports(reports: list[dict]) -> dict:
    """Joins rankings of different policies on the same initial states into one ranking of all of them.

    A user who ranked ten checkpoints and trains an eleventh ranks only the new one (same command, same states) and
    joins it: per policy nothing is recomputed; across policies the agreement and its paired bootstrap intervals over
    the states are recomputed.

    Args:
        reports: dicts as :func:`rank_policies` returns them (or ``worldsim rank --json`` writes them), with real
            values, every setting equal (the same env, states, horizon, sampler) but the time and date.

    Returns:
        A report like :func:`rank_policies`'s (no videos), the policies in the order of the reports.

    Raises:
        ValueError: fewer than two reports, a report without real values, settings that differ (named), or a policy
            name in two reports.
    """
    check_mergeable(reports, ("seconds", "date"), _COMPARED_IF_PRESENT, _SETTING_DEFAULTS)
    results = {}
    for index, report in enumerate(reports):
        if report.get("agreement") is None:
            raise ValueError(f"report {index} has no real values (run without --no-real to join)")
        for name, entry in report["policies"].items():
            if name in results:
                raise ValueError(f"policy {name!r} is in two of the reports; each policy may be ranked once")
            results[name] = entry
    agreement, intervals = _agreement(results, reports[0]["settings"]["seed"])
    settings = {**reports[0]["settings"], "seconds": sum(r["settings"]["seconds"] for r in reports),
                "date": sorted({str(r["settings"]["date"]) for r in reports})}
    return {"policies": results, "agreement": agreement, "agreement_intervals": intervals, "settings": settings,
            "return_agreement": _return_agreement(results)}


def combine_rank_reports(reports: list[dict]) -> dict:
    """Combines ``worldsim rank`` reports of one protocol however they were split: by policies (same states,
    :func:`join_policy_reports`), by initial states (same policies, :func:`merge_rank_reports`) and by task (other env
    ids, :func:`pool_task_reports`), in that order.

    Args:
        reports: reports of :func:`rank_policies`, or the ``{"tasks": {env id: report}, "pooled": ...}`` that a
            several-task ``worldsim rank --json`` writes (its task reports are used).

    Returns:
        ``{"tasks": {env id: report}, "pooled": report | None}``: one report per env id, and the pooled ranking when
        there are several env ids.

    Raises:
        ValueError: reports that cannot be combined (the message of the step that refused them).
    """
    flat = []
    for report in reports:
        flat.extend(report["tasks"].values() if "tasks" in report else [report])
    by_task: dict = {}
    for report in flat:
        by_task.setdefault(report["settings"].get("env_id"), []).append(report)
    tasks = {}
    for env_id, group in by_task.items():
        by_states: dict = {}
        for report in group:
            by_states.setdefault((report["settings"]["seed"], report["settings"]["num_states"]), []).append(report)
        joined = [join_policy_reports(same) if len(same) > 1 else same[0] for same in by_states.values()]
        tasks[env_id] = merge_rank_reports(joined) if len(joined) > 1 else joined[0]
    pooled = pool_task_reports(tasks, seed=min(r["settings"]["seed"] for r in tasks.values())) if len(tasks) > 1 \
        else None
    return {"tasks": tasks, "pooled": pooled}


_METRIC_LABELS = {"pearson": "Pearson", "spearman": "Spearman", "kendall": "Kendall", "mmrv": "MMRV"}


def rank_table(report: dict) -> str:
    """A markdown table of a :func:`rank_policies` report, best real value first, with the agreement below."""
    policies = report["policies"]
    has_real = report["agreement"] is not None
    order = sorted(policies, key=lambda n: -(policies[n]["real"]["mean"] if has_real else policies[n]["imagined"]["mean"]))
    columns = ["policy", "imagined value [95% CI]", "sample std"]
    columns += ["real value [95% CI]", "real success [95% CI]"] if has_real else []
    rows = [[name, format_interval(policies[name]["imagined"]), f"{policies[name]['imagined_sample_std']:.3f}"]
            + ([format_interval(policies[name]["real"]), format_interval(policies[name]["real_success"])]
               if has_real else []) for name in order]
    lines = markdown_lines(columns, rows)
    if has_real:
        lines += ["", agreement_line(report)]
    returns = report.get("return_agreement")
    if returns:
        lines.append("Mean returns (summed rewards, the heads' against the env's): " + ", ".join(
            f"{_METRIC_LABELS[name]} {returns[name]:.3f}" for name in AGREEMENT_METRICS))
    split = report.get("real_split_agreement")
    if split:
        lines.append("The real env against itself (real means of the two runs' states): " + ", ".join(
            f"{_METRIC_LABELS[name]} {split[name]:.3f}" for name in AGREEMENT_METRICS))
    return "\n".join(lines)


def agreement_line(report: dict) -> str:
    """One sentence with the agreement of a :func:`rank_policies` report and, when present, its 95% intervals."""
    a, intervals = report["agreement"], report.get("agreement_intervals")
    parts = [f"{_METRIC_LABELS[name]} " + format_interval({"mean": a[name], **(intervals[name] if intervals else {})})
             for name in AGREEMENT_METRICS]
    suffix = " (95% bootstrap intervals over initial states)" if intervals else ""
    return ", ".join(parts) + f" over {a['num_policies']} policies" + suffix


def write_rank_report(report: dict, out_dir, fps: int = 10) -> dict:
    """Writes the ranking's JSON-free artefacts: a scatter plot, a video per policy and an HTML page tying them up.

    Args:
        report: from :func:`rank_policies`.
        out_dir: folder to write ``report.html``, ``scatter.png`` and ``videos/<policy>.mp4`` into.

    Returns:
        ``{"html": path, "scatter": path | None, "videos": [paths]}``.
    """
    from pathlib import Path

    out_dir = Path(out_dir)
    policies, has_real = report["policies"], report["agreement"] is not None
    scatter = _write_scatter(report, out_dir / "scatter.png") if has_real else None
    grids = {name: side_by_side(real if real is not None and len(real) else None, imagined)
             for name, (real, imagined) in report["videos"].items() if imagined is not None and len(imagined)}
    videos = write_row_videos(out_dir / "videos", grids, fps=fps, scale=4)
    columns = ["policy", "imagined value [95% CI]"] + (["real value [95% CI]", "real success"] if has_real else [])
    rows = [([name, format_interval(entry["imagined"])]
             + ([format_interval(entry["real"]), f"{entry['real_success']['mean']:.2f}"] if has_real else []),
             f"videos/{name}.mp4") for name, entry in policies.items()]
    page = write_html_page(out_dir / "report.html", "worldsim policy ranking", "Policy ranking: imagined vs real",
                           report["settings"], columns + ["first state (left: real, right: imagined)"], rows,
                           summary=agreement_line(report) + "." if has_real else None,
                           image="scatter.png" if has_real else None)
    return {"html": page, "scatter": scatter, "videos": videos}


def _write_scatter(report: dict, path):
    """Imagined vs real mean value per policy, with both intervals and the diagonal (PNG); returns the path."""
    plt = pyplot()
    policies = report["policies"]
    figure, axis = plt.subplots(figsize=(5.5, 5))
    for name, entry in policies.items():
        imagined, real = entry["imagined"], entry["real"]
        axis.errorbar(real["mean"], imagined["mean"],
                      xerr=[[real["mean"] - real["low"]], [real["high"] - real["mean"]]],
                      yerr=[[imagined["mean"] - imagined["low"]], [imagined["high"] - imagined["mean"]]],
                      fmt="o", capsize=3)
        axis.annotate(name, (real["mean"], imagined["mean"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    limits = [0, max(max(e["real"]["high"], e["imagined"]["high"]) for e in policies.values()) * 1.1 + 1e-3]
    axis.plot(limits, limits, "k:", linewidth=1)
    a = report["agreement"]
    axis.set(xlabel="real value (mean episode value)", ylabel="imagined value (mean predicted episode value)",
             title=f"Spearman {a['spearman']:.2f}, Pearson {a['pearson']:.2f}, MMRV {a['mmrv']:.3f}")
    axis.grid(alpha=0.3)
    return save_figure(figure, path, dpi=120)
