"""A Meta-World task as a Gymnasium env with two cameras and the full state: :class:`MetaWorldCameraEnv`.

Observation, a ``gymnasium.spaces.Dict``:

- ``"observation.images.scene"``: `(H, W, 3)` uint8, a fixed camera on the workspace (default ``workspace``: the table
  seen from the robot's front right, framing the region the tasks use; or any Meta-World camera by name);
- ``"observation.images.wrist"``: `(H, W, 3)` uint8, the camera on the gripper (default ``gripperPOV``);
- ``"observation.state"``: `(39,)` float32, Meta-World's observation with the goal visible: hand xyz (m), gripper
  opening (0-1), object 1 xyz + quaternion, object 2 xyz + quaternion (zero-padded), the same 18 values one step
  earlier, goal xyz (m). Meta-World's scripted experts (``metaworld.policies``) act from it.

Rendering is offscreen: without a display and without ``MUJOCO_GL`` set, :func:`default_mujoco_gl` (called when this
module or the plug-in's env package is imported) sets ``MUJOCO_GL=egl`` before MuJoCo is imported. Images are right
side up: Meta-World's ``corner``, ``corner2`` and ``corner3`` cameras are mounted upside down, so a camera whose up
axis points below the horizon is turned by 180 degrees. Shadows and reflections are off by default: on a CPU
(software OpenGL) they cost 5x the render time and change little at 64 px.

Action: ``Box(-1, 1, (4,), float32)``: the hand's target displacement x, y, z (1 = 1 cm per step) and the gripper
effort (-1 open, +1 close). One step is 12.5 ms of simulated time (80 Hz).

``info`` carries Meta-World's step info (``success`` 0.0 / 1.0, ``near_object``, ``grasp_success``, ...) plus
``"task"`` (the instruction text), ``"task_name"`` (e.g. ``"push-v3"``), ``"observation.state"`` and
``"observation.environment_state"`` (:func:`environment_state_layout`), at reset and every step. Episodes never
terminate; they are truncated after ``max_episode_steps`` (or, with ``steps_after_success``, that many steps after
the first success: recordings then keep some frames of the solved task without running on to the step limit).

States: :meth:`MetaWorldCameraEnv.get_state` snapshots everything a rollout depends on (the MuJoCo integration state,
the task's object and goal placement, the frame-stacked previous observation, the step count); :meth:`~
MetaWorldCameraEnv.set_state` restores it exactly, so a rollout from a restored state repeats the original one.
``reset(seed=s)`` draws initial state number ``s`` (object and goal positions) deterministically.

>>> env = MetaWorldCameraEnv("push-v3", image_size=64)        # doctest: +SKIP
>>> observation, info = env.reset(seed=0)                     # doctest: +SKIP
>>> observation["observation.images.scene"].shape, info["task"]   # doctest: +SKIP
((64, 64, 3), 'push the puck to the goal')
"""

from __future__ import annotations

import copy
import os
from typing import Any

import gymnasium as gym
import numpy as np

from worldsim.data.cameras import compose_views
from worldsim.embodiments.metaworld.tasks import TASKS, check_task, import_metaworld


def default_mujoco_gl() -> None:
    """Sets ``MUJOCO_GL=egl`` (offscreen rendering) when it is unset and there is no display; call it before MuJoCo is
    first imported (MuJoCo picks its OpenGL backend then; GLFW, its default, needs a display). Set ``MUJOCO_GL``
    yourself to choose another backend (``osmesa``, ``glfw``)."""
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"


default_mujoco_gl()

SCENE_KEY = "observation.images.scene"
WRIST_KEY = "observation.images.wrist"
STATE_KEY = "observation.state"
ENV_STATE_KEY = "observation.environment_state"
#: the 39-D state's width
STATE_DIM = 39

#: worldsim's own free cameras (MuJoCo ``mjvCamera``): look-at point (m), distance (m), azimuth and elevation (deg)
#: (each the closest view, for its direction, that keeps the box the tasks use in frame: x -0.25..0.25, y 0.4..0.95,
#: z 0..0.35 m)
FREE_CAMERAS: dict[str, dict[str, Any]] = {
    # from the robot's front right, looking across the table away from the robot: sees the drawer's handle and the
    # button, which face the robot (the default scene camera)
    "workspace": {"lookat": (0.125, 0.625, 0.2), "distance": 0.94, "azimuth": 150.0, "elevation": -40.0},
    # from the robot's right side
    "side": {"lookat": (0.15, 0.675, 0.2), "distance": 0.88, "azimuth": 180.0, "elevation": -40.0},
}
#: Meta-World's named cameras (``corner*`` upside down as they come; turned right side up here)
MODEL_CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
CAMERAS = (*FREE_CAMERAS, *MODEL_CAMERAS)
DEFAULT_SCENE_CAMERA = "workspace"
DEFAULT_WRIST_CAMERA = "gripperPOV"
#: the default image size per camera, pixels (tools/metaworld_resolution.py measures what each size resolves)
DEFAULT_IMAGE_SIZE = 64
#: Meta-World's own step limit (its env raises past it); ``max_episode_steps`` must not exceed it
METAWORLD_MAX_STEPS = 500

