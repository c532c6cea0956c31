"""Does a camera resolve the object and the gripper at 48, 64 and 96 px? Pixels they cover, from MuJoCo segmentation.

For each Meta-World task, states along the scripted expert's episodes from several seeds are rendered by every
camera at every size with MuJoCo's segmentation rendering, and the pixels covered by the task's object and by the
gripper (the hand and both fingers) are counted; only what the camera sees counts, so occlusion shows. The table
gives, per task, camera and size, the median pixel count over the states and the fraction of states in which the
object covers at least ``--min-pixels`` pixels ("seen").

    MUJOCO_GL=egl .venv/bin/python tools/metaworld_resolution.py                  # the 5 tasks, 48 / 64 / 96 px
    MUJOCO_GL=egl .venv/bin/python tools/metaworld_resolution.py --tasks push-v3 --sizes 64 --json out.json

Objects: reach-v3 the goal (its target marker), push-v3 and pick-place-v3 the puck, drawer-open-v3 the drawer
(with its handle), button-press-v3 the button.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

from worldsim.embodiments.metaworld.env import CAMERAS, STATE_KEY, MetaWorldCameraEnv  # noqa: E402
from worldsim.embodiments.metaworld.tasks import CORE_TASKS  # noqa: E402

#: per task: the bodies whose geoms are the object, and the sites that are (reach's goal marker)
OBJECTS = {
    "reach-v3": {"bodies": (), "sites": ("goal",)},
    "push-v3": {"bodies": ("obj",), "sites": ()},
    "pick-place-v3": {"bodies": ("obj",), "sites": ()},
    "drawer-open-v3": {"bodies": ("drawer_link",), "sites": ()},
    "button-press-v3": {"bodies": ("button",), "sites": ()},
}
GRIPPER_BODIES = ("hand", "rightclaw", "rightpad", "leftclaw", "leftpad")


def _ids(env: MetaWorldCameraEnv, bodies, sites) -> tuple[set, set]:
    """Geom ids on ``bodies`` and site ids of ``sites`` in ``env``'s model."""
    model = env.world.model
    body_ids = {model.body(name).id for name in bodies}
    geoms = {index for index in range(model.ngeom) if model.geom_bodyid[index] in body_ids}
    return geoms, {model.site(name).id for name in sites}


def _covered(segmentation: np.ndarray, geoms: set, sites: set) -> int:
    """Pixels of a `(H, W, 2)` segmentation (object id, object type) that show one of ``geoms`` or ``sites``."""
    import mujoco

    ids, types = segmentation[..., 0], segmentation[..., 1]
    mask = np.zeros(ids.shape, bool)
    if geoms:
        mask |= (types == int(mujoco.mjtObj.mjOBJ_GEOM)) & np.isin(ids, list(geoms))
    if sites:
        mask |= (types == int(mujoco.mjtObj.mjOBJ_SITE)) & np.isin(ids, list(sites))
    return int(mask.sum())


def measure(tasks, cameras, sizes, seeds: int, steps: tuple[int, ...], min_pixels: int) -> list[dict]:
    """Pixel counts of object and gripper per task, camera and size.

    Returns:
        one row per (task, camera, size): ``{"task", "camera", "size", "object_median", "object_p10",
        "object_seen", "gripper_median", "gripper_p10", "states"}`` (pixels; ``object_seen`` the fraction of states
        with at least ``min_pixels`` object pixels).
    """
    from metaworld.policies import ENV_POLICY_MAP

    warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")
    rows = []
    for task in tasks:
        driver = MetaWorldCameraEnv(task, image_size=sizes[0])
        envs = {size: MetaWorldCameraEnv(task, image_size=size) for size in sizes}
        object_ids = _ids(driver, **OBJECTS[task])
        gripper_ids = _ids(driver, GRIPPER_BODIES, ())
        counts = {(camera, size): ([], []) for camera in cameras for size in sizes}
        expert = ENV_POLICY_MAP[task]()
        for seed in range(seeds):
            observation, _ = driver.reset(seed=seed)
            for step in range(max(steps) + 1):
                if step in steps:
                    snapshot = driver.get_state()
                    for size, env in envs.items():
                        if env._state is None:
                            env.reset(seed=seed)
                        env.set_state(snapshot)
                        for camera in cameras:
                            segmentation = env.render_camera(camera, segmentation=True)
                            counts[camera, size][0].append(_covered(segmentation, *object_ids))
                            counts[camera, size][1].append(_covered(segmentation, *gripper_ids))
                action = expert.get_action(observation[STATE_KEY].astype(np.float64))
                observation, *_ = driver.step(action)
        for (camera, size), (objects, grippers) in counts.items():
            objects, grippers = np.asarray(objects), np.asarray(grippers)
            rows.append({"task": task, "camera": camera, "size": size, "states": len(objects),
                         "object_median": float(np.median(objects)), "object_p10": float(np.percentile(objects, 10)),
                         "object_seen": float(np.mean(objects >= min_pixels)),
                         "gripper_median": float(np.median(grippers)),
                         "gripper_p10": float(np.percentile(grippers, 10))})
        for env in (driver, *envs.values()):
            env.close()
    return rows


def table(rows: list[dict], min_pixels: int) -> str:
    """A markdown table of :func:`measure`'s rows, one line per task and camera, sizes side by side."""
    sizes = sorted({row["size"] for row in rows})
    head = "| task | camera | " + " | ".join(f"{size} px: object median / p10 (seen) · gripper median / p10"
                                             for size in sizes) + " |"
    lines = [head, "|" + "---|" * (2 + len(sizes))]
    index = {(row["task"], row["camera"], row["size"]): row for row in rows}
    for task in dict.fromkeys(row["task"] for row in rows):
        for camera in dict.fromkeys(row["camera"] for row in rows):
            cells = []
            for size in sizes:
                row = index[task, camera, size]
                cells.append(f"{row['object_median']:.0f} / {row['object_p10']:.0f} ({row['object_seen']:.0%}) · "
                             f"{row['gripper_median']:.0f} / {row['gripper_p10']:.0f}")
            lines.append(f"| {task} | {camera} | " + " | ".join(cells) + " |")
    lines.append(f"\nobject: pixels covered by the task's object; seen: states with >= {min_pixels} object pixels; "
                 "gripper: hand and fingers; median and 10th percentile over the states")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(CORE_TASKS), choices=sorted(OBJECTS))
    parser.add_argument("--cameras", nargs="+", default=["workspace", "side", "corner", "corner2", "corner3",
                                                           "topview", "gripperPOV", "behindGripper"], choices=CAMERAS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[48, 64, 96])
    parser.add_argument("--seeds", type=int, default=4, help="episodes per task (seeds 0..n-1)")
    parser.add_argument("--steps", nargs="+", type=int, default=[0, 20, 40, 60, 80],
                        help="the expert's steps at which each episode is measured")
    parser.add_argument("--min-pixels", type=int, default=4)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    rows = measure(args.tasks, args.cameras, args.sizes, args.seeds, tuple(args.steps), args.min_pixels)
    print(table(rows, args.min_pixels))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
