import json

import gymnasium as gym
import numpy as np
import pytest

from worldsim.cli.main import main
from worldsim.data.lerobot import LeRobotDataset
from worldsim.data.policies import make_policy
from worldsim.embodiments.pusht.scripted import PushTScriptedPolicy
from worldsim.evaluation.metrics import psnr
from worldsim.embodiments.pusht.perception import locate_agent


def fixed_policy(observation, info):
    return np.array([256.0, 256.0], np.float32)


def test_make_policy_names():
    space = gym.spaces.Box(0, 512, (2,), np.float32)
    assert isinstance(make_policy("pusht-scripted", space, noise_std=3.0), PushTScriptedPolicy)
    assert make_policy("tests.test_policies_and_cli:fixed_policy", space) is fixed_policy
    with pytest.raises(ValueError, match="known: random, .*pusht-scripted"):
        make_policy("expert", space)
    with pytest.raises(ValueError, match="noise_std must be >= 0"):
        PushTScriptedPolicy(noise_std=-1)


def test_scripted_policy_pushes_the_block_towards_the_goal():
    import gym_pusht  # noqa: F401

    env = gym.make("gym_pusht/PushT-v0", obs_type="state")
    improvements = []
    for seed in range(3):
        _, info = env.reset(seed=seed)
        policy = PushTScriptedPolicy()
        policy.reset(seed)
        start = np.linalg.norm(info["block_pose"][:2] - info["goal_pose"][:2])
        for _ in range(150):
            action = policy(None, info)
            assert env.action_space.contains(action)
            _, _, terminated, _, info = env.step(action)
            if terminated:
                break
        improvements.append(start - np.linalg.norm(info["block_pose"][:2] - info["goal_pose"][:2]))
    assert np.mean(improvements) > 20.0  # the block moves towards the goal


def test_locate_agent_and_psnr_on_hand_made_frames():
    frame = np.full((64, 64, 3), 255, np.uint8)
    frame[30:34, 10:14] = (65, 105, 225)  # agent disc around pixel (row 31.5, col 11.5)
    x, y = locate_agent(frame)
    assert abs(x - 12 * 8) < 1e-6 and abs(y - 32 * 8) < 1e-6
    assert np.isnan(locate_agent(np.full((64, 64, 3), 255, np.uint8))).all()
    assert psnr(frame, frame) == 100.0
    noisy = frame.copy()
    noisy[0, 0, 0] = 0
    assert psnr(noisy, frame) == pytest.approx(10 * np.log10(64 * 64 * 3))  # one pixel off by 255


def test_cli_collect_and_rollout(tmp_path, tiny_pipeline_path):
    out = tmp_path / "data"
    assert main(["collect", "--env", "gym_pusht/PushT-v0", "--policy", "pusht-scripted", "--episodes", "2",
                 "--max-steps", "12", "--out", str(out), "--policy-kwargs", "noise_std=[0,5]"]) == 0
    dataset = LeRobotDataset(out)
    assert dataset.num_episodes == 2 and dataset.env_id == "gym_pusht/PushT-v0"
    assert dataset.action_space["type"] == "Box"
    video = tmp_path / "r.mp4"
    assert main(["rollout", "--model", str(tiny_pipeline_path), "--dataset", str(out), "--episode", "1",
                 "--context", "3", "--steps", "4", "--out", str(video)]) == 0
    assert video.stat().st_size > 0
    report = tmp_path / "r.json"
    assert main(["evaluate", "--model", str(tiny_pipeline_path), "--dataset", str(out), "--horizon", "4",
                 "--context", "3", "--json", str(report), "--plot", str(tmp_path / "p.png")]) == 0
    summary = json.loads(report.read_text())["summary"]
    assert summary["psnr/copy_last_frame"] > 0 and "agent_error/model" in summary
    # errors are reported, not raised as tracebacks
    assert main(["collect", "--env", "gym_pusht/PushT-v0", "--episodes", "1", "--out", str(out)]) == 2


def test_collect_any_env_through_render(tmp_path):
    """An env with vector observations is recorded through render(); Discrete actions are stored as (T, 1)."""
    from worldsim.data.collect import collect

    root = collect("CartPole-v1", "random", 2, tmp_path / "cartpole", max_steps=5, progress=False)
    dataset = LeRobotDataset(root)
    assert dataset.frame_shape == (400, 600, 3)
    assert dataset.action.shape == (10, 1) and set(np.unique(dataset.action)) <= {0.0, 1.0}
    assert dataset.action_space == {"type": "Discrete", "n": 2, "start": 0}
    assert dataset.decode_episode(1).shape == (5, 400, 600, 3)