_SNAPSHOT_SKIP = frozenset({"model", "data", "mujoco_renderer", "observation_space", "action_space", "_np_random",
                            "np_random", "goal_space", "_random_reset_space", "sawyer_observation_space", "spec",
                            "metadata", "render_mode", "camera_name", "camera_id", "fullpath", "frame_skip"})
_MODEL_FIELDS = ("body_pos", "body_quat", "site_pos", "site_quat", "geom_pos", "geom_quat")


def _is_plain(value: Any) -> bool:
    """Whether an attribute of the Meta-World env is plain data a snapshot copies (numbers, arrays, strings)."""
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype != object
    if isinstance(value, (tuple, list)):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain(item) for key, item in value.items())
    return False


def _check_size(image_size: Any) -> tuple[int, int]:
    """``(height, width)`` from an int or a pair.

    Raises:
        ValueError: not a positive int or a pair of positive ints.
    """
    def positive(value):
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1

    if positive(image_size):
        return int(image_size), int(image_size)
    if isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(positive(side) for side in image_size):
        return int(image_size[0]), int(image_size[1])
    raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")


def make_metaworld_env(task: str, seed: int | None = None):
    """The raw Meta-World env of ``task`` (``metaworld.env_dict.ALL_V3_ENVIRONMENTS``) with the goal visible in its
    observation and object / goal positions drawn from the env's own seeded RNG on every reset.

    Returns:
        a ``metaworld.SawyerXYZEnv``; ``reset`` then works without ``set_task``.

    Raises:
        ValueError: an unknown task. ImportError: ``metaworld`` is not installed.
    """
    check_task(task)
    world = import_metaworld("env_dict").ALL_V3_ENVIRONMENTS[task]()
    world._partially_observable = False  # the goal is part of the observation: the scripted experts need it
    if "sawyer_observation_space" in world.__dict__:  # a cached property computed for the hidden goal
        del world.sawyer_observation_space
    world._freeze_rand_vec = False
    world.seeded_rand_vec = True  # object / goal placement from world.np_random, so a seed fixes it
    world._set_task_called = True
    world.max_path_length = 10 ** 9  # truncation is MetaWorldCameraEnv's
    world.seed(0 if seed is None else int(seed))
    return world


def environment_state_layout(task: str) -> dict[str, slice]:
    """Where each part sits in a task's ``observation.environment_state`` vector.

    The vector (float32) is ``[placement (R), qpos (nq), qvel (nv), mocap_pos (3), mocap_quat (4)]``: Meta-World's
    random placement vector of the episode (object and / or goal positions, m; ``R`` = 3 or 6 by task), then MuJoCo's
    joint positions (m, rad), joint velocities (m/s, rad/s) and the hand's mocap target pose. It is what
    :meth:`MetaWorldCameraEnv.set_state` takes to put the env back in a recorded state.

    Returns:
        ``{"placement", "qpos", "qvel", "mocap_pos", "mocap_quat"}`` -> slices, plus ``"size"`` (a slice of the
        whole vector).

    Raises:
        ValueError: an unknown task. ImportError: ``metaworld`` is not installed.
    """
    world = make_metaworld_env(task)
    try:
        return _layout(world)
    finally:
        world.close()


def _layout(world) -> dict[str, slice]:
    sizes = {"placement": world._random_reset_space.low.size, "qpos": world.model.nq, "qvel": world.model.nv,
             "mocap_pos": 3, "mocap_quat": 4}
    layout, start = {}, 0
    for name, size in sizes.items():
        layout[name] = slice(start, start + size)
        start += size
    layout["size"] = slice(0, start)
    return layout


