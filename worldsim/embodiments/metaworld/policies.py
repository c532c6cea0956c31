"""Meta-World policies: the scripted expert of each task under graded corruption, for data collection and the zoo.

Every policy reads the 39-D ``observation.state`` (goal visible) of :class:`~worldsim.embodiments.metaworld.env.
MetaWorldCameraEnv` and returns a ``(4,)`` float32 action in [-1, 1] (hand displacement x, y, z; gripper effort).

- :class:`CorruptedExpert`: the data-collection policy ``(observation, info) -> action`` (``worldsim collect --policy
  metaworld-expert --policy-kwargs noise_std=... random_prob=... delay=...``). Its corruptions, applied in this
  order each step to the expert's action:

  1. ``speed``: the hand displacement scaled by this factor (1: as scripted; 0: the hand does not move);
  2. ``gripper``: the gripper effort frozen at this value (None: the expert's), e.g. -1, a gripper that never
     closes;
  3. ``delay``: the action of ``delay`` steps earlier is played (the first ``delay`` steps play zeros);
  4. ``excursion_prob``: with this probability per step, an excursion starts: one uniform random action held for
     ``excursion_steps`` steps instead of the expert's, so the hand travels a sustained distance in a random
     direction (down, back toward the base, sideways) and the expert then has to recover. A per-step random action
     (``random_prob``) averages out over a few steps and barely moves the hand; an excursion shows a world model what
     every direction of the action space does;
  5. ``random_prob``: with this probability per step, a uniform random action instead;
  6. ``noise_std``: Gaussian noise of this standard deviation on all four components, then clipped to [-1, 1].

  ``wrong_task`` plays another task's expert: a clearly failing behaviour.
- :data:`ZOO_MEMBERS` names settings of graded skill; :func:`metaworld_zoo` makes them batched zoo policies
  (:class:`ZooPolicy`, ``reset(num_envs)``, ``act(observations) -> (N, 4)``) that read ``observation.state`` from a
  batched Dict observation ``{"observation.state": (N, 39), ...}`` or a `(N, 39)` array.
- :class:`NoisyExpertChunks`: the stochastic chunk policy ``worldsim steer-eval`` steers (the expert's action plus
  Gaussian noise on every step of the chunk).

Every policy with randomness takes a ``seed``; ``reset`` restarts its RNG, so a run is reproducible.
"""

from __future__ import annotations

import warnings
from collections import deque
from typing import Any

import numpy as np

from worldsim.embodiments.metaworld.tasks import DEFAULT_TASK, check_task, import_metaworld
from worldsim.utils.batch_random import check_seeds

STATE_KEY = "observation.state"
STATE_DIM = 39
ACTION_DIM = 4

# Meta-World's experts warn on every large proportional step; the env clips the action anyway
warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", category=UserWarning)

#: for each task, the expert of another task that plays it badly (``wrong_task="auto"``): it goes for the wrong
#: place (the goal without the object, the object without the goal, a drawer or button that is not there)
WRONG_TASKS = {
    "push-v3": "reach-v3",
    "reach-v3": "drawer-open-v3",
    "pick-place-v3": "reach-v3",
    "drawer-open-v3": "reach-v3",
    "button-press-v3": "push-v3",
    "drawer-close-v3": "drawer-open-v3",
    "door-open-v3": "reach-v3",
    "window-open-v3": "reach-v3",
    "button-press-topdown-v3": "reach-v3",
    "plate-slide-v3": "reach-v3",
}

