"""The Meta-World tasks worldsim serves: names, Gymnasium ids and the English instruction recorded with each episode.

Importing this module needs no ``metaworld``: the registry lists plug-ins without their env packages.
"""

from __future__ import annotations

import importlib

#: Meta-World task name -> the short English instruction recorded as each episode's task text. The first five are
#: the tasks ``tools/collect_metaworld_data.sh`` records; every task here has a scripted expert in
#: ``metaworld.policies`` that succeeds from the 39-D state.
TASKS: dict[str, str] = {
    "push-v3": "push the puck to the goal",
    "reach-v3": "reach the goal with the gripper",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "drawer-open-v3": "open the drawer",
    "button-press-v3": "press the button",
    "drawer-close-v3": "close the drawer",
    "door-open-v3": "open the door",
    "window-open-v3": "slide the window open",
    "button-press-topdown-v3": "press the button from the top",
    "plate-slide-v3": "slide the plate into the goal",
}

#: the tasks the collection script records (and the resolution tool measures)
CORE_TASKS: tuple[str, ...] = ("reach-v3", "push-v3", "pick-place-v3", "drawer-open-v3", "button-press-v3")

#: the default task: the plug-in's default env id, its ``task`` text, and what a zoo plays without ``task=``
DEFAULT_TASK = "push-v3"

#: Gymnasium ids are ``worldsim/MetaWorld-<task>``, e.g. ``worldsim/MetaWorld-push-v3``
ENV_ID_PREFIX = "worldsim/MetaWorld-"


def check_task(task: str) -> str:
    """``task`` if it is one of :data:`TASKS`.

    Raises:
        ValueError: an unknown task (the message lists the known ones).
    """
    if task not in TASKS:
        raise ValueError(f"unknown Meta-World task {task!r}; known: {', '.join(TASKS)}")
    return task


def env_id(task: str) -> str:
    """The Gymnasium id of a task: ``"push-v3"`` -> ``"worldsim/MetaWorld-push-v3"``.

    Raises:
        ValueError: an unknown task.
    """
    return ENV_ID_PREFIX + check_task(task)


def task_of(name: str) -> str:
    """The task of a Gymnasium id or task name: ``"worldsim/MetaWorld-push-v3"`` or ``"push-v3"`` -> ``"push-v3"``.

    Raises:
        ValueError: neither a known task nor the id of one.
    """
    task = name[len(ENV_ID_PREFIX):] if isinstance(name, str) and name.startswith(ENV_ID_PREFIX) else name
    if task not in TASKS:
        raise ValueError(f"{name!r} is neither a Meta-World task nor the Gymnasium id of one; known tasks: "
                         f"{', '.join(TASKS)} (ids {ENV_ID_PREFIX}<task>)")
    return task


def task_text(name: str) -> str:
    """The English instruction of a task, given its name or Gymnasium id, e.g. ``"push the puck to the goal"``.

    Raises:
        ValueError: an unknown task or id.
    """
    return TASKS[task_of(name)]


__all__ = ["CORE_TASKS", "DEFAULT_TASK", "ENV_ID_PREFIX", "TASKS", "check_task", "env_id", "task_of", "task_text"]


def import_metaworld(module: str):
    """``metaworld.<module>`` (e.g. ``"policies"``), imported on first use so the plug-in loads without Meta-World.

    Raises:
        ImportError: ``metaworld`` is not installed (the message says what to install).
    """
    try:
        return importlib.import_module(f"metaworld.{module}")
    except ImportError as error:
        raise ImportError(f"the Meta-World embodiment needs metaworld (metaworld.{module}): "
                          f"pip install 'worldsim[metaworld]'") from error
