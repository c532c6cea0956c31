"""The embodiment plug-in interface: everything worldsim knows about one environment, in one object.

The core of worldsim (data, models, envs, evaluation, steering) is generic: it knows Gymnasium spaces, LeRobot
datasets, latents and policies, never a particular env. What belongs to one environment lives in that environment's
plug-in, a subclass of :class:`EmbodimentPlugin` registered under a name (:mod:`worldsim.embodiments.registry`),
in the spirit of LeRobot's per-env config classes and Gymnasium's env registry. The name is the one a model uses for
the embodiment (``worldsim.json``, the dataset's ``robot_type``), so ``worldsim rank --model M --embodiment minigrid``
finds both the model's action encoder and the plug-in.

A plug-in says

- how to make the real env with pixel observations (:meth:`EmbodimentPlugin.make_env`) and, where it can, put it in
  a given state (:meth:`EmbodimentPlugin.get_state` / :meth:`EmbodimentPlugin.set_state`);
- how an initial state is drawn for ranking and steering (:meth:`EmbodimentPlugin.reset_start`) and which policy
  plays the shared context frames (:meth:`EmbodimentPlugin.context_action`);
- how an episode is valued (:attr:`EmbodimentPlugin.value_aggregation`, :meth:`EmbodimentPlugin.step_value`);
- how recorded frames are labelled for the outcome heads (:meth:`EmbodimentPlugin.label_frames`);
- optional frame metrics for ``worldsim evaluate`` (:meth:`EmbodimentPlugin.frame_metrics`) and the controlled
  entity's locator for ``worldsim sensitivity`` (:meth:`EmbodimentPlugin.locate_controlled`);
- a zoo of named frame-only policies of graded skill (:meth:`EmbodimentPlugin.policy_zoo`), data-collection
  policies (:meth:`EmbodimentPlugin.collection_policies`) and start distributions for ``worldsim collect``;
- the stochastic chunk policy and its mode for ``worldsim steer-eval`` (:meth:`EmbodimentPlugin.steering_policy`,
  :meth:`EmbodimentPlugin.follow_policy`).

Everything but :attr:`EmbodimentPlugin.name` and :attr:`EmbodimentPlugin.env_ids` has a default, so a user's plug-in
for their own env can be a few lines::

    class MyArm(EmbodimentPlugin):
        name = "my-arm"
        env_ids = ("MyArm-v0",)

        def policy_zoo(self, seed=0):
            return {"expert": MyExpert(), "random": MyRandom(seed)}

    register_embodiment(MyArm())     # or an entry point in the group "worldsim.embodiments"
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np

#: ways to turn an episode's per-step values into its value
VALUE_AGGREGATIONS = ("max", "sum")


class EmbodimentPlugin:
    """Base class of embodiment plug-ins (see the module docstring).

    Class attributes a subclass sets:
        name: registry key and the model's embodiment name, e.g. ``"minigrid"``.
        env_ids: the Gymnasium ids this plug-in serves; the first is the default.
        env_package: the module that registers the ids (imported by :meth:`make_env`), e.g. ``"minigrid"``.
        install_hint: what to install when ``env_package`` is missing, e.g. ``"pip install 'worldsim[minigrid]'"``.
        env_kwargs: ``gym.make`` keyword arguments for pixel observations at the recorded resolution.
        task: the task text recorded with every episode.
        value_aggregation: ``"max"`` (an episode's value is its largest per-step value: a goal coverage, a success) or
            ``"sum"`` (its return: points per brick).
        value_description: one line for reports, e.g. ``"largest reward (coverage / 0.95)"``.
        success_threshold: a per-step value at or above which the step counts as success (None: success comes
            from ``info["is_success"]`` / ``info["success"]`` only).
        metric_labels: ``{frame metric: (label with its unit, format)}`` for report tables, e.g.
            ``{"agent_error": ("agent-position error (px)", "{:.1f}")}``.
        data_policy: the collection policy that plays like the model's data (``worldsim sensitivity`` plays its
            context steps with it; None: ``random``).
        demo_policy: ``(collection policy name, keyword arguments)`` that ``worldsim demo`` records fresh episodes
            with: a setting the model's training data never used (None: no demo).
        steering_noise: the default noise of :meth:`steering_policy` (its unit is the plug-in's).
        headline_metric: the :meth:`frame_metrics` entry that ``worldsim evaluate`` also reports at the horizon and
            as a ratio to the copy-last-frame baseline (e.g. ``"agent_error"``); None: none.
        imagined_value: which per-step number of the imagined env values an imagined episode in ranking and steering:
            ``"reward"`` (the outcome heads' reward, the default) or ``"success_probability"`` (the success head's, for
            a plug-in whose :meth:`step_value` is success). Ranking can also be asked for ``"state_success"``
            (:meth:`state_success` of the predicted state).
        state_only_env_kwargs: :meth:`make_env` keyword arguments for an env that observes ``observation.state``
            alone and renders nothing (faster), which ranking uses for policies whose ``input_keys`` name no camera;
            None: the plug-in has none.
        state_metrics: named groups of ``observation.state`` dimensions whose predicted value ``worldsim evaluate``
            compares with the real one on imagined frames (the Euclidean distance of the group's dimensions times
            its scale): ``{name ending in its unit: (dimension indices, scale)}``, e.g.
            ``{"hand_position_mm": ([0, 1, 2], 1000.0)}`` for a hand position in metres reported in mm.
    """

    name: str = ""
    env_ids: tuple[str, ...] = ()
    env_package: str | None = None
    install_hint: str = ""
    env_kwargs: dict[str, Any] = {}
    task: str = ""
    value_aggregation: str = "max"
    value_description: str = "largest reward over the horizon"
    success_threshold: float | None = None
    headline_metric: str | None = None
    state_metrics: dict[str, tuple[list[int], float]] = {}
    imagined_value: str = "reward"
    state_only_env_kwargs: dict[str, Any] | None = None
    metric_labels: dict[str, tuple[str, str]] = {}
    steering_noise: float | None = None
    demo_policy: tuple[str, dict] | None = None
    data_policy: str | None = None

    # ------------------------------------------------------------------ the real env
    @property
    def default_env_id(self) -> str:
        """The first of :attr:`env_ids`."""
        if not self.env_ids:
            raise ValueError(f"embodiment plug-in {self.name!r} lists no env ids")
        return self.env_ids[0]

    def import_env_package(self) -> None:
        """Imports :attr:`env_package` (which registers the env ids with Gymnasium).

        Raises:
            ImportError: the package is not installed; the message says what to install.
        """
        if not self.env_package:
            return
        import importlib

        try:
            importlib.import_module(self.env_package)
        except ImportError as error:
            hint = f" ({self.install_hint})" if self.install_hint else ""
            raise ImportError(f"embodiment {self.name!r} needs the package {self.env_package!r}{hint}") from error

    def make_env(self, env_id: str | None = None, **kwargs) -> gym.Env:
        """The real env with pixel observations (``render_mode="rgb_array"``), :attr:`env_kwargs` overridden by
        ``kwargs``.

        Raises:
            ImportError: the env's package is missing.
            gymnasium.error.Error: Gymnasium cannot make ``env_id``.
        """
        self.import_env_package()
        options = {**self.env_kwargs, **kwargs}
        options.setdefault("render_mode", "rgb_array")
        return gym.make(env_id or self.default_env_id, **options)

    def reset_start(self, env: gym.Env, seed: int) -> tuple[Any, dict]:
        """Puts ``env`` in initial state number ``seed`` for ranking and steering; returns ``reset``'s
        ``(observation, info)``. Default: ``env.reset(seed=seed)``."""
        return env.reset(seed=int(seed))

    def context_action(self, env: gym.Env, observation: Any, info: dict) -> Any:
        """The action that plays each shared context step before a policy takes over (the same in the real and the
        imagined world). Default: the action space's first index (``Discrete``) or the middle of the box (``Box``).

        Raises:
            NotImplementedError: another action space (override this, or :meth:`context_policy`).
        """
        space = env.action_space
        if isinstance(space, gym.spaces.Discrete):
            return np.int64(space.start)
        if isinstance(space, gym.spaces.Box):
            return ((space.low + space.high) / 2).astype(space.dtype)
        raise NotImplementedError(f"embodiment {self.name!r}: no default context action for {space}; override "
                                  "context_action")

    def context_policy(self, env: gym.Env) -> Callable[[Any, dict], Any]:
        """A fresh policy ``(observation, info) -> action`` for one episode's context steps, made right after the
        reset. Default: :meth:`context_action` at every step."""
        return lambda observation, info: self.context_action(env, observation, info)

    def make_recording_env(self, env_id: str | None = None, **kwargs) -> gym.Env:
        """The env ``worldsim collect`` records from. Default: :meth:`make_env` (a plug-in may add wrappers that only
        recording needs)."""
        return self.make_env(env_id, **kwargs)

    def recorded_state(self, info: dict) -> tuple[np.ndarray, np.ndarray] | None:
        """What the collector stores per frame besides the image: ``(observation.state (S,), observation.
        environment_state (E,))`` float32 from the step's ``info``, or None (the default) for nothing."""
        return None

    def get_state(self, env: gym.Env) -> Any:
        """A snapshot of ``env``'s state that :meth:`set_state` restores (steer-eval's oracle branches real
        candidates from it). Raises NotImplementedError when the env cannot be put in a given state."""
        raise NotImplementedError(f"embodiment {self.name!r} cannot snapshot its env's state")

    def set_state(self, env: gym.Env, state: Any) -> Any:
        """Puts ``env`` in ``state`` (from :meth:`get_state`) and returns the observation there.

        Raises:
            NotImplementedError: the env cannot be put in a given state.
        """
        raise NotImplementedError(f"embodiment {self.name!r} cannot put its env in a given state")

    # ------------------------------------------------------------------ values and labels
    def step_value(self, reward: float, terminated: bool, info: dict) -> float:
        """The value of one real step, aggregated over the episode by :attr:`value_aggregation`. Default: the
        reward."""
        return float(reward)

    def state_success(self, state: np.ndarray, env_id: str | None = None) -> np.ndarray | None:
        """Success of each step read from its ``observation.state``, by the env's own success rule: what ranking
        values imagined episodes by with ``imagined_value="state_success"`` (the state predictor's state, not an
        outcome head on pixels). Default: None, the plug-in cannot tell success from the state.

        Args:
            state: `(N, S)` float32 states in env units.
            env_id: which of :attr:`env_ids` (None: the default).

        Returns:
            `(N,)` float32 in {0, 1}, or None.
        """
        return None

    def state_progress(self, state: np.ndarray, env_id: str | None = None) -> np.ndarray | None:
        """A dense measure of task progress read from each step's ``observation.state``, higher is better: what
        steering can score imagined futures by (``value_key="state_progress"`` of
        :class:`~worldsim.steering.OutcomePredictor`, on the state predictor's states) where the success rule is too
        sparse to tell candidate chunks apart. Default: None, the plug-in has no such measure.

        Args:
            state: `(N, S)` float32 states in env units.
            env_id: which of :attr:`env_ids` (None: the default).

        Returns:
            `(N,)` float32 in the plug-in's unit, or None. Steering averages it over imagination samples (and over
            frames with ``aggregate="mean"``), so differences should be comparable across states, e.g. a distance.

        Raises:
            ValueError: states of the wrong shape (implementations check).
        """
        return None

    def is_success(self, value: float, info: dict) -> bool:
        """Whether a real step is a success: ``info["is_success"]`` / ``info["success"]``, or the step's value
        reaching :attr:`success_threshold`."""
        if bool(info.get("is_success", False)) or bool(info.get("success", False)):
            return True
        return self.success_threshold is not None and value >= self.success_threshold

    def label_frames(self, dataset) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        """Outcome-head labels of a recorded dataset's frames, or None for the generic labels (each frame labelled
        by the transition that produced it: reward ``next.reward``, termination ``next.terminated``, success
        ``next.success``; :func:`worldsim.training.train_heads.frame_labels`).

        Returns:
            rows `(M,)` int64 dataset row indices and ``{"reward", "termination", "success"}`` each `(M,)` float32.
        """
        return None

    # ------------------------------------------------------------------ frame metrics
    def frame_metrics(self, imagined: np.ndarray, real: np.ndarray) -> dict[str, np.ndarray]:
        """Env-specific errors between imagined and real frames for ``worldsim evaluate``.

        Args:
            imagined, real: `(N, T, H, W, 3)` uint8.

        Returns:
            ``{metric name: (N, T) float64}`` (NaN where undefined); the names end in their unit (``_px``). Default:
            none.
        """
        return {}

    def locate_controlled(self, frames: np.ndarray) -> np.ndarray:
        """The controlled entity's position in frames, for ``worldsim sensitivity``.

        Args:
            frames: `(..., H, W, 3)` uint8.

        Returns:
            `(..., d)` float in [0, 1] frame units (NaN where not found).

        Raises:
            NotImplementedError: the plug-in has no locator.
        """
        raise NotImplementedError(f"embodiment {self.name!r} has no locator for its controlled entity")

    # ------------------------------------------------------------------ policies
    def task_text(self, env_id: str | None = None) -> str:
        """The instruction of the task an env of this plug-in poses (what a task-conditioned model is conditioned on).
        Default: :attr:`task` for every env id."""
        return self.task

    def task_zoo(self, env_id: str | None = None, seed: int = 0) -> dict[str, Any]:
        """The zoo for one env of the plug-in (a task of a multi-task plug-in); the names must be the same for every
        env. Default: :meth:`policy_zoo` whatever the env."""
        return self.policy_zoo(seed=seed)

    def policy_zoo(self, seed: int = 0) -> dict[str, Any]:
        """Named frame-only policies of graded skill, best first: ``{name: policy}`` with ``reset(num_envs)`` and
        ``act(frames (N, H, W, 3) uint8) -> (N, *action_shape)`` (:mod:`worldsim.evaluation.policy_adapters`). A
        stochastic policy should also take ``reset(num_envs, seeds=[...])``, one stream per env seeded by its episode's
        start (:func:`~worldsim.evaluation.rank.reset_policy`). Default: none."""
        return {}

    def collection_policies(self) -> dict[str, Callable]:
        """Data-collection policies by name for ``worldsim collect --policy``: ``{name: factory(action_space,
        **kwargs) -> policy(observation, info) -> action}``. Default: none (``random`` is always there)."""
        return {}

    def start_distributions(self) -> dict[str, Callable]:
        """Named start-state distributions for ``worldsim collect --start``: ``{name: (rng, env) -> reset
        options}``. Default: none."""
        return {}

    def steering_policy(self, noise: float | None, chunk_length: int, seed: int, env_id: str | None = None):
        """The stochastic chunk policy ``steer-eval`` steers: a callable ``observation -> chunk
        (chunk_length, *action_shape)`` with ``reset()``, a different chunk per call. The observation is one env's
        observation in the model's layout (:class:`~worldsim.envs.observations.ObservationLayout`): a frame
        `(H, W, 3)` uint8, or a Dict of camera views and ``observation.state`` for a model that observes them.

        ``steer-eval`` passes ``env_id`` (the env, i.e. the task of a multi-task plug-in) only when one was chosen,
        so a plug-in of one env may define this method without it.

        Raises:
            NotImplementedError: the plug-in has none.
        """
        raise NotImplementedError(f"embodiment {self.name!r} has no steering policy")

    def follow_policy(self, env_id: str | None = None):
        """The steering policy's mode (a batched policy: ``reset(num_envs)``, ``act(observation) -> (N,
        *action_shape)``) that continues imagined and oracle candidates; it observes what the model's imagined env
        observes (frames, or a batched Dict of camera views and the state). ``env_id`` is passed only when one was
        chosen (as for :meth:`steering_policy`).

        Raises:
            NotImplementedError: the plug-in has none.
        """
        raise NotImplementedError(f"embodiment {self.name!r} has no follow-up policy")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, env_ids={self.env_ids!r})"


