"""The shipped PushT model against fresh real episodes (the issue's acceptance test; about half a minute)."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils.env_checker import check_env

import worldsim  # noqa: F401
from worldsim.demo import record_pusht_windows
from worldsim.evaluation.fidelity import fidelity_report, imagine_windows
from worldsim.evaluation.sensitivity import action_sensitivity
from worldsim.pipelines.world_model import WorldModelPipeline

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "pusht"


def test_shipped_model_beats_copy_last_frame_on_fresh_real_episodes():
    pipeline = WorldModelPipeline.from_pretrained(CHECKPOINT)
    horizon, context = 16, 4
    windows = record_pusht_windows(4, context + horizon, pipeline.image_size, seed=30_000)
    imagined = imagine_windows(pipeline, windows, context, batch_size=4, seed=0, progress=False)
    summary = fidelity_report(imagined, windows, context)["summary"]
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
    assert observation.shape == (64, 64, 3) and info["outcome_heads"] is False


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
