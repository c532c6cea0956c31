import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import worldsim  # noqa: F401  (registers worldsim/WorldModel-v0)
from worldsim.envs import WorldModelEnv


@pytest.fixture
def env(tiny_pipeline_path):
    return gym.make("worldsim/WorldModel-v0", model=str(tiny_pipeline_path), render_mode="rgb_array")


def test_check_env_passes(tiny_pipeline_path):
    check_env(WorldModelEnv(str(tiny_pipeline_path), render_mode="rgb_array"), skip_render_check=False)


def test_reset_with_context_and_step(env):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)  # resized to the model's 16 x 16
    actions = rng.uniform(0, 512, (3, 2)).astype(np.float32)
    obs, info = env.reset(seed=0, options={"context": {"observation.image": frames, "action": actions}})
    assert obs.shape == (16, 16, 3) and obs.dtype == np.uint8
    assert info["outcome_heads"] is False and "no outcome heads" in info["note"]
    obs, reward, terminated, truncated, info = env.step(np.array([100.0, 200.0], np.float32))
    assert obs.shape == (16, 16, 3) and reward == 0.0 and not terminated and not truncated
    assert info["imagined_steps"] == 1
    np.testing.assert_array_equal(env.render(), obs)


@pytest.mark.parametrize("bad, message", [
    (np.array([1.0]), r"shape \(1,\); expected \(2,\)"),
    (np.array([np.nan, 1.0]), "NaN or inf"),
    (np.array([np.inf, 1.0]), "NaN or inf"),
    (np.array([600.0, 1.0]), r"outside the action space.*high \[512.0, 512.0\]"),
    (np.array([-1.0, 1.0]), "outside the action space"),
    ("left", "dtype"),
    (np.array(["1", "2"]), "dtype"),
    (np.array([[1.0, 2.0]]), r"shape \(1, 2\)"),
])
def test_bad_action_raises_and_leaves_state_unchanged(tiny_pipeline_path, bad, message):
    good = np.array([300.0, 300.0], np.float32)
    reference = WorldModelEnv(str(tiny_pipeline_path))
    reference.reset(seed=1)
    expected, *_ = reference.step(good)

    env = WorldModelEnv(str(tiny_pipeline_path))
    env.reset(seed=1)
    with pytest.raises(ValueError, match=message):
        env.step(bad)
    observation, *_ = env.step(good)
    np.testing.assert_array_equal(observation, expected)  # the failed step changed nothing


def test_bad_context_is_refused(tiny_pipeline_path):
    env = WorldModelEnv(str(tiny_pipeline_path))
    first, _ = env.reset(seed=2)
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    cases = [
        ({"observation.image": frames, "action": np.zeros((3, 2))}, r"shape \(3, 2\); expected \(2, 2\)"),
        ({"observation.image": frames.astype(np.float32), "action": np.zeros((2, 2))}, "must be uint8"),
        ({"observation.image": frames[..., :1], "action": np.zeros((2, 2))}, "must be uint8"),
        ({"observation.image": frames, "action": np.full((2, 2), np.nan)}, "NaN"),
        ({"action": np.zeros((2, 2))}, "lacks camera"),
    ]
    for context, message in cases:
        with pytest.raises(ValueError, match=message):
            env.reset(options={"context": context})
    # the env still runs from its previous state
    assert env.step(np.array([10.0, 10.0], np.float32))[0].shape == first.shape


def test_step_before_reset(tiny_pipeline_path):
    with pytest.raises(RuntimeError, match="reset"):
        WorldModelEnv(str(tiny_pipeline_path)).step(np.zeros(2, np.float32))


def test_seeded_resets_are_reproducible(tiny_pipeline_path):
    def run(seed):
        env = WorldModelEnv(str(tiny_pipeline_path))
        obs = [env.reset(seed=seed)[0]]
        for x in (50.0, 150.0, 250.0):
            obs.append(env.step(np.array([x, x], np.float32))[0])
        return np.stack(obs)

    np.testing.assert_array_equal(run(5), run(5))
