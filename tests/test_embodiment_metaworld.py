"""The Meta-World embodiment: the two-camera env, exact state snapshots, recording both cameras into a LeRobot
dataset, the composite frame cache and the corrupted experts (skipped where metaworld is not installed)."""

import os

import pytest

pytest.importorskip("metaworld")  # MuJoCo's OpenGL backend is chosen in conftest.py

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402

from worldsim.data.cameras import split_views  # noqa: E402
from worldsim.data.collect import collect  # noqa: E402
from worldsim.data.frame_cache import load_frame_cache, resize_frames  # noqa: E402
from worldsim.data.lerobot import LeRobotDataset  # noqa: E402
from worldsim.data.policies import make_policy  # noqa: E402
from worldsim.embodiments import embodiment_for_env, make_embodiment  # noqa: E402
from worldsim.embodiments.metaworld import (CORE_TASKS, TASKS, ZOO_MEMBERS, CorruptedExpert,  # noqa: E402
                                            MetaWorldEmbodiment)
from worldsim.embodiments.metaworld.env import (ENV_STATE_KEY, SCENE_KEY, STATE_KEY, WRIST_KEY,  # noqa: E402
                                                MetaWorldCameraEnv, environment_state_layout, make_metaworld_env)

PUSH = "worldsim/MetaWorld-push-v3"


@pytest.fixture(scope="module")
def plugin() -> MetaWorldEmbodiment:
    plugin = make_embodiment("metaworld")
    plugin.import_env_package()
    try:  # rendering needs an OpenGL context (EGL offscreen without a display)
        MetaWorldCameraEnv("reach-v3", image_size=8).reset(seed=0)
    except Exception as error:  # noqa: BLE001 - any GL failure means: no renderer on this machine
        pytest.skip(f"MuJoCo cannot render here (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {error}")
    return plugin


def test_plugin_serves_every_task(plugin):
    assert isinstance(plugin, MetaWorldEmbodiment) and plugin.name == "metaworld"
    assert set(CORE_TASKS) <= set(TASKS)
    assert plugin.env_ids[0] == PUSH and len(plugin.env_ids) == len(TASKS)
    assert embodiment_for_env("worldsim/MetaWorld-drawer-open-v3") is plugin
    assert plugin.task_text("worldsim/MetaWorld-pick-place-v3") == plugin.task_text("pick-place-v3") == \
        "pick up the puck and place it at the goal"
    with pytest.raises(ValueError, match="unknown Meta-World task 'fly-v3'"):
        plugin.make_env(task="fly-v3")
    with pytest.raises(ValueError, match="disagree"):
        plugin.make_env("worldsim/MetaWorld-reach-v3", task="push-v3")
    assert plugin.step_value(3.2, False, {"success": 1.0}) == 1.0
    assert plugin.step_value(9.0, False, {"success": 0.0}) == 0.0
    assert plugin.is_success(1.0, {"success": 1.0}) and not plugin.is_success(0.0, {"success": 0.0})


def test_env_observation_and_checker(plugin):
    env = plugin.make_env(task="pick-place-v3", image_size=(24, 32))
    observation, info = env.reset(seed=1)
    assert set(observation) == {SCENE_KEY, WRIST_KEY, STATE_KEY}
    assert observation[SCENE_KEY].shape == observation[WRIST_KEY].shape == (24, 32, 3)
    assert observation[SCENE_KEY].dtype == np.uint8 and observation[STATE_KEY].dtype == np.float32
    state = observation[STATE_KEY]
    assert state.shape == (39,) and np.abs(state[-3:]).sum() > 0  # the goal is visible in the state
    assert env.action_space == gym.spaces.Box(-1, 1, (4,), np.float32)
    assert info["task"] == "pick up the puck and place it at the goal" and info["task_name"] == "pick-place-v3"
    assert info[ENV_STATE_KEY].shape == (environment_state_layout("pick-place-v3")["size"].stop,)
    assert env.render().shape == (24, 64, 3)
    _, _, terminated, _, info = env.step(np.zeros(4, np.float32))
    assert not terminated and "success" in info
    for bad in (np.zeros(3), [0, 0, np.nan, 0], "left"):
        with pytest.raises(ValueError, match="4 finite numbers|4 numbers"):
            env.step(bad)
    env.close()
    check_env(MetaWorldCameraEnv("reach-v3", image_size=16, render_mode="rgb_array"), skip_render_check=False)
    for kwargs, match in (({"task": "fly-v3"}, "unknown Meta-World task"), ({"scene_camera": "top"}, "not a camera"),
                          ({"image_size": 0}, "image_size"), ({"max_episode_steps": 501}, "max_episode_steps"),
                          ({"steps_after_success": -1}, "steps_after_success")):
        with pytest.raises(ValueError, match=match):
            MetaWorldCameraEnv(**kwargs)


