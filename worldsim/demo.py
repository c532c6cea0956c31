"""``make demo`` / ``worldsim demo``: fresh real episodes, imagined by a trained model, side by side.

Records a few new episodes in the real env of the model's embodiment with its plug-in's demo policy (a policy setting
and seeds that the training data never used), rolls the model out from their first frames under their real actions,
and writes the video, a metrics table (model vs copy-last-frame) and the JSON report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from worldsim.data.cameras import compose_views
from worldsim.data.collect import record_episode
from worldsim.data.frame_cache import resize_frames
from worldsim.data.policies import make_policy
from worldsim.evaluation.fidelity import Windows, fidelity_report, imagine_windows
from worldsim.evaluation.report import markdown_table, side_by_side
from worldsim.utils.shapes import size_pair
from worldsim.utils.video import write_video

def episode_frames(episode, frame_size, cameras: list[str] | None = None) -> np.ndarray:
    """A recorded episode's frames as a model sees them: its one camera, or its cameras' views side by side in the
    model's camera order, each resized to ``(H, W / V)``.

    Args:
        episode: a :class:`~worldsim.data.lerobot.Episode`.
        frame_size: the model's frame size, an int or ``(H, W)``.
        cameras: the model's camera keys (None or one key: the episode's first camera).

    Returns:
        `(T, H, W, 3)` uint8.

    Raises:
        ValueError: a camera the episode did not record (the message lists those it did).
    """
    height, width = size_pair(frame_size)
    if not cameras or len(cameras) == 1:
        return resize_frames(episode.frames, (height, width))
    recorded = episode.images or {}
    missing = [key for key in cameras if key not in recorded]
    if missing:
        raise ValueError(f"the episode has no camera {missing[0]!r}; it recorded {sorted(recorded) or 'one camera'}")
    return compose_views([resize_frames(recorded[key], (height, width // len(cameras))) for key in cameras])


def record_windows(plugin, num_episodes: int, num_frames: int, image_size, seed: int = 20_000,
                   max_tries: int | None = None, cameras: list[str] | None = None) -> Windows:
    """Records ``num_episodes`` fresh real episodes of at least ``num_frames`` frames with the plug-in's demo policy
    (:attr:`~worldsim.embodiments.EmbodimentPlugin.demo_policy`: a setting its model's training data never used).

    Args:
        image_size: the model's frame size, an int or ``(H, W)``.
        cameras: the model's camera keys, composed side by side (:func:`episode_frames`).

    Returns:
        :class:`~worldsim.evaluation.fidelity.Windows` with frames `(E, num_frames, H, W, 3)` uint8, actions
        `(E, num_frames - 1, A)` float32 (flat layout, env units) and each episode's task text.

    Raises:
        RuntimeError: fewer long-enough episodes than asked for within ``max_tries`` seeds (episodes that reach
            the goal early end early).
    """
    name, kwargs = plugin.demo_policy
    env = plugin.make_recording_env()
    frames, actions, seeds, tasks = [], [], [], []
    max_tries = max_tries or 4 * num_episodes
    try:
        for episode_seed in range(seed, seed + max_tries):
            policy = make_policy(name, env.action_space, embodiment=plugin, **kwargs)
            episode = record_episode(env, policy, episode_seed, max_steps=num_frames, embodiment=plugin)
            if len(episode.frames) < num_frames:
                continue
            frames.append(episode_frames(episode, image_size, cameras)[:num_frames])
            actions.append(episode.action[:num_frames - 1])
            seeds.append(episode_seed)
            tasks.append(episode.task)
            if len(frames) == num_episodes:
                break
    finally:
        env.close()
    if len(frames) < num_episodes:
        raise RuntimeError(f"only {len(frames)} of {num_episodes} episodes lasted {num_frames} frames in {max_tries} tries")
    return Windows(np.stack(frames), np.stack(actions).astype(np.float32), np.asarray(seeds), np.zeros(len(seeds), int),
                   tasks)


def run_demo(model: str, out: str, num_episodes: int = 4, steps: int = 64, num_context: int = 4,
             seed: int = 20_000) -> dict:
    """Runs the demo on the model's default embodiment; returns the fidelity report (also written to ``out``).

    Raises:
        ValueError: no plug-in serves the model's embodiment, or its plug-in names no demo policy.
    """
    from worldsim.embodiments import resolve_embodiment
    from worldsim.pipelines.world_model import WorldModelPipeline

    started = time.perf_counter()
    pipeline = WorldModelPipeline.from_pretrained(model)
    print(f"loaded {model} ({sum(p.numel() for p in pipeline.transformer.parameters()) / 1e6:.1f} M parameters)")
    name, plugin = resolve_embodiment(pipeline)
    if plugin.demo_policy is None:
        raise ValueError(f"embodiment {name!r} names no demo policy (EmbodimentPlugin.demo_policy)")
    windows = record_windows(plugin, num_episodes, num_context + steps, pipeline.image_size, seed,
                             cameras=pipeline.camera_keys)
    print(f"recorded {num_episodes} fresh real {plugin.default_env_id} episodes (seeds {windows.episodes.tolist()})")
    imagine_started = time.perf_counter()
    imagined = imagine_windows(pipeline, windows, num_context, batch_size=num_episodes, seed=0, embodiment=name)
    imagine_seconds = time.perf_counter() - imagine_started
    report = fidelity_report(imagined, windows, num_context, plugin)
    report.update({"model": model, "seeds": windows.episodes.tolist(), "imagine_seconds": imagine_seconds,
                   "imagined_frames_per_second": num_episodes * steps / imagine_seconds})
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    video = write_video(out_dir / "demo.mp4", side_by_side(windows.frames[:, num_context:], imagined, num_episodes),
                        fps=int(pipeline.metadata.get("fps", 10)))
    table = markdown_table(report)
    (out_dir / "metrics.md").write_text(table + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    print(table)
    print(f"imagined {num_episodes} x {steps} frames in {imagine_seconds:.1f} s; total {time.perf_counter() - started:.1f} s")
    print(f"wrote {video} (rows: episodes; left: real, right: imagined), {out_dir / 'metrics.md'}, {out_dir / 'metrics.json'}")
    return report