class MetaWorldCameraEnv(gym.Env):
    """One Meta-World task with a scene and a wrist camera and the 39-D state (see the module docstring).

    Args:
        task: a task of :data:`~worldsim.embodiments.metaworld.tasks.TASKS`, e.g. ``"push-v3"``.
        image_size: each camera's image size, pixels: an int (square) or ``(height, width)``.
        scene_camera, wrist_camera: camera names, each one of :data:`CAMERAS` (worldsim's free cameras and
            Meta-World's named ones).
        max_episode_steps: truncate after this many steps (1..500, Meta-World's limit).
        render_mode: None or ``"rgb_array"`` (``render()`` returns the cameras side by side, `(H, 2 W, 3)` uint8).
        shadows: render shadows and reflections (5x slower on a CPU).
        steps_after_success: truncate the episode this many steps after the first step with ``info["success"]``
            (an int >= 0); None: only ``max_episode_steps`` truncates.
        observe_cameras: False observes ``observation.state`` only, rendering nothing per step (about 10x faster;
            for policies that read the state alone); ``render()`` still renders the cameras on demand.

    Raises:
        ValueError: an unknown task or camera, a bad image size, ``max_episode_steps`` outside 1..500, a negative
            ``steps_after_success`` or an unknown render mode (the message names the value). ImportError:
            ``metaworld`` is not installed.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(self, task: str = "push-v3", image_size: int | tuple[int, int] = DEFAULT_IMAGE_SIZE,
                 scene_camera: str = DEFAULT_SCENE_CAMERA, wrist_camera: str = DEFAULT_WRIST_CAMERA,
                 max_episode_steps: int = 200, render_mode: str | None = None, shadows: bool = False,
                 steps_after_success: int | None = None, observe_cameras: bool = True):
        check_task(task)
        self.height, self.width = _check_size(image_size)
        for what, camera in (("scene_camera", scene_camera), ("wrist_camera", wrist_camera)):
            if camera not in CAMERAS:
                raise ValueError(f"{what} {camera!r} is not a camera; known: {', '.join(CAMERAS)}")
        if not isinstance(max_episode_steps, (int, np.integer)) or isinstance(max_episode_steps, bool) \
                or not 1 <= max_episode_steps <= METAWORLD_MAX_STEPS:
            raise ValueError(f"max_episode_steps must be an int in 1..{METAWORLD_MAX_STEPS}, got "
                             f"{max_episode_steps!r}")
        if steps_after_success is not None and (not isinstance(steps_after_success, (int, np.integer))
                                                or isinstance(steps_after_success, bool) or steps_after_success < 0):
            raise ValueError(f"steps_after_success must be None or an int >= 0, got {steps_after_success!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        import mujoco

        self._mujoco = mujoco
        self.task, self.task_text = task, TASKS[task]
        self.cameras = {SCENE_KEY: scene_camera, WRIST_KEY: wrist_camera}
        self.max_episode_steps, self.render_mode, self.shadows = int(max_episode_steps), render_mode, bool(shadows)
        self.steps_after_success = None if steps_after_success is None else int(steps_after_success)
        self.world = make_metaworld_env(task)
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.world.dt))}
        self._layout = _layout(self.world)
        image = gym.spaces.Box(0, 255, (self.height, self.width, 3), np.uint8)
        self.observe_cameras = bool(observe_cameras)
        spaces = {SCENE_KEY: image, WRIST_KEY: image} if self.observe_cameras else {}
        spaces[STATE_KEY] = gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._renderer = None
        self._free = {}
        self._steps = 0
        self._success_step: int | None = None  # the step of the episode's first success
        self._state: np.ndarray | None = None  # the last 39-D observation (float64, as Meta-World returns it)
        self._observation: dict | None = None

    # ------------------------------------------------------------------ rendering
    def _camera(self, name: str):
        if name not in FREE_CAMERAS:
            return name
        if name not in self._free:
            spec, camera = FREE_CAMERAS[name], self._mujoco.MjvCamera()
            camera.type = self._mujoco.mjtCamera.mjCAMERA_FREE
            camera.lookat[:] = spec["lookat"]
            camera.distance, camera.azimuth, camera.elevation = spec["distance"], spec["azimuth"], spec["elevation"]
            self._free[name] = camera
        return self._free[name]

    def render_camera(self, name: str, segmentation: bool = False) -> np.ndarray:
        """One camera's image of the current state, right side up.

        Args:
            name: one of :data:`CAMERAS`.
            segmentation: return MuJoCo's segmentation instead: `(H, W, 2)` int32 (object id, object type; -1
                where nothing is hit).

        Returns:
            `(H, W, 3)` uint8 (or the segmentation), at the env's image size.

        Raises:
            ValueError: an unknown camera.
        """
        if name not in CAMERAS:
            raise ValueError(f"{name!r} is not a camera; known: {', '.join(CAMERAS)}")
        mujoco = self._mujoco
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.world.model, self.height, self.width)
        renderer = self._renderer
        renderer.update_scene(self.world.data, camera=self._camera(name))
        if not self.shadows:
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        if segmentation:
            renderer.enable_segmentation_rendering()
            try:
                image = renderer.render().copy()
            finally:
                renderer.disable_segmentation_rendering()
        else:
            image = renderer.render().copy()
        if name not in FREE_CAMERAS and self.world.data.cam(name).xmat.reshape(3, 3)[2, 1] < 0.0:
            image = np.ascontiguousarray(image[::-1, ::-1])  # the camera's up axis points down: turn it upright
        return image

    def _observe(self, state: np.ndarray) -> dict[str, np.ndarray]:
        self._state = np.asarray(state, dtype=np.float64).copy()
        self._observation = ({key: self.render_camera(camera) for key, camera in self.cameras.items()}
                             if self.observe_cameras else {})
        self._observation[STATE_KEY] = self._state.astype(np.float32)
        return self._observation

    def render(self) -> np.ndarray | None:
        """The scene and wrist images of the last observation side by side: `(H, 2 W, 3)` uint8, or None when
        ``render_mode`` is None.

        Raises:
            ValueError: called before ``reset``.
        """
        if self.render_mode is None:
            return None
        if self._observation is None:
            raise ValueError("render() before reset(): there is no observation yet")
        if not self.observe_cameras:
            return compose_views([self.render_camera(self.cameras[SCENE_KEY]), self.render_camera(self.cameras[WRIST_KEY])])
        return compose_views([self._observation[SCENE_KEY], self._observation[WRIST_KEY]])

    # ------------------------------------------------------------------ the env
    def environment_state(self) -> np.ndarray:
        """The current ``observation.environment_state`` (:func:`environment_state_layout`): `(E,)` float32."""
        data, world = self.world.data, self.world
        return np.concatenate([np.asarray(world._last_rand_vec, np.float64).reshape(-1), data.qpos, data.qvel,
                               data.mocap_pos.reshape(-1)[:3], data.mocap_quat.reshape(-1)[:4]]).astype(np.float32)

    def _info(self, info: dict | None = None) -> dict:
        return {**(info or {}), "task": self.task_text, "task_name": self.task,
                STATE_KEY: self._state.astype(np.float32), ENV_STATE_KEY: self.environment_state()}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Initial state number ``seed`` (object and goal placement drawn from it), or the next draw for None.

        Raises:
            ValueError: ``options`` other than None or ``{}``.
        """
        if options:
            raise ValueError(f"MetaWorldCameraEnv.reset takes no options, got {options!r}; use set_state to put the "
                             f"env in a given state")
        super().reset(seed=seed)
        if seed is not None:
            self.world.seed(int(seed))
        state, info = self.world.reset()
        self._steps, self._success_step = 0, None
        observation = self._observe(state)
        return observation, self._info(info)

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        """One 12.5 ms step. ``reward`` is Meta-World's shaped reward (0-10); ``terminated`` is always False.

        Raises:
            ValueError: an action that is not 4 finite numbers (nothing is stepped), or a step before ``reset``.
        """
        if self._state is None:
            raise ValueError("step() before reset()")
        try:
            action = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"a Meta-World action is 4 numbers in [-1, 1], got {action!r}") from error
        if action.shape != (4,) or not np.all(np.isfinite(action)):
            raise ValueError(f"a Meta-World action is 4 finite numbers in [-1, 1], got {action!r}")
        state, reward, _, _, info = self.world.step(np.clip(action, -1.0, 1.0).astype(np.float32))
        self._steps += 1
        observation = self._observe(state)
        if self._success_step is None and float(info.get("success", 0.0)) > 0.5:
            self._success_step = self._steps
        truncated = self._steps >= self.max_episode_steps or (
            self.steps_after_success is not None and self._success_step is not None
            and self._steps - self._success_step >= self.steps_after_success)
        return observation, float(reward), False, truncated, self._info(info)

    # ------------------------------------------------------------------ states
    def get_state(self) -> dict[str, Any]:
        """A snapshot of everything a rollout depends on.

        Returns:
            ``{"task": str, "physics": (P,) float64 MuJoCo integration state (mj_getState), "model": {field: array}
            (the body / site / geom poses the task's reset placed), "attributes": {name: value} (the Meta-World env's
            plain attributes: placement, goal, frame-stacked previous observation, ...), "state": (39,) float64 the
            last observation, "steps": int, "success_step": int or None}`` (copies).

        Raises:
            ValueError: called before ``reset``.
        """
        if self._state is None:
            raise ValueError("get_state() before reset(): there is no state yet")
        mujoco, world = self._mujoco, self.world
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = np.empty(mujoco.mj_stateSize(world.model, spec), np.float64)
        mujoco.mj_getState(world.model, world.data, physics, spec)
        attributes = {name: copy.deepcopy(value) for name, value in vars(world).items()
                      if name not in _SNAPSHOT_SKIP and _is_plain(value)}
        return {"task": self.task, "physics": physics,
                "model": {field: getattr(world.model, field).copy() for field in _MODEL_FIELDS},
                "attributes": attributes, "state": self._state.copy(), "steps": self._steps,
                "success_step": self._success_step}

    def set_state(self, state: dict[str, Any] | np.ndarray) -> dict[str, np.ndarray]:
        """Puts the env in a state and returns the observation there.

        Args:
            state: a :meth:`get_state` snapshot (restored exactly), or a recorded ``observation.environment_state``
                vector `(E,)` (:func:`environment_state_layout`): the env is reset with the recorded placement and
                given its joint positions, velocities and hand target (the frame-stacked previous observation becomes
                the current one, the step count 0; float32 precision).

        Returns:
            the Dict observation there.

        Raises:
            ValueError: a snapshot of another task, a snapshot missing a part, or a vector of the wrong size (the env
                is unchanged).
        """
        if isinstance(state, dict):
            return self._set_snapshot(state)
        return self._set_recorded(state)

    def _set_snapshot(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        missing = sorted({"task", "physics", "model", "attributes", "state", "steps"} - set(state))
        if missing:
            raise ValueError(f"Meta-World state is missing {missing}; got keys {sorted(state)}")
        if state["task"] != self.task:
            raise ValueError(f"the state is of task {state['task']!r}, this env runs {self.task!r}")
        mujoco, world = self._mujoco, self.world
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = np.asarray(state["physics"], np.float64)
        if physics.shape != (mujoco.mj_stateSize(world.model, spec),):
            raise ValueError(f"Meta-World state 'physics' has shape {physics.shape}, this env's is "
                             f"({mujoco.mj_stateSize(world.model, spec)},)")
        for field, value in state["model"].items():
            getattr(world.model, field)[:] = value
        for name, value in state["attributes"].items():
            setattr(world, name, copy.deepcopy(value))
        mujoco.mj_setState(world.model, world.data, physics, spec)
        mujoco.mj_forward(world.model, world.data)
        mujoco.mj_setState(world.model, world.data, physics, spec)  # mj_forward may touch the solver's warm start
        self._steps = int(state["steps"])
        self._success_step = state.get("success_step")
        return self._observe(state["state"])

    def _set_recorded(self, vector: Any) -> dict[str, np.ndarray]:
        vector = np.asarray(vector, dtype=np.float64).reshape(-1)
        layout = self._layout
        if vector.shape != (layout["size"].stop,) or not np.all(np.isfinite(vector)):
            raise ValueError(f"a recorded {self.task} environment state is {layout['size'].stop} finite numbers "
                             f"(placement, qpos, qvel, mocap pose), got shape {vector.shape}")
        mujoco, world = self._mujoco, self.world
        frozen = world._freeze_rand_vec
        world._last_rand_vec, world._freeze_rand_vec = vector[layout["placement"]].copy(), True
        try:
            world.reset()
        finally:
            world._freeze_rand_vec = frozen
        data = world.data
        data.qpos[:], data.qvel[:] = vector[layout["qpos"]], vector[layout["qvel"]]
        data.mocap_pos[0], data.mocap_quat[0] = vector[layout["mocap_pos"]], vector[layout["mocap_quat"]]
        mujoco.mj_forward(world.model, data)
        current = world._get_curr_obs_combined_no_goal()
        world._prev_obs = current.copy()
        self._steps, self._success_step = 0, None
        return self._observe(np.hstack([current, current, world._get_pos_goal()]))

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.world.close()
        super().close()


__all__ = ["CAMERAS", "DEFAULT_IMAGE_SIZE", "DEFAULT_SCENE_CAMERA", "DEFAULT_WRIST_CAMERA", "ENV_STATE_KEY",
           "FREE_CAMERAS", "METAWORLD_MAX_STEPS", "MODEL_CAMERAS", "MetaWorldCameraEnv", "SCENE_KEY", "STATE_DIM",
           "STATE_KEY", "WRIST_KEY", "default_mujoco_gl", "environment_state_layout", "make_metaworld_env"]
