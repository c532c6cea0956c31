"""``make demo`` / ``worldsim demo``: fresh real PushT episodes, imagined by the shipped model, side by side.

Records a few new episodes in the real ``gym_pusht/PushT-v0`` with the held-out policy setting (a scripted pusher
setting and seeds that the training data never used), rolls the model out from their first frames under their
real actions, and writes the video, a metrics table (model vs copy-last-frame) and the JSON report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from worldsim.data.collect import make_recording_env, record_episode
from worldsim.data.frame_cache import resize_frames
from worldsim.data.policies import make_policy
from worldsim.evaluation.fidelity import Windows, fidelity_report, imagine_windows
from worldsim.evaluation.report import markdown_table, side_by_side
from worldsim.utils.video import write_video

# The held-out data setting: never used for training data (see checkpoints/pusht/README.md).
HELDOUT_POLICY = {"noise_std": 10.0, "wander_prob": 0.03, "reaction_delay": 2}


def record_pusht_windows(num_episodes: int, num_frames: int, image_size: int, seed: int = 20_000,
                         max_tries: int | None = None) -> Windows:
    """Records ``num_episodes`` real PushT episodes of at least ``num_frames`` frames (held-out policy setting).

    Returns:
        :class:`~worldsim.evaluation.fidelity.Windows` with frames `(E, num_frames, image_size, image_size, 3)`
        uint8 and actions `(E, num_frames - 1, 2)` float32 (workspace pixels).

    Raises:
        RuntimeError: fewer long-enough episodes than asked for within ``max_tries`` seeds (episodes that reach
            the goal early end early).
    """
    env = make_recording_env("gym_pusht/PushT-v0")
    frames, actions, seeds = [], [], []
    max_tries = max_tries or 4 * num_episodes
    try:
        for episode_seed in range(seed, seed + max_tries):
            policy = make_policy("pusht-scripted", env.action_space, **HELDOUT_POLICY)
            episode = record_episode(env, policy, episode_seed, max_steps=num_frames)
            if len(episode.frames) < num_frames:
                continue
            frames.append(resize_frames(episode.frames[:num_frames], image_size))
            actions.append(episode.action[:num_frames - 1])
            seeds.append(episode_seed)
            if len(frames) == num_episodes:
                break
    finally:
        env.close()
    if len(frames) < num_episodes:
        raise RuntimeError(f"only {len(frames)} of {num_episodes} episodes lasted {num_frames} frames in {max_tries} tries")
    return Windows(np.stack(frames), np.stack(actions).astype(np.float32), np.asarray(seeds), np.zeros(len(seeds), int))


def run_demo(model: str, out: str, num_episodes: int = 4, steps: int = 64, num_context: int = 4,
             seed: int = 20_000) -> dict:
    """Runs the demo; returns the fidelity report (also written to ``out``)."""
    from worldsim.pipelines.world_model import WorldModelPipeline

    started = time.perf_counter()
    pipeline = WorldModelPipeline.from_pretrained(model)
    print(f"loaded {model} ({sum(p.numel() for p in pipeline.transformer.parameters()) / 1e6:.1f} M parameters)")
    windows = record_pusht_windows(num_episodes, num_context + steps, pipeline.image_size, seed)
    print(f"recorded {num_episodes} fresh real PushT episodes (seeds {windows.episodes.tolist()})")
    imagine_started = time.perf_counter()
    imagined = imagine_windows(pipeline, windows, num_context, batch_size=num_episodes, seed=0)
    imagine_seconds = time.perf_counter() - imagine_started
    report = fidelity_report(imagined, windows, num_context)
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
