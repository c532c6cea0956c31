"""The MiniGrid embodiment plug-in: perception on real frames, the policy zoo in the real env, the wrappers, labels."""
from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("minigrid")

from scipy.ndimage import gaussian_filter  # noqa: E402

from worldsim.constants import REWARD, SUCCESS  # noqa: E402
from worldsim.embodiments.base import check_plugin  # noqa: E402
from worldsim.embodiments.minigrid import (GoalFrameWrapper, MiniGridEmbodiment, MiniGridStateWrapper,  # noqa: E402
                                          NoisyPlannerChunks, ShortestPathPlanner, ZooCollectionPolicy)
from worldsim.embodiments.minigrid.perception import (agent_direction, agent_pose, locate_agent,  # noqa: E402
                                                      locate_controlled, locate_goal, on_goal, wall_cells)
from worldsim.embodiments.minigrid.policies import minigrid_zoo  # noqa: E402
from worldsim.embodiments.registry import make_embodiment  # noqa: E402

PLUGIN = MiniGridEmbodiment()
GOAL = (6, 6)


@pytest.fixture(scope="module")
def env():
    env = PLUGIN.make_env()
    yield env
    env.close()


@pytest.fixture(scope="module")
def real_frames(env):
    """Frames of 60 random starts plus every cell x direction of a column through the goal, with the truth."""
    frames, truth = [], []
    for seed in range(60):
        _, info = PLUGIN.reset_start(env, seed)
        frames.append(info["pixels"])
        truth.append((*env.unwrapped.agent_pos, env.unwrapped.agent_dir))
    for row in range(1, 7):
        for direction in range(4):
            frames.append(PLUGIN.set_state(env, {"agent_pos": (6, row), "agent_dir": direction, "step_count": 0}))
            truth.append((6, row, direction))
    return np.stack(frames), np.array(truth)


def _success_rates(policies: dict, seeds, horizon: int) -> dict[str, float]:
    """Runs each batched policy on one real env per start (lockstep) and returns its rate of reaching the goal."""
    envs = [PLUGIN.make_env() for _ in seeds]
    rates = {}
    for name, policy in policies.items():
        frames = np.stack([PLUGIN.reset_start(env, seed)[1]["pixels"] for env, seed in zip(envs, seeds)])
        policy.reset(len(seeds))
        done, success = np.zeros(len(seeds), bool), np.zeros(len(seeds), bool)
        for _ in range(horizon):
            actions = policy.act(frames)
            assert actions.shape == (len(seeds),) and actions.dtype == np.int64
            assert np.all((actions >= 0) & (actions <= 6))
            for index in np.flatnonzero(~done):
                _, reward, terminated, truncated, info = envs[index].step(actions[index])
                frames[index] = info["pixels"]
                success[index] |= PLUGIN.step_value(reward, terminated, info) > 0
                done[index] = terminated or truncated
            if done.all():
                break
        rates[name] = float(success.mean())
    return rates


# ------------------------------------------------------------------ perception
def test_perception_recovers_agent_cell_direction_and_goal_on_real_frames(real_frames):
    frames, truth = real_frames
    assert len({tuple(row) for row in truth[:60]}) > 30  # the random starts really differ
    np.testing.assert_array_equal(locate_agent(frames), truth[:, :2])
    np.testing.assert_array_equal(agent_direction(frames), truth[:, 2])
    np.testing.assert_array_equal(locate_goal(frames), np.tile(GOAL, (len(frames), 1)))
    np.testing.assert_array_equal(on_goal(frames), np.all(truth[:, :2] == GOAL, axis=1))
    assert on_goal(frames).sum() == 4  # the goal cell seen in all four directions
    # leading dimensions are kept
    cells, directions = agent_pose(frames[:60].reshape(6, 10, 64, 64, 3))
    assert cells.shape == (6, 10, 2) and directions.shape == (6, 10)
    np.testing.assert_array_equal(cells.reshape(60, 2), truth[:60, :2])


