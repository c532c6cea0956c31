"""The native vector env: batched steps, NEXT_STEP autoreset, masked resets with real context, bad actions."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import worldsim  # noqa: F401  (registers worldsim/WorldModel-v0)
from tests.conftest import make_tiny_pipeline
from worldsim.envs import WorldModelVectorEnv


def test_make_vec_builds_the_native_vector_env(tiny_pipeline_path):
    envs = gym.make_vec("worldsim/WorldModel-v0", num_envs=3, vectorization_mode="vector_entry_point",
                        model=str(tiny_pipeline_path))
    assert isinstance(envs.unwrapped, WorldModelVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.unwrapped.max_episode_steps == 300  # from the registration
    observation, infos = envs.reset(seed=0)
    assert observation.shape == (3, 16, 16, 3) and observation.dtype == np.uint8
    assert envs.action_space.shape == (3, 2)
    observation, rewards, terminations, truncations, infos = envs.step(envs.action_space.sample())
    assert observation.shape == (3, 16, 16, 3) and rewards.shape == (3,) and not terminations.any()
    assert infos["imagined_steps"].tolist() == [1, 1, 1] and infos["outcome_heads"] is False
    assert observation in envs.observation_space


def test_same_seed_same_frames():
    runs = []
    for _ in range(2):
        envs = WorldModelVectorEnv(make_tiny_pipeline(), num_envs=2)
        envs.reset(seed=5)
        runs.append(envs.step(np.full((2, 2), 256.0, np.float32))[0])
    np.testing.assert_array_equal(*runs)


def test_next_step_autoreset_restarts_only_the_finished_env():
    pipeline = make_tiny_pipeline()
    start_last = {tuple(clip[-1].flatten()[:12].tolist()) for clip in pipeline.start_set()[0].numpy()}
    envs = WorldModelVectorEnv(pipeline, num_envs=2, max_episode_steps=2)
    envs.reset(seed=0)
    action = np.full((2, 2), 100.0, np.float32)
    _, _, _, truncations, infos = envs.step(action)
    assert not truncations.any()
    envs.reset(options={"reset_mask": np.array([False, True])})  # env 1 restarts: its clock goes back to 0
    _, _, _, truncations, infos = envs.step(action)
    assert truncations.tolist() == [True, False] and infos["imagined_steps"].tolist() == [2, 1]
    bad_for_env_0 = np.array([[1e6, 1e6], [100.0, 100.0]], np.float32)  # ignored: env 0 is autoresetting
    observation, rewards, terminations, truncations, infos = envs.step(bad_for_env_0)
    assert infos["imagined_steps"].tolist() == [0, 2] and truncations.tolist() == [False, True]
    assert tuple(observation[0].flatten()[:12].tolist()) in start_last
    assert rewards[0] == 0.0 and not terminations[0]


def test_masked_reset_with_real_context_leaves_the_other_envs_alone():
    envs = WorldModelVectorEnv(make_tiny_pipeline(), num_envs=3)
    envs.reset(seed=1)
    observation, *_ = envs.step(np.full((3, 2), 300.0, np.float32))
    rng = np.random.default_rng(0)
    context = {"observation.image": rng.integers(0, 255, (1, 5, 32, 32, 3), dtype=np.uint8),  # resized to 16
               "action": rng.uniform(0, 512, (1, 4, 2))}
    after, infos = envs.reset(options={"reset_mask": np.array([False, True, False]), "context": context})
    np.testing.assert_array_equal(after[[0, 2]], observation[[0, 2]])
    assert not np.array_equal(after[1], observation[1]) and infos["imagined_steps"].tolist() == [1, 0, 1]
    stepped, *_ = envs.step(np.full((3, 2), 300.0, np.float32))  # the longer context is spliced in, all step on
    assert stepped.shape == (3, 16, 16, 3)


@pytest.mark.parametrize("actions, message", [
    (np.zeros((2, 2)), r"expected \(3, \*\(2,\)\)"),
    (np.array([[0, 0], [np.nan, 1], [0, 0]]), "sub-env 1: .*NaN"),
    (np.array([[0, 0], [0, 0], [600, 0]]), "sub-env 2: .*outside"),
])
def test_bad_actions_name_the_sub_env_and_change_nothing(actions, message):
    envs = WorldModelVectorEnv(make_tiny_pipeline(), num_envs=3)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        envs.step(actions)
    _, _, _, _, infos = envs.step(np.zeros((3, 2), np.float32))
    assert infos["imagined_steps"].tolist() == [1, 1, 1]


def test_bad_resets_are_refused():
    envs = WorldModelVectorEnv(make_tiny_pipeline(), num_envs=2)
    with pytest.raises(ValueError, match="first reset"):
        envs.reset(options={"reset_mask": np.array([True, False])})
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="reset_mask"):
        envs.reset(options={"reset_mask": np.array([1, 0])})
    with pytest.raises(ValueError, match="2 clips for 1"):
        envs.reset(options={"reset_mask": np.array([True, False]),
                            "context": {"observation.image": np.zeros((2, 2, 16, 16, 3), np.uint8),
                                        "action": np.zeros((2, 1, 2))}})
    with pytest.raises(ValueError, match="num_envs"):
        WorldModelVectorEnv(make_tiny_pipeline(), num_envs=0)
    with pytest.raises(RuntimeError, match="reset"):
        WorldModelVectorEnv(make_tiny_pipeline(), num_envs=1).step(np.zeros((1, 2)))


def test_disagreement_between_samples_is_reported_per_env():
    from worldsim.envs import WorldModelEnv

    envs = WorldModelVectorEnv(make_tiny_pipeline(), num_envs=2, disagreement_samples=3)
    envs.reset(seed=0)
    observation, _, _, _, infos = envs.step(np.full((2, 2), 200.0, np.float32))
    assert observation.shape == (2, 16, 16, 3) and infos["disagreement"].shape == (2,)
    assert np.all((infos["disagreement"] > 0) & (infos["disagreement"] < 1))  # different noise, different frames
    envs.step(np.full((2, 2), 100.0, np.float32))  # the carried state keeps stepping
    env = WorldModelEnv(make_tiny_pipeline(), disagreement_samples=2)
    env.reset(seed=0)
    *_, info = env.step(np.array([50.0, 60.0], np.float32))
    assert 0 < info["disagreement"] < 1
    with pytest.raises(ValueError, match="disagreement_samples"):
        WorldModelEnv(make_tiny_pipeline(), disagreement_samples=0)


def test_step_with_disagreement_refuses_bad_input_and_keeps_the_state():
    pipeline = make_tiny_pipeline()
    rng = np.random.default_rng(0)
    state = pipeline.encode_context(rng.integers(0, 255, (2, 2, 16, 16, 3), dtype=np.uint8),
                                    rng.uniform(0, 512, (2, 1, 2)).astype(np.float32))
    with pytest.raises(ValueError, match="num_samples"):
        pipeline.step_with_disagreement(state, np.zeros((2, 2)), 1)
    with pytest.raises(ValueError, match="action"):
        pipeline.step_with_disagreement(state, np.zeros((3, 2)), 2)
    assert not state.is_stale
    carried, disagreement = pipeline.step_with_disagreement(state, np.zeros((2, 2), np.float32), 2)
    assert carried.batch_size == 2 and disagreement.shape == (2,) and carried.cache.batch_size == 2
