"""The shipped PushT model against fresh real episodes (the issue's acceptance test; about half a minute)."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils.env_checker import check_env

import worldsim  # noqa: F401
from worldsim.demo import record_windows
from worldsim.embodiments.pusht import PushTEmbodiment
from worldsim.evaluation.fidelity import fidelity_report, imagine_windows
from worldsim.evaluation.sensitivity import action_sensitivity
from worldsim.pipelines.world_model import WorldModelPipeline

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "pusht"


def test_shipped_model_beats_copy_last_frame_on_fresh_real_episodes():
    pipeline = WorldModelPipeline.from_pretrained(CHECKPOINT)
    horizon, context = 16, 4
    windows = record_windows(PushTEmbodiment(), 4, context + horizon, pipeline.image_size, seed=30_000)
    imagined = imagine_windows(pipeline, windows, context, batch_size=4, seed=0, progress=False)
    summary = fidelity_report(imagined, windows, context, PushTEmbodiment())["summary"]
    assert summary["agent_error/model"] < summary["agent_error/copy_last_frame"]
    assert summary["agent_error_at_horizon/model"] < summary["agent_error_at_horizon/copy_last_frame"]
    assert summary["agent_missing/model"] < 0.05
    assert 0.5 < summary["block_area_ratio/model"] < 1.5  # the T block neither vanishes nor smears


def test_shipped_model_as_registered_env():
    env = gym.make("worldsim/WorldModel-v0", model=str(CHECKPOINT), render_mode="rgb_array")
    check_env(env.unwrapped)
    observation, info = env.reset(seed=0)
    assert observation.shape == (64, 64, 3) and observation.dtype == np.uint8
    observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert observation.shape == (64, 64, 3) and info["outcome_heads"] is True
    assert 0.0 <= reward <= 1.0 and terminated is False  # coverage from the reward head; the T is far from the goal


def test_action_sensitivity_check_passes_the_shipped_model_and_fails_an_action_blind_copy():
    """Branches of different actions from one real PushT state: the shipped model follows each branch's actions;
    the same model with its action embedding zeroed (it can no longer tell actions apart) does not."""
    pipeline = WorldModelPipeline.from_pretrained("checkpoints/pusht")
    report, video = action_sensitivity(pipeline, num_contexts=4, branches=4, horizon=16, progress=False)
    assert report.passed and report.accuracy >= 0.6, report
    assert video.shape == (4, 4, 16, 64, 128, 3)
    with torch.no_grad():
        pipeline.transformer.action_encoder.mlp[-1].weight.zero_()
        pipeline.transformer.action_encoder.mlp[-1].bias.zero_()
        pipeline.transformer.null_action.zero_()
    blind, _ = action_sensitivity(pipeline, num_contexts=4, branches=4, horizon=16, progress=False)
    assert not blind.passed and blind.accuracy < report.accuracy, blind


JOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "joint"


def test_joint_model_serves_each_embodiment_as_an_env():
    spaces = {"pusht": gym.spaces.Box, "breakout": gym.spaces.Discrete, "minigrid": gym.spaces.Discrete}
    pipeline = WorldModelPipeline.from_pretrained(JOINT)
    for name, space in spaces.items():
        env = gym.make("worldsim/WorldModel-v0", model=pipeline, embodiment=name)
        assert isinstance(env.action_space, space), (name, env.action_space)
        observation, info = env.reset(seed=0)
        observation, *_ = env.step(env.action_space.sample())
        assert observation.shape == (64, 64, 3) and info["embodiment"] == name


def test_joint_model_routes_each_modality_to_its_own_experts():
    from worldsim.evaluation.router import router_statistics

    class Actions:
        def __init__(self, action):
            self.action = action

    rng = np.random.default_rng(0)
    pipeline = WorldModelPipeline.from_pretrained(JOINT)
    stats = router_statistics(pipeline, {"pusht": Actions(rng.uniform(0, 512, (500, 2))),
                                         "breakout": Actions(rng.integers(0, 4, (500, 1)).astype(float)),
                                         "minigrid": Actions(rng.integers(0, 7, (500, 1)).astype(float))})
    assert stats["dead_experts"] == []
    assert min(stats["total_variation"].values()) >= 0.3, stats["total_variation"]


def test_joint_model_follows_breakout_actions():
    pipeline = WorldModelPipeline.from_pretrained(JOINT)
    report, _ = action_sensitivity(pipeline, embodiment="breakout", num_contexts=4, branches=4, horizon=16,
                                   progress=False)
    assert report.passed and report.accuracy >= 0.6, report


def test_joint_model_reads_each_embodiments_own_heads():
    pipeline = WorldModelPipeline.from_pretrained(JOINT)
    for name in ("pusht", "breakout", "minigrid"):
        assert pipeline.heads_for(name).config.embodiment == name
        env = gym.make("worldsim/WorldModel-v0", model=pipeline, embodiment=name)
        env.reset(seed=0)
        *_, info = env.step(env.action_space.sample())
        assert info["outcome_heads"] is True and info["embodiment"] == name
    # MiniGrid success is the agent on the goal: the head says no for a start far from it, yes for a goal frame
    from worldsim.embodiments import make_embodiment

    plugin = make_embodiment("minigrid")
    env = plugin.make_env()
    env.reset(options={"agent_pos": (1, 1), "agent_dir": 0})
    far = env.unwrapped.get_frame(highlight=False, tile_size=8)
    plugin.set_state(env, {"agent_pos": (6, 6), "agent_dir": 0, "step_count": 10})
    on_goal = env.render()
    success = pipeline.outcomes(np.stack([far, on_goal]), "minigrid")["success_probability"]
    assert success[0] < 0.1 < 0.9 < success[1]