#: zoo member name -> :class:`CorruptedExpert` keyword arguments, best first: ordered by the success rate measured
#: over 150-step episodes from 12 starts of each of the five core tasks (the rate, then per task: reach, push,
#: pick-place, drawer-open, button-press). Corruption hurts the tasks differently: a delay breaks button-press, an
#: open gripper pick-place and push.
ZOO_MEMBERS: dict[str, dict[str, Any]] = {
    "expert": {},                                       # 1.00
    "noise-0.1": {"noise_std": 0.1},                    # 0.98   1.00 0.92 1.00 1.00 1.00
    "random-0.2": {"random_prob": 0.2},                 # 0.97   1.00 0.92 0.92 1.00 1.00
    "noise-0.3": {"noise_std": 0.3},                    # 0.95   1.00 0.83 0.92 1.00 1.00
    "delay-3": {"delay": 3},                            # 0.90   1.00 0.83 1.00 1.00 0.67
    "random-0.3": {"random_prob": 0.3},                 # 0.87   0.92 0.83 0.67 0.92 1.00
    "noise-0.6": {"noise_std": 0.6},                    # 0.83   1.00 0.50 0.67 1.00 1.00
    "open-gripper": {"gripper": -1.0},                  # 0.65   1.00 0.25 0.00 1.00 1.00
    "delay-6": {"delay": 6},                            # 0.63   1.00 0.83 0.33 1.00 0.00
    "noise-0.3-delay-6": {"noise_std": 0.3, "delay": 6},  # 0.55  1.00 0.50 0.25 1.00 0.00
    "random-0.5": {"random_prob": 0.5},                 # 0.47   0.92 0.08 0.33 0.00 1.00
    "noise-1.0": {"noise_std": 1.0},                    # 0.43   0.83 0.00 0.33 0.50 0.50
    "wrong-task": {"wrong_task": "auto"},               # 0.00
    "random": {"random_prob": 1.0},                     # 0.00
    "idle": {"speed": 0.0, "gripper": 0.0},             # 0.00
}


def _expert(task: str):
    """A fresh scripted expert of ``task`` (``metaworld.policies.ENV_POLICY_MAP``).

    Raises:
        ValueError: an unknown task. ImportError: ``metaworld`` is not installed.
    """
    check_task(task)
    return import_metaworld("policies").ENV_POLICY_MAP[task]()


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _state_of(observation: Any) -> np.ndarray:
    """The 39-D state of one observation: a Dict observation's ``observation.state`` or the `(39,)` array itself.

    Raises:
        ValueError: no such state (the message says what was given).
    """
    if isinstance(observation, dict):
        if STATE_KEY not in observation:
            raise ValueError(f"a Meta-World policy reads observation[{STATE_KEY!r}]; the observation has keys "
                             f"{sorted(observation)}")
        observation = observation[STATE_KEY]
    state = np.asarray(observation, dtype=np.float64)
    if state.shape != (STATE_DIM,):
        raise ValueError(f"a Meta-World policy reads the ({STATE_DIM},) observation.state, got shape {state.shape}")
    return state


