"""Outcome heads: label alignment, training on real episodes, the env's reward/termination/success, scorers."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import worldsim  # noqa: F401
from worldsim.constants import REWARD
from worldsim.data.lerobot import LeRobotDataset
from worldsim.envs import WorldModelEnv, WorldModelVectorEnv
from worldsim.models.heads import OutcomeHeads
from worldsim.pipelines.world_model import WorldModelPipeline
from worldsim.training.train_heads import frame_labels, reliability_table


def test_pusht_frames_are_labelled_from_their_state_as_the_env_scores_them(pusht_dataset):
    dataset = LeRobotDataset(pusht_dataset)
    rows, labels = frame_labels(dataset)
    assert len(rows) == len(dataset.frame_index)  # every frame, first frames included
    # where a frame has a producing transition, its label is exactly the reward the env gave for it
    reward = np.asarray(dataset.columns[REWARD], dtype=np.float32).reshape(-1)
    later = np.flatnonzero(dataset.frame_index > 0)
    np.testing.assert_allclose(labels["reward"][later], reward[later - 1], atol=1e-5)
    np.testing.assert_array_equal(labels["success"], labels["reward"] >= 1.0)


def test_near_goal_starts_put_the_block_on_the_goal(tmp_path):
    from worldsim.data.collect import collect
    from worldsim.embodiments.pusht.perception import pusht_coverage

    root = collect("gym_pusht/PushT-v0", "random", 4, tmp_path / "near", seed=1, max_steps=2,
                   start="pusht-near-goal", progress=False)
    dataset = LeRobotDataset(root)
    first = dataset.columns["observation.environment_state"][dataset.frame_index == 0]
    assert np.all(pusht_coverage(first[:, 2:5]) > 0.85)
    with pytest.raises(ValueError, match="unknown start"):
        collect("gym_pusht/PushT-v0", "random", 1, tmp_path / "bad", start="nowhere", progress=False)


def test_reliability_table_by_hand():
    probability = np.array([0.05, 0.08, 0.55, 0.95, 0.91])
    outcome = np.array([0, 0, 1, 1, 0])
    table = reliability_table(probability, outcome, bins=10)
    assert [row["count"] for row in table] == [2, 1, 2]
    assert table[0]["observed_frequency"] == 0.0 and table[2]["observed_frequency"] == 0.5
    assert table[2]["mean_predicted"] == pytest.approx(0.93)


def test_train_heads_reports_and_saves_loadable_heads(model_with_heads):
    path, report = model_with_heads
    assert report["val_frames"] > 0 and report["train_frames"] > report["val_frames"]
    assert np.isfinite(report["reward_mae"])
    # 24-step episodes never terminate: no positive labels, so those heads stay untrained and unreported
    assert report["untrained_heads"] == ["termination", "success"] and report["reliability"] == {}
    assert (path / "heads" / "pusht" / "metrics.json").is_file()
    assert not list((path / "heads").rglob("*.bin"))  # safetensors only
    pipeline = WorldModelPipeline.from_pretrained(path)
    assert isinstance(pipeline.heads, OutcomeHeads)
    outcomes = pipeline.outcomes(np.zeros((3, 16, 16, 3), np.uint8))
    assert set(outcomes) == {"reward"} and outcomes["reward"].shape == (3,)


def test_env_rewards_come_from_the_heads(model_with_heads):
    path, _ = model_with_heads
    env = gym.make("worldsim/WorldModel-v0", model=str(path))
    check_env(env.unwrapped)
    env.reset(seed=0)
    observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
    expected = env.unwrapped.pipeline.outcomes(observation[None])
    assert info["outcome_heads"] is True and "note" not in info
    assert reward == pytest.approx(float(expected["reward"][0]), abs=1e-6)
    assert "success_probability" not in info and terminated is False  # untrained heads are not reported
    envs = WorldModelVectorEnv(str(path), num_envs=2)
    envs.reset(seed=0)
    _, rewards, _, _, infos = envs.step(np.full((2, 2), 200.0, np.float32))
    assert rewards.shape == (2,) and infos["head_reward"].shape == (2,)


def test_trained_probability_heads_drive_termination_and_success():
    from tests.conftest import make_tiny_pipeline, randomize
    from worldsim.envs.world_model_env import predict_outcomes

    pipeline = make_tiny_pipeline()
    pipeline.heads = randomize(OutcomeHeads(in_channels=4, sample_size=4)).eval()
    with torch.no_grad():  # a termination logit that is large for every frame
        pipeline.heads.features[-1].bias.copy_(torch.tensor([0.5, 20.0, -20.0]))
    rewards, terminated, info = predict_outcomes(pipeline, np.zeros((2, 16, 16, 3), np.uint8))
    assert terminated.tolist() == [True, True] and info["success"].tolist() == [False, False]
    assert np.all(info["termination_probability"] > 0.99) and rewards.shape == (2,)
    assert np.all((pipeline.heads.config.reward_min <= rewards) & (rewards <= pipeline.heads.config.reward_max))


def test_a_scorer_replaces_the_reward_and_bad_scores_are_refused(model_with_heads):
    path, _ = model_with_heads
    seen = {}

    def brightness(frames, task):
        seen["task"], seen["shape"] = task, frames.shape
        return frames.reshape(len(frames), -1).mean(axis=1) / 255.0

    env = WorldModelEnv(str(path), scorer=brightness, task="push the T onto the goal")
    env.reset(seed=0)
    observation, reward, *_, info = env.step(np.array([100.0, 100.0], np.float32))
    assert reward == pytest.approx(observation.mean() / 255.0) and info["score"] == reward
    assert seen == {"task": "push the T onto the goal", "shape": (1, 16, 16, 3)}
    assert "head_reward" in info
    broken = WorldModelEnv(str(path), scorer=lambda frames, task: np.array([np.nan]))
    broken.reset(seed=0)
    with pytest.raises(ValueError, match="scorer returned"):
        broken.step(np.array([100.0, 100.0], np.float32))
    with pytest.raises(ValueError, match="callable"):
        WorldModelEnv(str(path), scorer="not a function")


def test_evaluate_reports_the_reward_heads_error_on_imagined_frames(model_with_heads, pusht_dataset):
    from worldsim.evaluation.fidelity import add_reward_report, evaluate_fidelity, imagine_windows
    from worldsim.evaluation.report import markdown_table

    path, _ = model_with_heads
    pipeline = WorldModelPipeline.from_pretrained(path)
    report, imagined, windows = evaluate_fidelity(pipeline, LeRobotDataset(pusht_dataset), horizon=4, num_context=2,
                                                  progress=False)
    summary = report["summary"]
    assert len(report["per_step"]["reward_error"]["model"]) == 4
    for label in ("model", "copy_last_frame", "real_frames"):
        assert 0.0 <= summary[f"reward_error/{label}"] < 10.0
    # the target of imagined step 0 is the reward of the transition out of the last context frame (row start + 1)
    dataset = LeRobotDataset(pusht_dataset)
    reward = np.asarray(dataset.columns[REWARD], dtype=np.float64).reshape(-1)
    rows = [dataset.episode_slice(int(e)).start + int(s) + 1 for e, s in zip(windows.episodes, windows.starts)]
    error = np.abs(pipeline.outcomes(windows.frames[:, 2])["reward"] - reward[rows]).mean()
    assert report["per_step"]["reward_error"]["real_frames"][0] == pytest.approx(error, abs=1e-6)
    assert "reward-head error" in markdown_table(report) and "imagined latents" in markdown_table(report)
    # the model's error is read from the latents the frames were decoded from, as the env reads them
    assert report["reward_model_input"] == "latents"
    again, latents = imagine_windows(pipeline, windows, 2, seed=0, progress=False, return_latents=True)
    np.testing.assert_array_equal(again, imagined)
    targets = reward[np.array(rows)[:, None] + np.arange(4)[None]]
    from_latents = pipeline.outcomes(None, latents=torch.from_numpy(latents.reshape(-1, *latents.shape[2:])))["reward"]
    expected = np.abs(from_latents.reshape(targets.shape) - targets).mean()
    assert summary["reward_error/model"] == pytest.approx(expected, abs=1e-6)
    # without latents the frames are encoded again: another input, and the report says so
    by_frames = add_reward_report({"summary": {}, "per_step": {}}, pipeline, dataset, windows, imagined, 2)
    assert by_frames["reward_model_input"] == "frames"
    assert by_frames["summary"]["reward_error/model"] != pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="imagined_latents"):
        add_reward_report({"summary": {}, "per_step": {}}, pipeline, dataset, windows, imagined, 2,
                          imagined_latents=latents[:, :2])


def test_discounted_values_by_hand():
    from worldsim.training.train_heads import discounted_values

    # episode 0: rewards 0, 1 (held after the end); episode 1: a single frame of reward 0.5
    values = discounted_values(np.array([0.0, 1.0, 0.5]), np.array([0, 0, 1]), discount=0.5)
    # V(1) = 0.5 * 1 + 0.5 * 1 = 1 (the last reward is held); V(0) = 0.5 * 0 + 0.5 * V(1) = 0.5; V(2) = 0.5
    np.testing.assert_allclose(values, [0.5, 1.0, 0.5])
    with pytest.raises(ValueError, match="discount"):
        discounted_values(np.zeros(2), np.zeros(2, int), discount=1.0)
    with pytest.raises(ValueError, match="shapes"):
        discounted_values(np.zeros(2), np.zeros(3, int), discount=0.9)


def test_value_head_is_trained_saved_and_scores_steering(tiny_pipeline_path, pusht_dataset, tmp_path):
    import shutil

    from worldsim.models.heads import OutcomeHeads
    from worldsim.steering import OutcomePredictor
    from worldsim.training.train_heads import train_heads

    path = tmp_path / "model"
    shutil.copytree(tiny_pipeline_path, path)
    report = train_heads(path, [pusht_dataset], steps=30, batch_size=32, val_episodes=1, progress=False,
                         value_discount=0.9)
    assert report["value_discount"] == 0.9 and np.isfinite(report["value_mae"])
    heads = OutcomeHeads.from_pretrained(path / "heads" / "pusht")
    assert heads.config.value_discount == 0.9
    predictor = OutcomePredictor(path)
    assert predictor.aggregate == "value"  # the default once the heads have a value output
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    prediction = predictor.predict(frames, rng.uniform(0, 512, (2, 2)), rng.uniform(0, 512, (3, 2, 2)))
    values = predictor.pipeline.outcomes(prediction.frames[:, -1])["value"]
    np.testing.assert_allclose(prediction.scores, values, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="value_discount"):
        OutcomeHeads(value_discount=1.5)


def test_value_aggregate_needs_a_value_head(model_with_heads):
    from worldsim.steering import OutcomePredictor

    with pytest.raises(ValueError, match="value output"):
        OutcomePredictor(model_with_heads[0], aggregate="value")


def test_heads_config_is_validated_and_taken_as_an_object_or_as_keywords(model_with_heads, pusht_dataset, tmp_path):
    import json
    from dataclasses import asdict

    from worldsim.cli.main import build_parser
    from worldsim.cli.training import _verb_config
    from worldsim.training.config import HeadsConfig
    from worldsim.training.train_heads import train_heads

    path, report = model_with_heads  # trained with keywords: steps=60, batch_size=32, val_episodes=1
    expected = HeadsConfig(steps=60, batch_size=32, val_episodes=1)
    assert report["config"] == asdict(expected)
    assert json.loads((path / "heads" / "pusht" / "metrics.json").read_text())["config"] == asdict(expected)
    # the same settings as one object train the same heads
    again = train_heads(path, [pusht_dataset], expected, output=tmp_path / "heads", progress=False)
    assert again["reward_mae"] == pytest.approx(report["reward_mae"], abs=1e-6)
    same = [{key: value for key, value in r.items() if key != "wall_seconds"} for r in (again, report)]
    assert json.dumps(same[0], sort_keys=True) == json.dumps(same[1], sort_keys=True)  # NaN Pearson r included
    with pytest.raises(ValueError, match=r"heads\.steps must be > 0, got 0"):
        HeadsConfig(steps=0)
    with pytest.raises(ValueError, match=r"heads\.value_discount"):
        HeadsConfig(value_discount=1.0)
    with pytest.raises(ValueError, match=r"heads\.val_episodes must be >= 0"):
        HeadsConfig(val_episodes=-1)
    with pytest.raises(ValueError, match=r"heads\.batch_size"):  # keywords replace the object's fields, validated
        train_heads(path, [pusht_dataset], expected, batch_size=0)
    with pytest.raises(TypeError, match="'stepz'"):
        train_heads(path, [pusht_dataset], stepz=3)
    # the CLI: a flag left out leaves the field to --config or the default, which is the flag's old default
    args = build_parser().parse_args(["train-heads", "--model", "m", "--dataset", "d"])
    assert _verb_config(args, HeadsConfig) == HeadsConfig(steps=3000, batch_size=256, learning_rate=1e-3,
                                                          val_episodes=10, seed=0)
    preset = tmp_path / "heads.yaml"
    preset.write_text("steps: 500\nbatch_size: 8\n")
    args = build_parser().parse_args(["train-heads", "--model", "m", "--dataset", "d", "--config", str(preset),
                                      "--batch-size", "16", "value_discount=0.9"])
    assert _verb_config(args, HeadsConfig) == HeadsConfig(steps=500, batch_size=16, value_discount=0.9)