def test_perception_survives_mild_blur(real_frames):
    frames, truth = real_frames
    blurred = gaussian_filter(frames.astype(np.float32), sigma=(0, 0.7, 0.7, 0)).round().astype(np.uint8)
    assert not np.array_equal(blurred, frames)
    np.testing.assert_array_equal(locate_agent(blurred), truth[:, :2])
    np.testing.assert_array_equal(agent_direction(blurred), truth[:, 2])
    np.testing.assert_array_equal(locate_goal(blurred), np.tile(GOAL, (len(frames), 1)))
    assert wall_cells(blurred[0])[[0, -1]].all() and not wall_cells(blurred[0])[1:-1, 1:-1].any()


def test_perception_at_another_resolution_and_without_an_agent():
    env = PLUGIN.make_env(tile_size=12)  # 96 x 96 frames, 12 px cells
    _, info = env.reset(options={"agent_pos": (4, 2), "agent_dir": 3})
    frame = info["pixels"]
    assert frame.shape == (96, 96, 3)
    assert locate_agent(frame).tolist() == [4.0, 2.0] and int(agent_direction(frame)) == 3
    assert locate_goal(frame).tolist() == [6.0, 6.0]
    empty = np.zeros((2, 64, 64, 3), np.uint8)
    assert np.isnan(locate_agent(empty)).all() and np.isnan(locate_goal(empty)).all()
    assert agent_direction(empty).tolist() == [-1, -1] and not on_goal(empty).any()
    with pytest.raises(ValueError, match=r"multiple of 8.*\(60, 60, 3\)"):
        locate_agent(np.zeros((60, 60, 3), np.uint8))


def test_locate_controlled_lies_in_the_agent_cell_and_moves_with_turns(env):
    frames = np.stack([PLUGIN.set_state(env, {"agent_pos": (2, 5), "agent_dir": d, "step_count": 0})
                       for d in range(4)])
    centre = locate_controlled(frames)
    assert centre.shape == (4, 2)
    assert np.all((centre * 8 >= [2, 5]) & (centre * 8 < [3, 6]))
    # the base side: east-pointing triangle's centroid left of the cell centre, south-pointing one above it
    assert centre[0, 0] < 2.5 / 8 < centre[2, 0] and centre[1, 1] < 5.5 / 8 < centre[3, 1]


# ------------------------------------------------------------------ policies in the real env
def test_planner_reaches_the_goal_from_every_start_within_the_manhattan_bound(env):
    planner = ShortestPathPlanner()
    for seed in range(20):
        _, info = PLUGIN.reset_start(env, seed)
        start = np.array(env.unwrapped.agent_pos)
        bound = 2 * int(np.abs(start - GOAL).sum()) + 4
        planner.reset(1)
        reached = False
        for _ in range(bound):
            _, reward, terminated, _, info = env.step(planner.act(info["pixels"][None])[0])
            if terminated:
                reached = reward > 0
                break
        assert reached, f"planner missed the goal from {tuple(start)} facing {env.unwrapped.agent_dir} (seed {seed})"


def test_zoo_skill_is_graded_in_the_real_env():
    zoo = minigrid_zoo(seed=0)
    assert len(zoo) >= 10 and list(zoo)[0] == "planner" and list(zoo)[-1] == "still"
    names = ["planner", "planner-eps0.25", "planner-eps0.75", "random", "still"]
    rates = _success_rates({name: zoo[name] for name in names}, range(100, 130), horizon=24)
    assert rates["planner"] == 1.0 and rates["still"] == 0.0
    assert rates["planner"] >= rates["planner-eps0.25"] >= rates["planner-eps0.75"] >= rates["random"], rates
    assert rates["planner-eps0.75"] > rates["random"] + 0.2, rates


def test_zoo_members_are_seeded_and_shape_correct(real_frames):
    frames = real_frames[0][:8]
    for name, policy in minigrid_zoo(seed=3).items():
        policy.reset(len(frames))
        first = np.stack([policy.act(frames) for _ in range(5)])
        policy.reset(len(frames))
        again = np.stack([policy.act(frames) for _ in range(5)])
        assert first.shape == (5, 8) and first.dtype == np.int64, name
        assert np.all((first >= 0) & (first <= 6)), name
        np.testing.assert_array_equal(first, again, err_msg=name)
    with pytest.raises(ValueError, match="random_prob"):
        ShortestPathPlanner(random_prob=1.5)
    with pytest.raises(ValueError, match=r"goal.*\(9, 1\)"):
        ShortestPathPlanner(goal=(9, 1))