def test_starts_are_deterministic_per_seed(plugin):
    env = plugin.make_env(image_size=16)
    first, _ = plugin.reset_start(env, 5)
    other, _ = plugin.reset_start(env, 6)
    again, _ = plugin.reset_start(env, 5)
    np.testing.assert_array_equal(first[STATE_KEY], again[STATE_KEY])
    np.testing.assert_array_equal(first[SCENE_KEY], again[SCENE_KEY])
    assert not np.array_equal(first[STATE_KEY][4:7], other[STATE_KEY][4:7])  # another puck position


def test_images_are_right_side_up(plugin):
    # in an upright image the hand (above the table) is higher up, i.e. on smaller rows, than the table top; the
    # corner cameras are mounted upside down in Meta-World and must have been turned
    env = MetaWorldCameraEnv("push-v3", image_size=48)
    env.reset(seed=0)
    model = env.world.model
    hand = {model.body(name).id for name in ("hand", "rightclaw", "leftclaw", "rightpad", "leftpad")}
    hand_geoms = [g for g in range(model.ngeom) if model.geom_bodyid[g] in hand]
    table_geoms = [g for g in range(model.ngeom) if model.geom_bodyid[g] == model.body("tablelink").id]
    for camera in ("workspace", "side", "corner", "corner2", "corner3"):
        segmentation = env.render_camera(camera, segmentation=True)
        rows = np.arange(48)[:, None].repeat(48, 1)
        hand_rows = rows[np.isin(segmentation[..., 0], hand_geoms) & (segmentation[..., 1] == 5)]
        table_rows = rows[np.isin(segmentation[..., 0], table_geoms) & (segmentation[..., 1] == 5)]
        assert len(hand_rows) and len(table_rows), camera
        assert hand_rows.mean() < table_rows.mean(), camera


def test_state_round_trip_and_rollout_from_a_restored_state(plugin):
    env = plugin.make_env(task="push-v3", image_size=16)
    observation, info = plugin.reset_start(env, 3)
    expert = CorruptedExpert(noise_std=0.2, seed=1)
    expert.reset(3)
    for _ in range(15):
        observation, _, _, _, info = env.step(expert(observation, info))
    snapshot = plugin.get_state(env)
    restored = plugin.set_state(env, plugin.get_state(env))
    for key in observation:
        np.testing.assert_array_equal(restored[key], observation[key])

    def rollout(start_observation, start_info):
        policy = CorruptedExpert(noise_std=0.3, random_prob=0.1, seed=4)
        policy.reset(0)
        current, current_info, states = start_observation, start_info, []
        for _ in range(12):
            current, _, _, _, current_info = env.step(policy(current, current_info))
            states.append(current[STATE_KEY])
        return np.stack(states), current

    original, last = rollout(observation, info)
    again = plugin.set_state(env, snapshot)
    repeated, last_again = rollout(again, info)
    np.testing.assert_array_equal(repeated, original)  # exactly the same physics
    np.testing.assert_array_equal(last_again[SCENE_KEY], last[SCENE_KEY])

    # a recorded environment_state vector puts the env back to float32 precision
    _, _, _, _, info = env.step(np.array([0.5, -0.2, 0.1, 1.0], np.float32))
    recorded_state, recorded = plugin.recorded_state(info)
    later = env.step(np.zeros(4, np.float32))[0]
    back = plugin.set_state(env, recorded)
    np.testing.assert_allclose(back[STATE_KEY][:18], recorded_state[:18], atol=1e-5)
    np.testing.assert_allclose(back[STATE_KEY][-3:], recorded_state[-3:], atol=1e-6)
    assert not np.allclose(later[STATE_KEY][:3], back[STATE_KEY][:3], atol=1e-6)
    with pytest.raises(ValueError, match="44 finite numbers"):
        plugin.set_state(env, recorded[:-1])
    with pytest.raises(ValueError, match="of task 'push-v3'"):
        plugin.set_state(plugin.make_env(task="reach-v3", image_size=8), snapshot)


