"""Crash safety: real processes killed with SIGKILL at a random point lose nothing that was committed.

Training resumes from its last checkpoint and continues with the same data order and RNG state (same losses, same
weights as an uninterrupted run); a dataset recording killed mid-episode is readable with its completed episodes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from worldsim.data.lerobot import LeRobotDataset, LeRobotDatasetWriter
from worldsim.training.config import load_config
from worldsim.training.train_autoencoder import train_autoencoder

from tests.test_data import synthetic_episode
from tests.test_training import tiny_overrides

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "SDL_VIDEODRIVER": "dummy"}


def _wait_for(predicate, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended (exit {process.returncode}) before the kill point")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the kill point")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def tiny_run(pusht_dataset, tmp_path_factory):
    """The tiny training config's overrides, with its autoencoder trained once."""
    out = tmp_path_factory.mktemp("crash")
    overrides = tiny_overrides(pusht_dataset, out)
    train_autoencoder(load_config("configs/pusht.yaml", overrides), progress=False)
    return out, overrides


def _train_command(overrides, output_dir, max_steps) -> list[str]:
    return [sys.executable, "-m", "worldsim.cli.main", "train", "--config", "configs/pusht.yaml", *overrides,
            f"train.max_steps={max_steps}", f"train.output_dir={output_dir}", "train.checkpoints_total_limit=3"]


def _log(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_training_killed_at_a_random_point_resumes_with_the_same_losses_and_weights(tiny_run):
    out, overrides = tiny_run
    steps = 12
    subprocess.run(_train_command(overrides, out / "clean", steps), cwd=REPO, env=_env(), check=True,
                   capture_output=True)
    clean = _log(out / "clean")
    assert [record["step"] for record in clean] == list(range(1, steps + 1))

    killed = out / "killed"
    rng = np.random.default_rng()
    delay = float(rng.uniform(0.0, 0.8))
    process = subprocess.Popen(_train_command(overrides, killed, steps), cwd=REPO, env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (killed / "checkpoint-2").is_dir(), timeout=120, process=process)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "final").exists(), f"the run finished within {delay:.2f} s; the kill came too late"
    checkpoints = sorted(int(p.name.split("-")[1]) for p in killed.glob("checkpoint-*"))
    assert checkpoints, "no checkpoint survived"

    subprocess.run(_train_command(overrides, killed, steps), cwd=REPO, env=_env(), check=True, capture_output=True)
    resumed = _log(killed)
    assert [record["step"] for record in resumed] == list(range(1, steps + 1))  # each step once, no torn line
    np.testing.assert_allclose([r["loss"] for r in resumed], [r["loss"] for r in clean], rtol=1e-6)
    for name in ("transformer/diffusion_pytorch_model.safetensors",):
        a, b = load_file(out / "clean" / "final" / name), load_file(killed / "final" / name)
        for key in a:
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), err_msg=key)
    print(f"killed {delay:.2f} s after checkpoint-2 appeared; checkpoints on disk {checkpoints}; resumed from "
          f"{max(checkpoints)}; {steps} steps, losses and weights equal to the uninterrupted run")


WRITER_SCRIPT = textwrap.dedent("""
    import sys
    from tests.test_data import synthetic_episode
    from worldsim.data.lerobot import LeRobotDatasetWriter
    writer = LeRobotDatasetWriter(sys.argv[1], fps=10, robot_type="synthetic")
    offset = 0
    for index in range(1000):
        length = 6 + index % 5
        writer.add_episode(synthetic_episode(length, offset, size=64))
        offset += length
        print(index + 1, flush=True)
""")


@pytest.mark.slow
def test_recording_killed_mid_episode_keeps_the_completed_episodes(tmp_path):
    rng = np.random.default_rng()
    for trial in range(3):
        root = tmp_path / f"ds{trial}"
        process = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(root)], cwd=REPO, env=_env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        target = int(rng.integers(1, 6))
        try:
            for line in process.stdout:
                if int(line) >= target:
                    break
            time.sleep(float(rng.uniform(0.0, 0.3)))  # somewhere inside a later episode's video, data or metadata
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait()
        dataset = LeRobotDataset(root)
        assert dataset.num_episodes >= target
        offset = 0
        for episode in range(dataset.num_episodes):  # every committed episode is complete and decodes
            length = 6 + episode % 5
            original = synthetic_episode(length, offset, size=64)
            np.testing.assert_array_equal(dataset.action[dataset.episode_slice(episode)], original.action)
            assert dataset.decode_episode(episode).shape == original.frames.shape
            offset += length
        assert dataset.stats["action"]["count"] == [dataset.num_frames]


def test_recording_interrupted_between_metadata_files_reads_the_committed_episodes(tmp_path, monkeypatch):
    import worldsim.data.lerobot as lerobot

    writer = LeRobotDatasetWriter(tmp_path / "ds", fps=10)
    writer.add_episode(synthetic_episode(5, 0))
    writer.add_episode(synthetic_episode(7, 5))
    real_write = lerobot.write_text_atomic

    def crash_before_info(path, text):
        if path.name == "info.json":
            raise KeyboardInterrupt  # the episode table and stats.json already hold episode 2, info.json does not
        real_write(path, text)

    monkeypatch.setattr(lerobot, "write_text_atomic", crash_before_info)
    with pytest.raises(KeyboardInterrupt):
        writer.add_episode(synthetic_episode(4, 12))
    with pytest.warns(UserWarning, match="uncommitted"):
        dataset = LeRobotDataset(tmp_path / "ds")
    assert dataset.num_episodes == 2 and dataset.num_frames == 12
    assert dataset.stats["action"]["count"] == [12]  # recomputed from the committed data, not the newer stats.json
    np.testing.assert_allclose(dataset.stats["action"]["max"], [11, 0])


def test_interrupted_collect_keeps_completed_episodes(tmp_path, monkeypatch):
    import worldsim.data.collect as collect_module

    real_record = collect_module.record_episode
    calls = []

    def record_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third episode
        return real_record(*args, **kwargs)

    monkeypatch.setattr(collect_module, "record_episode", record_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        collect_module.collect("gym_pusht/PushT-v0", "pusht-scripted", 5, tmp_path / "ds", seed=0, max_steps=8,
                               progress=False)
    assert LeRobotDataset(tmp_path / "ds").num_episodes == 2
