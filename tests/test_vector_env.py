"""The native vector env: batched steps, NEXT_STEP autoreset, masked resets with real context, bad actions."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
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


def _sink_pipeline(sink_size: int = 0):
    """The tiny pipeline in float32 (batched and single rollouts then agree to float rounding), optionally with
    attention sinks next to a 3-frame local window. Its attention is sharpened (QK-norm gains x4, logits x16) so
    that which frames a rollout attends to, and at which distances, shows in its pixels."""
    pipeline = make_tiny_pipeline()
    pipeline.metadata.update(bf16=False, sink_size=sink_size, local_attn_size=3)
    with torch.no_grad():
        for block in pipeline.transformer.blocks:
            block.attn.norm_q.weight.mul_(4.0)
            block.attn.norm_k.weight.mul_(4.0)
    return pipeline


def _assert_same_frames(actual, expected):
    """uint8 frames equal up to one grey level (float rounding of batched vs single attention)."""
    difference = np.abs(actual.astype(int) - expected.astype(int))
    assert difference.max() <= 1 and difference.mean() < 0.05, (difference.max(), difference.mean())


def _single(pipeline, seed, actions, **kwargs):
    """Frames of a 1-env vector env reset with ``seed`` and stepped with ``actions`` `(S, 2)`."""
    env = WorldModelVectorEnv(pipeline, num_envs=1, **kwargs)
    frames = [env.reset(seed=seed)[0][0]]
    frames += [env.step(action[None])[0][0] for action in actions]
    return np.stack(frames)


def test_a_seed_list_gives_each_sub_env_its_own_streams():
    """Sub-env i of ``reset(seed=[a, b, c])`` imagines what a 1-env ``reset(seed=a)`` does (start clip, noise,
    autoresets); the int seed keeps one shared stream."""
    pipeline = _sink_pipeline()
    seeds, steps = [3, 11, 4], 5
    actions = np.random.default_rng(0).uniform(0, 512, (steps, 3, 2)).astype(np.float32)
    envs = WorldModelVectorEnv(pipeline, num_envs=3, max_episode_steps=2)
    frames = [envs.reset(seed=seeds)[0]]
    frames += [envs.step(action)[0] for action in actions]
    frames = np.stack(frames, axis=1)  # (3, 1 + steps, H, W, 3)
    for index, seed in enumerate(seeds):
        _assert_same_frames(frames[index], _single(pipeline, seed, actions[:, index], max_episode_steps=2))
    assert not np.array_equal(frames[0], frames[2])
    # the shared stream: a list is not read as its first entry, and an int seed gives other frames
    shared = WorldModelVectorEnv(pipeline, num_envs=3, max_episode_steps=2)
    shared.reset(seed=3)
    assert not np.array_equal(np.stack([shared.step(action)[0] for action in actions[:2]], axis=1), frames[:, 1:3])


def test_bad_seed_lists_are_refused_and_change_nothing():
    pipeline = _sink_pipeline()
    reference = WorldModelVectorEnv(pipeline, num_envs=2)
    reference.reset(seed=1)
    expected = reference.step(np.full((2, 2), 200.0, np.float32))[0]
    envs = WorldModelVectorEnv(pipeline, num_envs=2)
    envs.reset(seed=1)
    for seed, message in (([1, 2, 3], r"list of 3 entries \[1, 2, 3\].*num_envs=2"),
                          ([1], "list of 1 entries"), ([1, -1], r"seed\[1\] is -1"), ([1.5, 2], r"seed\[0\] is 1.5"),
                          ([None, True], r"seed\[1\] is True")):
        with pytest.raises(ValueError, match=message):
            envs.reset(seed=seed)
    np.testing.assert_array_equal(envs.step(np.full((2, 2), 200.0, np.float32))[0], expected)  # nothing changed


@pytest.mark.parametrize("sink_size, context_frames", [(1, 4), (2, 1), (3, 2)])
def test_a_masked_reset_with_sinks_restarts_one_sub_env_as_a_fresh_env(sink_size, context_frames):
    """With attention sinks, a sub-env restarted by ``reset_mask`` gets its own new sinks: its frames equal those of a
    fresh env started from the same context and seed, far past the window, and the other sub-envs go on as if
    nothing happened."""
    pipeline = _sink_pipeline(sink_size)
    rng = np.random.default_rng(1)
    actions = rng.uniform(0, 512, (9, 3, 2)).astype(np.float32)
    context = {"observation.image": rng.integers(0, 255, (1, context_frames, 16, 16, 3), dtype=np.uint8),
               "action": rng.uniform(0, 512, (1, context_frames - 1, 2))}
    envs = WorldModelVectorEnv(pipeline, num_envs=3)
    frames = [envs.reset(seed=[5, 6, 7])[0]]
    frames += [envs.step(action)[0] for action in actions[:3]]
    restarted, _ = envs.reset(seed=[None, 9, None], options={"reset_mask": np.array([False, True, False]),
                                                             "context": context})
    frames.append(restarted)
    frames += [envs.step(action)[0] for action in actions[3:]]
    frames = np.stack(frames, axis=1)  # (3, 11, H, W, 3): frame 4 is the masked reset's
    fresh = WorldModelVectorEnv(pipeline, num_envs=1)
    expected = [fresh.reset(seed=9, options={"context": context})[0][0]]
    expected += [fresh.step(action[None, 1])[0][0] for action in actions[3:]]
    _assert_same_frames(frames[1, 4:], np.stack(expected))
    np.testing.assert_array_equal(frames[[0, 2], 4], frames[[0, 2], 3])  # the masked reset left them alone
    _assert_same_frames(frames[0, [0, 1, 2, 3, *range(5, 11)]], _single(pipeline, 5, actions[:, 0]))
    cache = envs._state.cache  # by now the restarted row holds a full window again, in step with the others
    assert cache.frame_positions() is None and bool(cache.valid.all())


def test_autoresets_with_sinks_match_fresh_envs():
    """NEXT_STEP autoresets with attention sinks, at different times in different sub-envs: every sub-env imagines
    what a 1-env with its seed imagines, episode after episode."""
    pipeline = _sink_pipeline(sink_size=2)
    actions = np.random.default_rng(2).uniform(0, 512, (12, 2, 2)).astype(np.float32)
    envs = WorldModelVectorEnv(pipeline, num_envs=2, max_episode_steps=4)
    frames = [envs.reset(seed=[4, 5])[0]]
    frames.append(envs.step(actions[0])[0])
    frames.append(envs.reset(seed=[None, 8], options={"reset_mask": np.array([False, True])})[0])  # out of phase
    ends = []
    for action in actions[1:]:
        observation, _, _, truncations, _ = envs.step(action)
        frames.append(observation)
        ends.append(truncations.copy())
    frames = np.stack(frames, axis=1)  # (2, 14, H, W, 3): frame 2 is the masked reset's
    assert np.array(ends)[:, 0].sum() >= 2 and np.array(ends)[:, 1].sum() >= 2  # both autoreset more than once
    assert not np.array_equal(np.array(ends)[:, 0], np.array(ends)[:, 1])  # at different steps
    _assert_same_frames(frames[0, [0, 1, *range(3, 14)]], _single(pipeline, 4, actions[:, 0], max_episode_steps=4))
    _assert_same_frames(frames[1, 2:], _single(pipeline, 8, actions[1:, 1], max_episode_steps=4))