def test_noisy_planner_chunks(env):
    _, info = env.reset(options={"agent_pos": (1, 1), "agent_dir": 0})
    frame = info["pixels"]
    mode = NoisyPlannerChunks(noise=0.0, chunk_length=6)(frame)
    np.testing.assert_array_equal(mode, [2, 2, 2, 2, 2, 1])  # east along row 1 to column 6, then turn south
    noisy = NoisyPlannerChunks(noise=0.5, chunk_length=6, seed=1)
    chunks = np.stack([noisy(frame) for _ in range(8)])
    assert chunks.shape == (8, 6) and chunks.dtype == np.int64 and np.all((chunks >= 0) & (chunks <= 6))
    assert len({tuple(chunk) for chunk in chunks}) > 1
    noisy.reset()
    np.testing.assert_array_equal(np.stack([noisy(frame) for _ in range(8)]), chunks)
    with pytest.raises(ValueError, match="chunk_length"):
        NoisyPlannerChunks(chunk_length=0)


# ------------------------------------------------------------------ wrappers
def test_state_wrapper_round_trip(env):
    _, info = PLUGIN.reset_start(env, 5)
    for action in (2, 1, 2):
        _, _, _, _, info = env.step(action)
    state, frame = PLUGIN.get_state(env), info["pixels"]
    assert state["step_count"] == 3 and set(state) == {"agent_pos", "agent_dir", "step_count"}
    continuation = [env.step(action)[4]["pixels"] for action in (0, 2, 2)]
    assert not np.array_equal(continuation[-1], frame)
    restored = PLUGIN.set_state(env, state)
    np.testing.assert_array_equal(restored, frame)
    assert PLUGIN.get_state(env) == state
    for action, expected in zip((0, 2, 2), continuation):
        np.testing.assert_array_equal(env.step(action)[4]["pixels"], expected)
    with pytest.raises(ValueError, match=r"\(0, 3\).*wall"):
        PLUGIN.set_state(env, {**state, "agent_pos": (0, 3)})


@pytest.mark.parametrize("options, match", [
    ({"agent_pos": (0, 0)}, r"agent_pos \(0, 0\).*wall"),
    ({"agent_pos": (6, 6)}, r"agent_pos \(6, 6\).*goal"),
    ({"agent_pos": (9, 1)}, r"\(9, 1\) is outside"),
    ({"agent_pos": (1.5, 2)}, "two ints"),
    ({"agent_dir": 4}, r"agent_dir must be an int in 0..3 .*got 4"),
    ({"random_start": True, "agent_dir": 1}, "cannot be combined"),
    ({"teleport": True}, r"unknown MiniGrid reset options \['teleport'\]"),
])
def test_bad_reset_options_raise_and_leave_the_env_usable(env, options, match):
    with pytest.raises(ValueError, match=match):
        env.reset(seed=0, options=options)
    _, info = env.reset(seed=0, options={"agent_pos": (3, 4), "agent_dir": 1})
    assert locate_agent(info["pixels"]).tolist() == [3.0, 4.0] and int(agent_direction(info["pixels"])) == 1
    _, _, _, _, info = env.step(2)
    assert locate_agent(info["pixels"]).tolist() == [3.0, 5.0]


def test_random_starts_are_seeded_free_and_varied(env):
    starts = []
    for seed in range(40):
        PLUGIN.reset_start(env, seed)
        starts.append(tuple(PLUGIN.get_state(env).values()))
    PLUGIN.reset_start(env, 7)
    assert tuple(PLUGIN.get_state(env).values()) == starts[7]
    cells = {start[0] for start in starts}
    assert len(cells) > 15 and GOAL not in cells
    assert all(1 <= col <= 6 and 1 <= row <= 6 for col, row in cells)
    assert {start[1] for start in starts} == {0, 1, 2, 3}