class CorruptedExpert:
    """The scripted expert of a Meta-World task with graded corruption (see the module docstring for the order).

    Args:
        action_space: the env's action space (unused: Meta-World's is ``Box(-1, 1, (4,))``; taken so that
            ``worldsim collect`` can build it by name).
        task: the task whose expert plays; None: the env's task, from ``info["task_name"]``.
        noise_std: standard deviation of the Gaussian action noise (action units; >= 0).
        random_prob: per-step probability of a uniform random action instead (in [0, 1]).
        delay: steps by which actions are delayed (int >= 0).
        excursion_prob: per-step probability, outside an excursion, of starting one (in [0, 1]).
        excursion_steps: steps an excursion holds its random action (int >= 1).
        speed: factor on the hand displacement (in [0, 1]).
        gripper: the gripper effort frozen at this value (in [-1, 1]), or None for the expert's.
        wrong_task: play this task's expert instead (``"auto"``: :data:`WRONG_TASKS`' choice for the env's task), or
            None.
        seed: RNG seed of the noise and random actions; ``reset(episode_seed)`` restarts the RNG from both.

    ``policy(observation, info) -> (4,) float32`` in [-1, 1].

    Raises:
        ValueError: a parameter out of its range or an unknown task (the message names it); at call time, an
            observation without the 39-D state, or no task (neither ``task`` nor ``info["task_name"]``).
    """

    def __init__(self, action_space=None, task: str | None = None, noise_std: float = 0.0, random_prob: float = 0.0,
                 delay: int = 0, speed: float = 1.0, gripper: float | None = None, wrong_task: str | None = None,
                 excursion_prob: float = 0.0, excursion_steps: int = 8, seed: int = 0):
        self.task = None if task is None else check_task(task)
        self.noise_std = _number(noise_std, "noise_std", 0.0, np.inf)
        self.random_prob = _number(random_prob, "random_prob", 0.0, 1.0)
        if isinstance(delay, bool) or not isinstance(delay, (int, np.integer)) or delay < 0:
            raise ValueError(f"delay must be an int >= 0 (steps), got {delay!r}")
        self.delay = int(delay)
        self.excursion_prob = _number(excursion_prob, "excursion_prob", 0.0, 1.0)
        if isinstance(excursion_steps, bool) or not isinstance(excursion_steps, (int, np.integer)) \
                or excursion_steps < 1:
            raise ValueError(f"excursion_steps must be an int >= 1 (steps), got {excursion_steps!r}")
        self.excursion_steps = int(excursion_steps)
        self.speed = _number(speed, "speed", 0.0, 1.0)
        self.gripper = None if gripper is None else _number(gripper, "gripper", -1.0, 1.0)
        if wrong_task is not None and wrong_task != "auto":
            check_task(wrong_task)
        self.wrong_task = wrong_task
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = int(seed)
        self.reset(None)

    def reset(self, seed: int | None = None) -> None:
        """Starts an episode: an empty delay queue, no excursion and the RNG restarted from ``(seed, episode
        seed)``."""
        self.rng = np.random.default_rng([self.seed, 0 if seed is None else int(seed) % 2 ** 32])
        self.queue: deque = deque()
        self.excursion_action, self.excursion_left = np.zeros(ACTION_DIM), 0
        self._expert, self._expert_task = None, None

    def played_task(self, env_task: str | None) -> str:
        """The task whose expert plays when the env runs ``env_task``.

        Raises:
            ValueError: no task is known (``task`` unset and ``env_task`` None).
        """
        task = self.task or env_task
        if task is None:
            raise ValueError("CorruptedExpert needs its task: pass task=... or use an env whose info carries "
                             "'task_name' (MetaWorldCameraEnv)")
        if self.wrong_task == "auto":
            return WRONG_TASKS[task]
        return self.wrong_task or task

    def expert_action(self, state: np.ndarray, env_task: str | None = None) -> np.ndarray:
        """The (uncorrupted) expert's action for one `(39,)` state: `(4,)` float64, clipped to [-1, 1]."""
        task = self.played_task(env_task)
        if self._expert_task != task:
            self._expert, self._expert_task = _expert(task), task
        return np.clip(np.asarray(self._expert.get_action(state), np.float64), -1.0, 1.0)

    def act_state(self, state: np.ndarray, env_task: str | None = None) -> np.ndarray:
        """One corrupted action from a `(39,)` state: `(4,)` float32 in [-1, 1] (advances the delay queue and RNG)."""
        action = self.expert_action(state, env_task)
        action[:3] *= self.speed
        if self.gripper is not None:
            action[3] = self.gripper
        if self.delay:
            self.queue.append(action)
            action = self.queue.popleft() if len(self.queue) > self.delay else np.zeros(ACTION_DIM)
        if not self.excursion_left and self.excursion_prob and self.rng.random() < self.excursion_prob:
            self.excursion_action = self.rng.uniform(-1.0, 1.0, ACTION_DIM)
            self.excursion_left = self.excursion_steps
        if self.excursion_left:
            action, self.excursion_left = self.excursion_action.copy(), self.excursion_left - 1
        if self.random_prob and self.rng.random() < self.random_prob:
            action = self.rng.uniform(-1.0, 1.0, ACTION_DIM)
        if self.noise_std:
            action = action + self.rng.normal(0.0, self.noise_std, ACTION_DIM)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def __call__(self, observation: Any, info: dict) -> np.ndarray:
        return self.act_state(_state_of(observation), (info or {}).get("task_name"))


