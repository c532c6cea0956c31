"""Dataset keys and conventions shared by every module (LeRobot names, kept as constants).

Action alignment, stated once for the whole package: ``action[t]`` is the action applied *after observing*
frame ``t``; applying it produces frame ``t + 1``. ``next.reward[t]`` and ``next.done[t]`` describe the
transition ``t -> t + 1``. This is the LeRobot convention; :mod:`worldsim.data.clips` tests it.
"""

OBS_IMAGE = "observation.image"
OBS_STATE = "observation.state"
OBS_ENV_STATE = "observation.environment_state"
ACTION = "action"
REWARD = "next.reward"
DONE = "next.done"
SUCCESS = "next.success"
EPISODE_INDEX = "episode_index"
FRAME_INDEX = "frame_index"
TIMESTAMP = "timestamp"
INDEX = "index"
TASK_INDEX = "task_index"

CODEBASE_VERSION = "v3.0"