def test_tiny_two_camera_collection_and_composite_cache(plugin, tmp_path):
    out = collect("worldsim/MetaWorld-reach-v3", "metaworld-expert", 2, tmp_path / "reach", max_steps=10,
                  policy_kwargs={"noise_std": [0.0, 0.5]}, env_kwargs={"image_size": 16}, progress=False)
    dataset = LeRobotDataset(out)
    assert dataset.info["robot_type"] == "metaworld" and dataset.env_id == "worldsim/MetaWorld-reach-v3"
    assert dataset.video_keys == [SCENE_KEY, WRIST_KEY] and dataset.num_frames == 20
    for key in dataset.video_keys:
        assert dataset.decode_episode(1, key).shape == (10, 16, 16, 3)
    assert dataset.columns[STATE_KEY].shape == (20, 39)
    assert dataset.columns[ENV_STATE_KEY].shape == (20, environment_state_layout("reach-v3")["size"].stop)
    assert "next.success" in dataset.columns
    assert [row["tasks"] for row in dataset.episodes] == [["reach the goal with the gripper"]] * 2
    assert dataset.episode_policies[1] == "metaworld-expert[noise_std=0.5]"
    # the recorded state is the observation's: frame 0's state is the reset state of seed 0
    reset_state = plugin.reset_start(plugin.make_env(task="reach-v3", image_size=8), 0)[0][STATE_KEY]
    np.testing.assert_array_equal(dataset.columns[STATE_KEY][0], reset_state)

    cache = load_frame_cache(dataset, (12, 24), progress=False)
    assert cache.shape == (20, 12, 24, 3)
    scene, wrist = split_views(np.asarray(cache[:10]), 2)
    np.testing.assert_array_equal(scene, resize_frames(dataset.decode_episode(0, SCENE_KEY), 12))
    np.testing.assert_array_equal(wrist, resize_frames(dataset.decode_episode(0, WRIST_KEY), 12))


def run_physics(task: str, policy: CorruptedExpert, seed: int, steps: int) -> tuple[np.ndarray, bool]:
    """Actions and success of a rollout on the raw Meta-World env (no rendering: fast)."""
    world = make_metaworld_env(task)
    world.seed(seed)
    state, _ = world.reset()
    policy.reset(seed)
    actions, success = [], False
    for _ in range(steps):
        action = policy.act_state(state, task)
        actions.append(action)
        state, _, _, _, info = world.step(action)
        success = success or info["success"] > 0.5
    world.close()
    return np.stack(actions), success


def test_corruption_parameters_change_behaviour(plugin):
    expert, expert_success = run_physics("reach-v3", CorruptedExpert(), 0, 80)
    assert expert_success and expert.dtype == np.float32 and np.all(np.abs(expert) <= 1)
    assert run_physics("reach-v3", CorruptedExpert(), 0, 80)[0].tobytes() == expert.tobytes()  # deterministic
    noisy, _ = run_physics("reach-v3", CorruptedExpert(noise_std=0.3, seed=2), 0, 80)
    assert 0.05 < np.abs(noisy - expert).mean() < 0.6
    assert not np.array_equal(noisy, run_physics("reach-v3", CorruptedExpert(noise_std=0.3, seed=3), 0, 80)[0])
    # a delayed expert plays the expert's actions of 4 steps before (from its own states), zeros first
    policy = CorruptedExpert(delay=4)
    policy.reset(0)
    states = np.random.default_rng(0).normal(0, 0.1, (12, 39)) + np.r_[0, 0.6, 0.2, 1, [0] * 35]
    direct = CorruptedExpert()
    played = np.stack([policy.act_state(state, "reach-v3") for state in states])
    wanted = np.stack([direct.expert_action(state, "reach-v3") for state in states]).astype(np.float32)
    np.testing.assert_array_equal(played[:4], 0)
    np.testing.assert_array_equal(played[4:], wanted[:-4])
    random_actions, random_success = run_physics("reach-v3", CorruptedExpert(random_prob=1.0), 0, 80)
    assert not random_success and np.abs(random_actions.mean(0)).max() < 0.25 and random_actions.std() > 0.4
    frozen, _ = run_physics("pick-place-v3", CorruptedExpert(gripper=-1.0), 0, 30)
    assert np.all(frozen[:, 3] == -1.0)
    idle, idle_success = run_physics("reach-v3", CorruptedExpert(speed=0.0, gripper=0.0), 0, 40)
    assert np.all(idle == 0) and not idle_success
    assert not run_physics("push-v3", CorruptedExpert(wrong_task="auto"), 0, 150)[1]
    assert run_physics("push-v3", CorruptedExpert(), 0, 150)[1]
    for kwargs, match in (({"noise_std": -1}, "noise_std"), ({"random_prob": 2}, "random_prob"),
                          ({"delay": 1.5}, "delay"), ({"gripper": 3}, "gripper"), ({"wrong_task": "fly"}, "fly"),
                          ({"speed": "fast"}, "speed"), ({"excursion_prob": -0.1}, "excursion_prob"),
                          ({"excursion_steps": 0}, "excursion_steps")):
        with pytest.raises(ValueError, match=match):
            CorruptedExpert(**kwargs)