class ZooPolicy:
    """A zoo member: ``num_envs`` :class:`CorruptedExpert` s of one setting, one per env, for batched evaluation.

    Args:
        task: the task the envs run (its expert plays, or ``wrong_task``'s).
        seed: RNG seed (env ``i`` of a batch uses ``seed * 1000 + i``, or ``seed * 1000 + seeds[i]`` when
            :meth:`reset` is given the episodes' start seeds).
        settings: :class:`CorruptedExpert` keyword arguments.

    ``reset(num_envs, seeds=None)``, then ``act(observations) -> (N, 4) float32``, where ``observations`` is a
    batched Dict observation ``{"observation.state": (N, 39), ...}`` or a `(N, 39)` state array.

    Attributes:
        input_keys: ``("observation.state",)``, what ``act`` reads from a Dict observation (a caller that drives
            zoo policies with frames alone can check it).

    Raises:
        ValueError: bad settings; at ``act``, observations without the `(N, 39)` state (frames alone are not
            enough: these policies read the state) or a batch size other than ``reset``'s.
    """

    input_keys = (STATE_KEY,)

    def __init__(self, task: str = DEFAULT_TASK, seed: int = 0, **settings):
        self.task, self.seed, self.settings = check_task(task), int(seed), dict(settings)
        CorruptedExpert(task=self.task, **self.settings)  # checks the settings now
        self.policies: list[CorruptedExpert] = []

    def reset(self, num_envs: int, seeds: list[int] | None = None) -> None:
        """Starts ``num_envs`` episodes. Env ``i``'s random stream is seeded ``seed * 1000 + seeds[i]`` (``seeds``:
        each episode's start seed, which ranking passes in the real env and in imagination alike, so that a start
        draws the same noise in both) or, without ``seeds``, ``seed * 1000 + i``.

        Raises:
            ValueError: ``seeds`` not ``num_envs`` ints >= 0.
        """
        seeds = range(int(num_envs)) if seeds is None else check_seeds(seeds, num_envs)
        self.policies = [CorruptedExpert(task=self.task, seed=self.seed * 1000 + seed, **self.settings)
                         for seed in seeds]

    def act(self, observations: Any) -> np.ndarray:
        states = observations.get(STATE_KEY) if isinstance(observations, dict) else observations
        states = None if states is None else np.asarray(states)
        if states is None or states.ndim != 2 or states.shape[1] != STATE_DIM:
            shape = None if states is None else states.shape
            raise ValueError(f"Meta-World zoo policies read the state: pass {{{STATE_KEY!r}: (N, {STATE_DIM})}} or a "
                             f"(N, {STATE_DIM}) array, got {type(observations).__name__} of shape {shape}")
        if len(states) != len(self.policies):
            raise ValueError(f"got {len(states)} observations but reset() was called for {len(self.policies)} envs")
        return np.stack([policy.act_state(state.astype(np.float64), self.task)
                         for policy, state in zip(self.policies, states)])