def test_goal_frame_wrapper_records_one_frame_on_the_goal():
    env = PLUGIN.make_recording_env()
    assert isinstance(env, GoalFrameWrapper) and isinstance(env.env, MiniGridStateWrapper)
    _, info = env.reset(options={"agent_pos": (5, 6), "agent_dir": 0})
    assert not on_goal(info["pixels"])
    _, reward, terminated, truncated, info = env.step(2)
    assert 0.9 < reward <= 1.0 and not terminated and not truncated and info["is_success"]
    assert on_goal(info["pixels"])
    goal_frame = info["pixels"]
    _, reward, terminated, truncated, info = env.step(1)  # any action: nothing happens any more
    assert reward == 0.0 and terminated and not truncated and not info["is_success"]
    np.testing.assert_array_equal(info["pixels"], goal_frame)
    np.testing.assert_array_equal(env.render(), goal_frame)
    _, info = env.reset(options={"agent_pos": (5, 6), "agent_dir": 2})  # reset clears the pending termination
    _, reward, terminated, _, info = env.step(2)
    assert reward == 0.0 and not terminated and not info["is_success"]


# ------------------------------------------------------------------ labels, collection, the plug-in
def _record(env, policy, seed: int, max_steps: int = 40) -> dict[str, np.ndarray]:
    """One episode as a LeRobot recorder stores it: the frame before each action, the transition's outcomes."""
    _, info = env.reset(seed=seed, options={"random_start": True})
    policy.reset(seed)
    frames, rewards, terminated, success = [], [], [], []
    for _ in range(max_steps):
        frames.append(info["pixels"])
        _, reward, term, trunc, info = env.step(policy(None, info))
        rewards.append(reward)
        terminated.append(term)
        success.append(info["is_success"])
        if term or trunc:
            break
    return {"frames": np.stack(frames), REWARD: np.array(rewards, np.float32),
            "next.terminated": np.array(terminated), SUCCESS: np.array(success)}


def test_label_frames_marks_exactly_the_frames_on_the_goal():
    env = PLUGIN.make_recording_env()
    episodes = [_record(env, ZooCollectionPolicy(member=member, idle_prob=0.0), seed)
                for seed, member in enumerate(["planner", "still", "planner-eps0.25", "planner"])]
    assert [bool(episode[SUCCESS].any()) for episode in episodes] == [True, False, True, True]
    columns = {key: np.concatenate([episode[key] for episode in episodes]) for key in (REWARD, "next.terminated",
                                                                                      SUCCESS)}
    dataset = SimpleNamespace(
        columns=columns, root="fake-minigrid",
        frame_index=np.concatenate([np.arange(len(episode["frames"])) for episode in episodes]),
        episode_index=np.concatenate([np.full(len(episode["frames"]), i) for i, episode in enumerate(episodes)]))
    frames = np.concatenate([episode["frames"] for episode in episodes])
    rows, labels = PLUGIN.label_frames(dataset)
    np.testing.assert_array_equal(rows, np.flatnonzero(dataset.frame_index > 0))
    assert set(labels) == {"reward", "termination", "success"}
    shows_goal = on_goal(frames[rows]).astype(np.float32)
    assert shows_goal.sum() == 3  # the last frame of each successful episode
    for name, label in labels.items():
        assert label.dtype == np.float32
        np.testing.assert_array_equal(label, shows_goal, err_msg=name)
    shuffled = SimpleNamespace(**{**vars(dataset), "frame_index": dataset.frame_index[::-1].copy()})
    with pytest.raises(ValueError, match="not ordered"):
        PLUGIN.label_frames(shuffled)
    with pytest.raises(ValueError, match="fake-minigrid"):
        PLUGIN.label_frames(SimpleNamespace(**{**vars(dataset), "columns": {}}))