def test_excursions_hold_a_random_action_and_move_the_hand_far(plugin):
    # every excursion holds one uniform random action for excursion_steps steps, then a new one starts (prob 1)
    policy = CorruptedExpert(excursion_prob=1.0, excursion_steps=5, seed=3)
    policy.reset(0)
    state = np.r_[0, 0.6, 0.2, 1, [0] * 35]
    actions = np.stack([policy.act_state(state, "reach-v3") for _ in range(20)])
    runs = actions.reshape(4, 5, 4)
    assert np.all(runs == runs[:, :1]) and len(np.unique(runs[:, 0, 0])) == 4
    # with probability 0 no RNG draw is added: the noisy expert plays exactly as before the option existed
    plain, _ = run_physics("reach-v3", CorruptedExpert(noise_std=0.3, seed=2), 0, 40)
    unused, _ = run_physics("reach-v3", CorruptedExpert(noise_std=0.3, excursion_steps=12, seed=2), 0, 40)
    np.testing.assert_array_equal(plain, unused)

    def hand_travel(policy):  # mean hand displacement over 10-step spans, metres
        world = make_metaworld_env("reach-v3")
        world.seed(0)
        state, _ = world.reset()
        policy.reset(0)
        hands = [state[:3]]
        for _ in range(60):
            state = world.step(policy.act_state(state, "reach-v3"))[0]
            hands.append(state[:3])
        world.close()
        hands = np.stack(hands)
        return np.linalg.norm(hands[10:] - hands[:-10], axis=1).mean()

    # held random actions carry the hand several times as far as per-step random actions, which average out
    assert hand_travel(CorruptedExpert(excursion_prob=1.0, excursion_steps=10)) > \
        2 * hand_travel(CorruptedExpert(random_prob=1.0))


def test_zoo_and_collection_policies(plugin):
    zoo = plugin.policy_zoo(seed=0, task="reach-v3")
    assert len(zoo) >= 10 and list(zoo) == list(ZOO_MEMBERS) and list(zoo)[0] == "expert"
    states = np.stack([plugin.reset_start(plugin.make_env(task="reach-v3", image_size=8), seed)[0][STATE_KEY]
                       for seed in range(3)])
    for name in ("expert", "noise-0.6", "idle"):
        zoo[name].reset(3)
        actions = zoo[name].act({STATE_KEY: states, SCENE_KEY: np.zeros((3, 8, 8, 3), np.uint8)})
        assert actions.shape == (3, 4) and actions.dtype == np.float32
    np.testing.assert_array_equal(zoo["idle"].act(states), 0)
    # start seeds: env i draws start seeds[i]'s noise, alone or in a batch (ranking's real and imagined episodes)
    noisy = zoo["noise-0.6"]
    noisy.reset(3, seeds=[7, 4, 9])
    batch = [noisy.act(states) for _ in range(3)]
    for index, seed in enumerate([7, 4, 9]):
        noisy.reset(1, seeds=[seed])
        alone = [noisy.act(states[index:index + 1])[0] for _ in range(3)]
        np.testing.assert_array_equal(np.stack(alone), np.stack(batch)[:, index])
    noisy.reset(3)  # without seeds: env i draws stream i, not its start seed's
    assert not np.array_equal(noisy.act(states), batch[0])
    noisy.reset(3)  # so a one-batch run from seed 0 drew what seeds 0, 1, 2 draw (what rerun_rank_real.py relies on)
    unseeded = [noisy.act(states) for _ in range(3)]
    noisy.reset(3, seeds=[0, 1, 2])
    np.testing.assert_array_equal(np.stack(unseeded), np.stack([noisy.act(states) for _ in range(3)]))
    with pytest.raises(ValueError, match="seeds must be 2 ints"):
        noisy.reset(2, seeds=[1])
    with pytest.raises(ValueError, match="read the state"):
        zoo["expert"].act(np.zeros((3, 8, 8, 3), np.uint8))
    space = gym.spaces.Box(-1, 1, (4,), np.float32)
    policy = make_policy("metaworld-expert", space, embodiment=plugin, noise_std=0.1, delay=2)
    assert isinstance(policy, CorruptedExpert) and policy.delay == 2
    member = make_policy("metaworld-zoo", space, embodiment=plugin, member="random-0.5")
    assert member.random_prob == 0.5
    with pytest.raises(ValueError, match="no Meta-World zoo member"):
        make_policy("metaworld-zoo", space, embodiment=plugin, member="genius")