class NoisyExpertChunks:
    """A stochastic Meta-World chunk policy for best-of-K steering (``worldsim steer-eval``): the task's scripted
    expert, blurred by noise.

    Each call reads the current ``observation.state``, takes the scripted expert's action for it (clipped to
    [-1, 1]) and repeats it for the whole chunk, adding independent Gaussian noise of standard deviation
    ``noise_std`` (action units) to every component of every step, then clips to [-1, 1] again:
    ``chunk[t] = clip(expert(state) + noise_t, -1, 1)``, ``noise_t ~ N(0, noise_std^2 I)``. Successive calls draw
    new noise, so each call is another candidate (some move the hand where the expert would, others astray); with
    ``noise_std = 0`` the chunk is the expert's action repeated.

    Args:
        task: the task whose expert plays (a :data:`~worldsim.embodiments.metaworld.tasks.TASKS` name).
        noise_std: the noise's standard deviation (action units, >= 0).
        chunk_length: actions per chunk (>= 1).
        seed: RNG seed; :meth:`reset` restarts the RNG from it.

    ``policy(observation) -> (chunk_length, 4)`` float32 in [-1, 1], where ``observation`` is one env's Dict
    observation (its ``observation.state`` is read) or the `(39,)` state itself.

    Attributes:
        input_keys: ``("observation.state",)``, what a call reads from a Dict observation.

    Raises:
        ValueError: an unknown task, ``noise_std < 0`` or not finite, or ``chunk_length < 1`` (named in the
            message); at call time, an observation without the `(39,)` state.
        ImportError: ``metaworld`` is not installed (at the first call).
    """

    input_keys = (STATE_KEY,)

    def __init__(self, task: str = DEFAULT_TASK, noise_std: float = 1.0, chunk_length: int = 8, seed: int = 0):
        self.expert = CorruptedExpert(task=task)
        self.task = self.expert.task
        self.noise_std = _number(noise_std, "noise_std", 0.0, np.inf)
        if isinstance(chunk_length, bool) or not isinstance(chunk_length, (int, np.integer)) or chunk_length < 1:
            raise ValueError(f"chunk_length must be an int >= 1 (actions), got {chunk_length!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.chunk_length, self.seed = int(chunk_length), int(seed)
        self.reset()

    def reset(self) -> None:
        """Restarts the noise RNG from ``seed`` (the same chunks again for the same states)."""
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, observation: Any) -> np.ndarray:
        action = self.expert.expert_action(_state_of(observation))  # (4,) float64 in [-1, 1]
        noise = self.rng.normal(0.0, self.noise_std, (self.chunk_length, ACTION_DIM)) if self.noise_std \
            else np.zeros((self.chunk_length, ACTION_DIM))
        return np.clip(action[None] + noise, -1.0, 1.0).astype(np.float32)  # (chunk_length, 4)


def metaworld_zoo(task: str = DEFAULT_TASK, seed: int = 0) -> dict[str, ZooPolicy]:
    """The zoo of :data:`ZOO_MEMBERS` for one task, best first: ``{name: ZooPolicy}``.

    Raises:
        ValueError: an unknown task.
    """
    return {name: ZooPolicy(task=task, seed=seed, **settings) for name, settings in ZOO_MEMBERS.items()}


def zoo_member(action_space=None, member: str = "expert", task: str | None = None, seed: int = 0) -> CorruptedExpert:
    """A zoo member as a data-collection policy (``worldsim collect --policy metaworld-zoo --policy-kwargs
    member=noise-0.3``): the :class:`CorruptedExpert` of its setting.

    Raises:
        ValueError: an unknown member (the message lists the zoo).
    """
    if member not in ZOO_MEMBERS:
        raise ValueError(f"no Meta-World zoo member {member!r}; the zoo: {', '.join(ZOO_MEMBERS)}")
    return CorruptedExpert(action_space, task=task, seed=seed, **ZOO_MEMBERS[member])


def collection_policies() -> dict:
    """``{"metaworld-expert": CorruptedExpert, "metaworld-zoo": zoo_member}`` for ``worldsim collect --policy``."""
    return {"metaworld-expert": CorruptedExpert, "metaworld-zoo": zoo_member}


__all__ = ["CorruptedExpert", "NoisyExpertChunks", "WRONG_TASKS", "ZOO_MEMBERS", "ZooPolicy", "collection_policies",
           "metaworld_zoo", "zoo_member"]