def test_zoo_collection_policy_mixes_members_and_needs_pixels():
    factory = PLUGIN.collection_policies()["minigrid-zoo"]
    policy = factory(gym.spaces.Discrete(7), seed=0)
    members = set()
    for seed in range(12):
        policy.reset(seed)
        members.add(policy.current)
    assert len(members) >= 4
    policy.reset(3)
    first = policy.current
    policy.reset(3)
    assert policy.current == first
    with pytest.raises(ValueError, match=r"info\['pixels'\]"):
        policy({"image": np.zeros((7, 7, 3), np.uint8)}, {})
    with pytest.raises(ValueError, match="unknown or no MiniGrid zoo members.*'genius'"):
        factory(None, member="genius")
    with pytest.raises(ValueError, match="7 actions"):
        factory(gym.spaces.Discrete(3))


def test_plugin_is_registered_and_complete(env, real_frames):
    assert check_plugin(PLUGIN) is PLUGIN
    plugin = make_embodiment("minigrid")
    assert isinstance(plugin, MiniGridEmbodiment) and plugin.env_ids == ("MiniGrid-Empty-8x8-v0",)
    assert plugin.value_aggregation == "max" and plugin.success_threshold == 0.5
    _, info = plugin.reset_start(env, 0)
    assert plugin.context_action(env, None, info) == 6
    state = plugin.get_state(env)
    env.step(plugin.context_action(env, None, info))
    assert plugin.get_state(env)["agent_pos"] == state["agent_pos"]
    assert plugin.step_value(0.95, True, {}) == 1.0 and plugin.step_value(0.0, False, {}) == 0.0
    assert plugin.is_success(1.0, {}) and not plugin.is_success(0.0, {})
    with pytest.raises(ValueError, match="MiniGridStateWrapper"):
        plugin.reset_start(gym.make("CartPole-v1"), 0)
    frames, truth = real_frames
    clip = frames[:8].reshape(2, 4, 64, 64, 3)
    metrics = plugin.frame_metrics(clip, clip)
    assert set(metrics) == {"agent_cell_error", "agent_direction_error"}
    assert all(value.shape == (2, 4) and np.all(value == 0) for value in metrics.values())
    shifted = plugin.frame_metrics(np.roll(clip, 8, axis=-2), clip)  # one cell to the right
    np.testing.assert_array_equal(shifted["agent_cell_error"], 1.0)
    np.testing.assert_array_equal(shifted["agent_direction_error"], 0.0)
    turned = plugin.frame_metrics(frames[60:64][None], frames[[61, 61, 62, 63]][None])
    np.testing.assert_array_equal(turned["agent_direction_error"], [[1.0, 0.0, 0.0, 0.0]])
    assert plugin.locate_controlled(frames).shape == (len(frames), 2)
    assert list(plugin.policy_zoo(0)) == list(minigrid_zoo(0))
    assert plugin.start_distributions()["minigrid-random-start"](np.random.default_rng(0), env) == \
        {"random_start": True}
    assert isinstance(plugin.steering_policy(0.3, 5, 0), NoisyPlannerChunks)
    assert plugin.steering_policy(0.3, 5, 0)(frames[0]).shape == (5,)
    assert isinstance(plugin.follow_policy(), ShortestPathPlanner)
    assert plugin.steering_policy(None, 3, 0).noise == plugin.steering_noise
    assert plugin.headline_metric in metrics and set(plugin.metric_labels) == set(metrics)
    assert plugin.data_policy in plugin.collection_policies() and plugin.demo_policy[0] in plugin.collection_policies()
    plugin.collection_policies()[plugin.demo_policy[0]](env.action_space, **plugin.demo_policy[1])


def test_set_state_works_on_an_env_never_reset():
    """steer-eval's oracle restores snapshots into a second env that has not been reset yet."""
    from worldsim.embodiments import make_embodiment

    plugin = make_embodiment("minigrid")
    source, probe = plugin.make_env(), plugin.make_env()
    source.reset(seed=3, options={"random_start": True})
    state = plugin.get_state(source)
    frame = plugin.set_state(probe, state)
    assert plugin.get_state(probe) == state
    np.testing.assert_array_equal(frame, source.render())
