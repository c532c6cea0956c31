"""The Meta-World embodiment plug-in: a Sawyer arm on Meta-World's tasks, seen by a scene and a wrist camera.

Each task is its own Gymnasium id, ``worldsim/MetaWorld-<task>`` (``worldsim/MetaWorld-push-v3``, ...; the tasks and
their instructions: :data:`~worldsim.embodiments.metaworld.tasks.TASKS`), registered when this package is imported
(``gym.make("worldsim.embodiments.metaworld:worldsim/MetaWorld-push-v3")`` imports it first). The env
(:class:`~worldsim.embodiments.metaworld.env.MetaWorldCameraEnv`) observes a Dict of ``observation.images.scene``,
``observation.images.wrist`` (`(H, W, 3)` uint8, 64 x 64 by default) and the 39-D ``observation.state``; actions are
``Box(-1, 1, (4,))`` (hand displacement, gripper effort). ``worldsim collect`` records both cameras, the state, the
environment state (for restoring a recorded state), ``next.success`` and each episode's task text.

An episode's value is success: :meth:`MetaWorldEmbodiment.step_value` is Meta-World's ``info["success"]`` (1 or 0),
aggregated by ``max``. Policies (:mod:`~worldsim.embodiments.metaworld.policies`) are each task's scripted expert
under graded corruption; they read ``observation.state``. ``worldsim steer-eval --env-id <task>`` steers the expert
blurred by Gaussian noise (:meth:`MetaWorldEmbodiment.steering_policy`) and continues imagined candidates with the
noise-free expert reading the predicted state (:meth:`MetaWorldEmbodiment.follow_policy`).

>>> from worldsim.embodiments import make_embodiment                      # doctest: +SKIP
>>> plugin = make_embodiment("metaworld")                                  # doctest: +SKIP
>>> env = plugin.make_env(task="pick-place-v3")                            # doctest: +SKIP
>>> observation, info = plugin.reset_start(env, seed=3)                    # doctest: +SKIP
>>> expert = plugin.collection_policies()["metaworld-expert"](env.action_space, noise_std=0.3)   # doctest: +SKIP
>>> env.step(expert(observation, info))                                    # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np

from worldsim.embodiments.base import EmbodimentPlugin, find_wrapper
from worldsim.embodiments.metaworld.policies import (WRONG_TASKS, ZOO_MEMBERS, CorruptedExpert, NoisyExpertChunks,
                                                     ZooPolicy, collection_policies, metaworld_zoo, zoo_member)
from worldsim.embodiments.metaworld.tasks import (CORE_TASKS, DEFAULT_TASK, ENV_ID_PREFIX, TASKS, check_task, env_id,
                                                  task_of, task_text)

ENV_STATE_KEY = "observation.environment_state"
STATE_KEY = "observation.state"


def _register_env_ids() -> None:
    """Registers ``worldsim/MetaWorld-<task>`` for every task (entry points are strings: nothing is imported until an
    env is made)."""
    for task in TASKS:
        if env_id(task) not in gym.registry:
            gym.register(id=env_id(task), entry_point="worldsim.embodiments.metaworld.env:MetaWorldCameraEnv",
                         kwargs={"task": task}, disable_env_checker=False)


_register_env_ids()


def _camera_env(env: gym.Env):
    """The :class:`~worldsim.embodiments.metaworld.env.MetaWorldCameraEnv` under ``env``'s wrappers.

    Raises:
        ValueError: there is none (the env was not made by :meth:`MetaWorldEmbodiment.make_env`).
    """
    from worldsim.embodiments.metaworld.env import MetaWorldCameraEnv

    return find_wrapper(env, MetaWorldCameraEnv, "make it with MetaWorldEmbodiment().make_env()")


#: the tool centre (between the finger pads, what reach-v3's success measures) relative to the hand position that
#: ``observation.state[0:3]`` holds, in metres: measured over noisy expert reach episodes (std below 2 mm)
TCP_OFFSET = np.array([0.0, 0.0, -0.045], dtype=np.float32)

#: Meta-World's mocap step: the hand target moves by ``action[:3] * HAND_STEP`` metres per step (``action_scale``)
HAND_STEP = 0.01

#: an object has started to move once it is this far, in metres, from where its episode found it
OBJECT_MOVED = 0.005

#: task -> where the tool centre (:func:`tool_centre`) sits relative to the object ``state[4:7]`` when the task's
#: expert first moves the object (by :data:`OBJECT_MOVED`), in metres: the contact pose that
#: :meth:`MetaWorldEmbodiment.state_progress` steers the hand to. Medians over the successful own-task expert
#: episodes of the training sets (``python tools/measure_contact_offsets.py``; spread between quartiles under 1 cm,
#: except drawer-open's x, 7 cm, where the handle is wide). The recorded object position is not always what the hand
#: touches: the button's and the drawer handle's are 12-14 cm from where the expert presses or pulls. Every task of
#: :data:`STATE_SUCCESS_RULES` but reach (which has no object) has one.
CONTACT_OFFSETS: dict[str, np.ndarray] = {
    "push-v3": np.array([-0.002, 0.004, -0.012], dtype=np.float32),
    "pick-place-v3": np.array([-0.001, 0.002, -0.006], dtype=np.float32),
    "drawer-open-v3": np.array([0.007, -0.128, 0.060], dtype=np.float32),
    "button-press-v3": np.array([-0.001, -0.049, -0.108], dtype=np.float32),
}

#: task -> (the state dimensions compared with the goal ``state[36:39]``, which goal dimensions, radius in metres):
#: Meta-World v3's own success rules (``evaluate_state`` of each task); reach compares the tool centre
STATE_SUCCESS_RULES: dict[str, tuple[slice, slice, float]] = {
    "reach-v3": (slice(0, 3), slice(0, 3), 0.05),
    "push-v3": (slice(4, 7), slice(0, 3), 0.05),
    "pick-place-v3": (slice(4, 7), slice(0, 3), 0.07),
    "drawer-open-v3": (slice(4, 7), slice(0, 3), 0.03),
    "button-press-v3": (slice(5, 6), slice(1, 2), 0.02),  # the button's travel along y only
}


def tool_centre(state: np.ndarray) -> np.ndarray:
    """The tool centre (between the finger pads) of 39-D states: the hand ``state[..., 0:3]`` plus
    :data:`TCP_OFFSET`, `(..., 3)` float32, in metres. Raises ValueError when the last axis is not 39."""
    state = np.asarray(state, dtype=np.float32)
    if state.shape[-1:] != (39,):
        raise ValueError(f"Meta-World states are (..., 39), got {state.shape}")
    return state[..., 0:3] + TCP_OFFSET


def dead_reckon(state: np.ndarray, chunks: np.ndarray) -> np.ndarray:
    """Where chunks of actions leave the hand if it followed its mocap target exactly and nothing else moved: the hand
    ``state[0:3]`` moved by the summed ``action[:3]`` times :data:`HAND_STEP`, every other dimension as it was. The
    no-model control that steering by the predicted state is compared with: it ignores contact, the workspace limits
    and the mocap's lag.

    Args:
        state: `(39,)` the state the chunks start from.
        chunks: `(K, H, 4)` env actions (hand displacement x, y, z in units of :data:`HAND_STEP`, gripper effort).

    Returns:
        `(K, 39)` float32.

    Raises:
        ValueError: ``state`` that is not `(39,)`, or ``chunks`` that are not `(K, H, 4)`.
    """
    state, chunks = np.asarray(state, dtype=np.float32), np.asarray(chunks, dtype=np.float32)
    if state.shape != (39,) or chunks.ndim != 3 or chunks.shape[2] != 4:
        raise ValueError(f"dead reckoning takes a (39,) state and (K, H, 4) chunks, got {state.shape} and "
                         f"{chunks.shape}")
    ends = np.repeat(state[None], len(chunks), axis=0)
    ends[:, 0:3] += HAND_STEP * chunks[:, :, :3].sum(axis=1)
    return ends


def goal_distance(state, env_id: str | None) -> tuple[str, np.ndarray, np.ndarray] | None:
    """How far each state's success-rule part is from its goal: what Meta-World v3's own ``evaluate_state`` compares
    with the task's radius (:data:`STATE_SUCCESS_RULES`; reach: the tool centre, the hand plus :data:`TCP_OFFSET`).

    Args:
        state: `(N, 39)` Meta-World observations (float, metres), real or predicted.
        env_id: the task's env id or name (None: :data:`DEFAULT_TASK`).

    Returns:
        ``(task, distance (N,) float32 in m, state (N, 39) float32)``, or None for a task without a rule.

    Raises:
        ValueError: an unknown task, or states that are not `(N, 39)`.
    """
    task = task_of(env_id or DEFAULT_TASK)
    if task not in STATE_SUCCESS_RULES:
        return None
    state = np.asarray(state, dtype=np.float32)
    if state.ndim != 2 or state.shape[1] != 39:
        raise ValueError(f"Meta-World states are (N, 39), got {state.shape}")
    part, goal_part, _ = STATE_SUCCESS_RULES[task]
    position = tool_centre(state) if task == "reach-v3" else state[:, part]
    return task, np.linalg.norm(position - state[:, 36:39][:, goal_part], axis=1), state


class MetaWorldEmbodiment(EmbodimentPlugin):
    """Meta-World as a worldsim embodiment (see the module docstring).

    Tasks: every id of :attr:`env_ids` is one task (the default, ``push-v3``, first); ``make_env(task="...")`` picks
    one by name. :meth:`task_text` gives a task's instruction, which is also each episode's recorded task.
    """

    name = "metaworld"
    env_ids = tuple(env_id(task) for task in TASKS)
    env_package = "metaworld"
    install_hint = "pip install 'worldsim[metaworld]'"
    env_kwargs = {"image_size": 64}
    task = TASKS[DEFAULT_TASK]
    value_aggregation = "max"
    value_description = "success: Meta-World's info['success'] within the horizon (1 or 0)"
    success_threshold = 0.5
    state_only_env_kwargs = {"observe_cameras": False}  # for zoo policies, which read the state only
    imagined_value = "success_probability"  # the value is success, so imagination values the success head's
    # steer-eval's base policy: the expert's action plus Gaussian noise of this std (action units) on every step; at
    # 1.0 about half of the pushes fail (the zoo's noise-1.0 member), which leaves steering room to win
    steering_noise = 1.0
    # Meta-World's observation: hand x, y, z (m) at 0-2, the gripper opening at 3, the first object's position (m)
    # at 4-6 (the puck, the drawer handle, the button), its quaternion, a second object, the previous frame's copy
    # and the goal
    state_metrics = {"hand_position_mm": ([0, 1, 2], 1000.0), "object_position_mm": ([4, 5, 6], 1000.0)}
    data_policy = "metaworld-expert"
    # the held-out setting of tools/collect_metaworld_data.sh: a noise level between the training ones, with a delay
    demo_policy = ("metaworld-expert", {"noise_std": 0.2, "delay": 2, "seed": 1_000_003})

    # ------------------------------------------------------------------ tasks and the real env
    def import_env_package(self) -> None:
        """Imports ``metaworld`` after choosing MuJoCo's offscreen OpenGL backend where there is no display
        (:func:`~worldsim.embodiments.metaworld.env.default_mujoco_gl`).

        Raises:
            ImportError: ``metaworld`` is not installed; the message says what to install.
        """
        from worldsim.embodiments.metaworld.env import default_mujoco_gl

        default_mujoco_gl()
        super().import_env_package()

    def tasks(self) -> dict[str, str]:
        """``{task name: instruction}`` of every task served (:data:`~worldsim.embodiments.metaworld.tasks.TASKS`)."""
        return dict(TASKS)

    def task_text(self, task_or_env_id: str | None = None) -> str:
        """The instruction of a task, given its name (``"push-v3"``) or Gymnasium id (None: the default task).

        Raises:
            ValueError: an unknown task or id.
        """
        return task_text(task_or_env_id or DEFAULT_TASK)

    def make_env(self, env_id: str | None = None, task: str | None = None, **kwargs) -> gym.Env:
        """The task's :class:`~worldsim.embodiments.metaworld.env.MetaWorldCameraEnv` (``render_mode="rgb_array"``).

        Args:
            env_id: a ``worldsim/MetaWorld-<task>`` id (None: ``task``'s, else the default task's).
            task: a task name instead of ``env_id``.
            kwargs: the env's keyword arguments (``image_size``, ``scene_camera``, ``wrist_camera``,
                ``max_episode_steps``, ``shadows``), overriding :attr:`env_kwargs`.

        Raises:
            ValueError: an unknown task or id, or ``env_id`` and ``task`` that disagree.
            ImportError: ``metaworld`` is not installed.
        """
        if task is not None:
            check_task(task)
            if env_id is not None and task_of(env_id) != task:
                raise ValueError(f"env id {env_id!r} and task {task!r} disagree; pass one of them")
            env_id = ENV_ID_PREFIX + task
        if env_id is not None:
            task_of(env_id)
        return super().make_env(env_id, **kwargs)

    def reset_start(self, env: gym.Env, seed: int) -> tuple[Any, dict]:
        """Initial state number ``seed``: the task's object and goal placement drawn from the seed (deterministic;
        every seed a different draw)."""
        return env.reset(seed=int(seed))

    def state_success(self, state: np.ndarray, env_id: str | None = None) -> np.ndarray | None:
        """Meta-World's success rule of the task, applied to 39-D states (:data:`STATE_SUCCESS_RULES`): the distance
        from the object (reach: the tool centre, the hand plus :data:`TCP_OFFSET`) to the goal the state holds
        (``state[36:39]``) within the task's radius. On real states it agrees with ``info["success"]`` on every step
        for push, pick-place, drawer-open and button-press, and on about 97% of reach's steps (the tool centre
        moves by a few mm as the gripper opens); tasks outside the rules give None.

        Args:
            state: `(N, 39)` float32.
            env_id: a task's id or name (None: the default task).

        Returns:
            `(N,)` float32 in {0, 1}, or None for a task without a rule.

        Raises:
            ValueError: an unknown task, or states that are not `(N, 39)`.
        """
        measured = goal_distance(state, env_id)
        if measured is None:
            return None
        task, distance, _ = measured
        return (distance <= STATE_SUCCESS_RULES[task][2]).astype(np.float32)

    def state_progress(self, state: np.ndarray, env_id: str | None = None) -> np.ndarray | None:
        """Task progress of 39-D states, in metres, higher is better (at most 0): minus the distance of the
        success rule's part to its goal (:data:`STATE_SUCCESS_RULES`, as :meth:`state_success` measures it), and for
        tasks with an object, minus the distance from the tool centre (the hand plus :data:`TCP_OFFSET`) to the
        task's contact pose as well, the object ``state[4:7]`` plus :data:`CONTACT_OFFSETS`: reach the object where
        the expert touches it, then bring it to the goal, the two stages Meta-World's own shaped rewards reward.
        Tasks outside the rules give None.

        Args:
            state: `(N, 39)` float32.
            env_id: a task's id or name (None: the default task).

        Returns:
            `(N,)` float32 <= 0, or None for a task without a rule.

        Raises:
            ValueError: an unknown task, or states that are not `(N, 39)`.
        """
        measured = goal_distance(state, env_id)
        if measured is None:
            return None
        task, distance, state = measured
        progress = -distance
        if task != "reach-v3":  # every other task has an object, and a contact pose for it
            progress -= np.linalg.norm(tool_centre(state) - state[:, 4:7] - CONTACT_OFFSETS[task], axis=1)
        return progress.astype(np.float32)

    def recorded_state(self, info: dict) -> tuple[np.ndarray, np.ndarray] | None:
        """``(observation.state (39,), observation.environment_state (E,))`` float32 from the env's ``info`` (None
        without them): the 39-D state and the placement, joint positions and velocities and hand target
        (:func:`~worldsim.embodiments.metaworld.env.environment_state_layout`)."""
        if STATE_KEY not in info or ENV_STATE_KEY not in info:
            return None
        return np.asarray(info[STATE_KEY], np.float32), np.asarray(info[ENV_STATE_KEY], np.float32)

    def get_state(self, env: gym.Env) -> dict[str, Any]:
        """An exact snapshot (:meth:`~worldsim.embodiments.metaworld.env.MetaWorldCameraEnv.get_state`).

        Raises:
            ValueError: ``env`` was not made by :meth:`make_env`, or was never reset.
        """
        return _camera_env(env).get_state()

    def set_state(self, env: gym.Env, state) -> dict[str, np.ndarray]:
        """Restores a :meth:`get_state` snapshot (exactly) or a recorded ``observation.environment_state`` vector
        (:meth:`~worldsim.embodiments.metaworld.env.MetaWorldCameraEnv.set_state`); returns the Dict observation.

        Raises:
            ValueError: ``env`` was not made by :meth:`make_env`, or a state of another task or of the wrong size.
        """
        return _camera_env(env).set_state(state)

    # ------------------------------------------------------------------ values
    def step_value(self, reward: float, terminated: bool, info: dict) -> float:
        """1.0 on a step where Meta-World reports success (``info["success"]``), else 0.0."""
        return 1.0 if float(info.get("success", 0.0)) > 0.5 else 0.0

    # ------------------------------------------------------------------ policies
    def policy_zoo(self, seed: int = 0, task: str | None = None) -> dict[str, ZooPolicy]:
        """The zoo of :func:`~worldsim.embodiments.metaworld.policies.metaworld_zoo` for ``task`` (None: the default
        task), best first. Its members read ``observation.state`` (a batched Dict observation or a `(N, 39)` array),
        not frames.

        Raises:
            ValueError: an unknown task.
        """
        return metaworld_zoo(task or DEFAULT_TASK, seed=seed)

    def task_zoo(self, env_id: str | None = None, seed: int = 0) -> dict[str, ZooPolicy]:
        """:meth:`policy_zoo` of the task of ``env_id`` (a ``worldsim/MetaWorld-<task>`` id; None: the default task).

        Raises:
            ValueError: an unknown id.
        """
        return self.policy_zoo(seed=seed, task=task_of(env_id) if env_id else None)

    def steering_policy(self, noise: float | None, chunk_length: int, seed: int,
                        env_id: str | None = None) -> NoisyExpertChunks:
        """The stochastic chunk policy ``steer-eval`` steers on the task of ``env_id``: the scripted expert's action at
        the current state, repeated over the chunk, plus independent Gaussian noise of std ``noise`` (action units;
        None: :attr:`steering_noise`) on every step, clipped to [-1, 1]
        (:class:`~worldsim.embodiments.metaworld.policies.NoisyExpertChunks`). ``policy(observation) ->
        (chunk_length, 4)`` float32 reads ``observation.state`` from one env's Dict observation (or a `(39,)` array).

        Raises:
            ValueError: an unknown env id, a negative noise or ``chunk_length < 1``.
        """
        task = task_of(env_id) if env_id else DEFAULT_TASK
        return NoisyExpertChunks(task, self.steering_noise if noise is None else noise, chunk_length, seed=seed)

    def follow_policy(self, env_id: str | None = None) -> ZooPolicy:
        """The steering policy's mode: the noise-free expert of ``env_id``'s task (None: the default task) as a batched
        policy (:class:`~worldsim.embodiments.metaworld.policies.ZooPolicy`, ``reset(num_envs)``, ``act(observation)
        -> (N, 4)``) that reads ``observation.state`` from a batched Dict observation: the real state in the oracle's
        real env, the state predictor's in imagination.

        Raises:
            ValueError: an unknown env id.
        """
        return ZooPolicy(task=task_of(env_id) if env_id else DEFAULT_TASK)

    def collection_policies(self) -> dict[str, Callable]:
        """``{"metaworld-expert", "metaworld-zoo"}`` (:func:`~worldsim.embodiments.metaworld.policies.
        collection_policies`): the corrupted expert (keywords ``noise_std``, ``random_prob``, ``delay``, ``speed``,
        ``gripper``, ``wrong_task``, ``task``, ``seed``) and a zoo member by name (``member``)."""
        return collection_policies()


PLUGIN = MetaWorldEmbodiment
"""The plug-in class the registry finds by this package's name."""

__all__ = ["CONTACT_OFFSETS", "CORE_TASKS", "CorruptedExpert", "DEFAULT_TASK", "HAND_STEP", "MetaWorldEmbodiment",
           "NoisyExpertChunks", "OBJECT_MOVED", "PLUGIN", "TASKS", "TCP_OFFSET", "WRONG_TASKS", "ZOO_MEMBERS",
           "ZooPolicy", "collection_policies", "dead_reckon", "env_id", "goal_distance", "metaworld_zoo", "task_of", "task_text", "tool_centre",
           "zoo_member"]