def find_wrapper(env: gym.Env, cls: type, hint: str):
    """The first ``cls`` instance in ``env``'s wrapper chain (``env``, ``env.env``, ...), for a plug-in that reaches
    its own wrapper or env class under Gymnasium's wrappers.

    Args:
        hint: what to do instead, for the error message (e.g. ``"make it with MyPlugin().make_env()"``).

    Raises:
        ValueError: there is none (the message names ``env``, ``cls`` and ``hint``).
    """
    current = env
    while current is not None:
        if isinstance(current, cls):
            return current
        current = getattr(current, "env", None)
    raise ValueError(f"{env} has no {cls.__name__} in its wrapper chain; {hint}")


def check_plugin(plugin: EmbodimentPlugin) -> EmbodimentPlugin:
    """Checks a plug-in's declared fields before it is registered.

    Raises:
        TypeError: ``plugin`` is not an :class:`EmbodimentPlugin` instance.
        ValueError: an empty name, no env ids, or an unknown :attr:`~EmbodimentPlugin.value_aggregation`.
    """
    if not isinstance(plugin, EmbodimentPlugin):
        raise TypeError(f"an embodiment plug-in must be an EmbodimentPlugin instance, got {type(plugin).__name__}")
    if not isinstance(plugin.name, str) or not plugin.name:
        raise ValueError(f"embodiment plug-in {plugin!r} has no name")
    if not plugin.env_ids or not all(isinstance(env_id, str) and env_id for env_id in plugin.env_ids):
        raise ValueError(f"embodiment plug-in {plugin.name!r}: env_ids must be non-empty Gymnasium ids, got "
                         f"{plugin.env_ids!r}")
    if plugin.value_aggregation not in VALUE_AGGREGATIONS:
        raise ValueError(f"embodiment plug-in {plugin.name!r}: value_aggregation must be one of {VALUE_AGGREGATIONS},"
                         f" got {plugin.value_aggregation!r}")
    return plugin
