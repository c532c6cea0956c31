"""Frames that are not square (two camera views side by side), task conditioning, and the Dict observation of an
imagined env: the model side of a multi-camera, multi-task robot dataset."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from gymnasium.utils.env_checker import check_env

from tests.conftest import randomize, tiny_transformer
from worldsim.data.lerobot import Episode, LeRobotDatasetWriter
from worldsim.envs.vector_env import WorldModelVectorEnv
from worldsim.envs.world_model_env import WorldModelEnv
from worldsim.models.autoencoders import build_autoencoder
from worldsim.pipelines.world_model import WorldModelPipeline

CAMERAS = ["observation.images.scene", "observation.images.wrist"]
TASKS = ["push the block", "reach the goal"]


def two_camera_pipeline(tasks=TASKS) -> WorldModelPipeline:
    """An untrained pipeline of 16 x 32 frames (two 16 x 16 views) on a 4 x 8 latent grid, with two tasks."""
    torch.manual_seed(0)
    autoencoder = build_autoencoder(sample_size=(16, 32), latent_channels=4, block_out_channels=(8, 8, 16),
                                    norm_num_groups=4)
    transformer = randomize(tiny_transformer(sample_size=[4, 8], action_dim=4, tasks=tasks))
    metadata = {"embodiment": "arm", "fps": 10, "image_size": [16, 32], "window_size": 4, "num_inference_steps": 2,
                "context_noise": 0.05, "camera_keys": CAMERAS,
                "action_space": {"type": "Box", "low": [-1.0] * 4, "high": [1.0] * 4, "shape": [4],
                                 "dtype": "float32"},
                "action_normalizer": {"min": [-1.0] * 4, "max": [1.0] * 4}}
    rng = np.random.default_rng(0)
    start = {"frames": torch.from_numpy(rng.integers(0, 255, (3, 2, 16, 32, 3), dtype=np.uint8)),
             "action": torch.from_numpy(rng.uniform(-1, 1, (3, 1, 4)).astype(np.float32)),
             "task": torch.tensor([0, 1, 0])}
    return WorldModelPipeline(autoencoder, transformer, FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000),
                              metadata, start)


def test_non_square_cached_path_matches_the_full_window():
    model = randomize(tiny_transformer(sample_size=[4, 8], tasks=TASKS)).eval()
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 3, 4, 4, 8, generator=generator)
    action = torch.rand(2, 3, 2, generator=generator) * 2 - 1
    timestep = torch.tensor([[50.0, 50.0, 700.0]]).repeat(2, 1)
    task = torch.tensor([0, 1])
    with torch.no_grad():
        full = model(sample, timestep, action, task=task)
        cache = model.new_cache(2, 4)
        producing = torch.cat([torch.zeros(2, 1, 2), action[:, :2]], dim=1)
        mask = torch.tensor([[False, True]]).repeat(2, 1)
        model.forward_cached(sample[:, :2], timestep[:, :2], producing[:, :2], mask, cache, update_cache=True,
                             task=task)
        step = model.forward_cached(sample[:, 2:], timestep[:, 2:], action[:, 1:2], None, cache, task=task)
    torch.testing.assert_close(step, full[:, 2:], atol=2e-5, rtol=1e-4)
    assert model.tokens_per_frame == 8
    with pytest.raises(ValueError, match=r"expected \(B, T, 4, 4, 8\)"):
        model(torch.randn(1, 2, 4, 4, 4), torch.zeros(1, 2), torch.zeros(1, 2, 2))


def test_the_task_changes_the_prediction_and_unknown_tasks_are_refused():
    model = randomize(tiny_transformer(tasks=TASKS)).eval()
    sample, timestep, action = torch.randn(1, 2, 4, 4, 4), torch.full((1, 2), 500.0), torch.zeros(1, 2, 2)
    with torch.no_grad():
        outputs = [model(sample, timestep, action, task=torch.tensor([index])) for index in (0, 1, 2)]
    assert not torch.allclose(outputs[0], outputs[1]) and not torch.allclose(outputs[0], outputs[2])
    assert model.task_index("reach the goal") == 1 and model.task_index(None) == 2
    with pytest.raises(ValueError, match="unknown task 'fly'"):
        model.task_index("fly")
    with pytest.raises(ValueError, match=r"task indices must be in \[0, 2\]"):
        model(sample, timestep, action, task=torch.tensor([3]))
    with pytest.raises(ValueError, match="not conditioned on a task"):
        randomize(tiny_transformer())(sample, timestep, action, task=torch.tensor([0]))


def test_two_camera_env_observes_a_dict_and_passes_check_env(tmp_path):
    pipeline = two_camera_pipeline()
    pipeline.save_pretrained(tmp_path / "model")
    env = WorldModelEnv(str(tmp_path / "model"))
    assert env.observation_space == gym.spaces.Dict({key: gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
                                                     for key in CAMERAS})
    check_env(env, skip_render_check=True)
    observation, _ = env.reset(seed=0, options={"task": "reach the goal"})
    assert set(observation) == set(CAMERAS)
    observation, *_ = env.step(np.zeros(4, np.float32))
    frame = env.render() if env.render_mode else env._frame
    np.testing.assert_array_equal(np.concatenate([observation[key] for key in CAMERAS], axis=1), frame)
    # a context given per camera starts exactly where the composed frame says
    scene = np.full((2, 16, 16, 3), 40, np.uint8)
    wrist = np.full((2, 16, 16, 3), 200, np.uint8)
    observation, _ = env.reset(options={"context": {CAMERAS[0]: scene, CAMERAS[1]: wrist,
                                                    "action": np.zeros((1, 4))}})
    assert (observation[CAMERAS[0]] == 40).all() and (observation[CAMERAS[1]] == 200).all()
    with pytest.raises(ValueError, match="lacks camera 'observation.images.wrist'"):
        env.reset(options={"context": {CAMERAS[0]: scene, "action": np.zeros((1, 4))}})
    with pytest.raises(ValueError, match="aspect ratio"):
        env.reset(options={"context": {CAMERAS[0]: scene[:, :8], CAMERAS[1]: wrist[:, :8],
                                       "action": np.zeros((1, 4))}})
    with pytest.raises(ValueError, match="unknown task 'fly'"):
        env.reset(options={"task": "fly"})


def test_rollouts_follow_their_task_and_the_vector_env_batches_them(tmp_path):
    pipeline = two_camera_pipeline()
    frames, action = pipeline.start_set()
    context = (frames[:1].repeat(2, 1, 1, 1, 1).numpy(), action[:1].repeat(2, 1, 1).numpy())
    steps = np.zeros((2, 3, 4), np.float32)
    same = pipeline.rollout(*context, steps, generator=[torch.Generator().manual_seed(1) for _ in range(2)],
                            task=["push the block", "push the block"])
    differ = pipeline.rollout(*context, steps, generator=[torch.Generator().manual_seed(1) for _ in range(2)],
                              task=["push the block", "reach the goal"])
    np.testing.assert_array_equal(same[0], same[1])
    assert not np.array_equal(differ[0], differ[1]) and np.array_equal(differ[0], same[0])
    envs = WorldModelVectorEnv(pipeline, num_envs=3)
    observation, _ = envs.reset(seed=0, options={"task": ["push the block", "reach the goal", None]})
    assert observation[CAMERAS[1]].shape == (3, 16, 16, 3)
    observation, *_ = envs.step(np.zeros((3, 4), np.float32))
    assert envs._state.task.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="got 2 tasks for 3 rollouts"):
        envs.reset(options={"task": ["push the block", "reach the goal"]})


def two_camera_dataset(root, episodes: int = 4, length: int = 10):
    """Synthetic episodes of two tasks and two cameras: a square moves by the action in the scene view and the
    wrist view shows its brightness; the state is its position."""
    writer = LeRobotDatasetWriter(root, fps=10, robot_type="arm", action_space={
        "type": "Box", "low": [-1.0] * 4, "high": [1.0] * 4, "shape": [4], "dtype": "float32"})
    rng = np.random.default_rng(0)
    for index in range(episodes):
        position = rng.uniform(4, 12, 2)
        scene, wrist, states, actions = [], [], [], []
        for _ in range(length):
            image = np.zeros((16, 16, 3), np.uint8)
            row, col = np.clip(position.astype(int), 2, 13)
            image[row - 2:row + 2, col - 2:col + 2] = 255
            scene.append(image)
            wrist.append(np.full((16, 16, 3), int(position[0] * 15), np.uint8))
            states.append(position.astype(np.float32).copy())
            step = rng.uniform(-1, 1, 4).astype(np.float32)
            actions.append(step)
            position = np.clip(position + step[:2], 2, 13)
        writer.add_episode(Episode(frames=None, images={CAMERAS[0]: np.stack(scene), CAMERAS[1]: np.stack(wrist)},
                                   action=np.stack(actions), reward=np.zeros(length, np.float32),
                                   terminated=np.zeros(length, bool), truncated=np.eye(1, length, length - 1)[0] > 0,
                                   success=np.zeros(length, bool), state=np.stack(states),
                                   task=TASKS[index % 2]))
    return writer.close()


def test_training_on_two_cameras_and_tasks(tmp_path):
    from worldsim.training.config import load_config
    from worldsim.training.train_autoencoder import train_autoencoder
    from worldsim.training.train_world_model import train_world_model

    from tests.test_training import tiny_overrides

    data = two_camera_dataset(tmp_path / "arm")
    overrides = tiny_overrides(data, tmp_path) + ["dataset.image_width=32", "train.max_steps=2",
                                                 "transformer.condition_on_task=true"]
    config = load_config("configs/pusht.yaml", overrides)
    train_autoencoder(config, progress=False)
    final = train_world_model(config, progress=False)
    metadata = json.loads((final / "worldsim.json").read_text())
    assert metadata["image_size"] == [16, 32] and metadata["camera_keys"] == CAMERAS
    pipeline = WorldModelPipeline.from_pretrained(final)
    assert pipeline.transformer.task_names == TASKS and pipeline.frame_size == (16, 32)
    extras = pipeline.start_extras()
    assert extras["task"].tolist()[:2] in ([0, 1], [1, 0]) and extras["state"].shape[1:] == (2, 2)
    env = WorldModelEnv(pipeline)
    observation, _ = env.reset(seed=0)
    assert observation[CAMERAS[0]].shape == (16, 16, 3)
    # outcome heads read the model's non-square latents
    from worldsim.training.train_heads import train_heads

    train_heads(final, [data], steps=3, batch_size=8, val_episodes=1, progress=False)
    heads = WorldModelPipeline.from_pretrained(final).heads_for()
    assert heads.config.sample_size == [4, 8]


def with_state_predictor(pipeline: WorldModelPipeline, state_dim: int = 3) -> WorldModelPipeline:
    """The two-camera pipeline with a random state predictor and start clips that record a state."""
    from worldsim.models.state import StatePredictor

    predictor = randomize(StatePredictor(in_channels=4, sample_size=[4, 8], state_dim=state_dim, hidden_dim=8,
                                         state_mean=[0.0] * state_dim, state_std=[1.0] * state_dim,
                                         embodiment="arm"), seed=3)
    frames, action = pipeline.start_set()
    state = torch.from_numpy(np.random.default_rng(1).normal(size=(len(frames), frames.shape[1], state_dim))
                             .astype(np.float32))
    pipeline.set_start_set(frames, action, state=state, task=pipeline.start_extras()["task"])
    return WorldModelPipeline(pipeline.autoencoder, pipeline.transformer, pipeline.scheduler, pipeline.metadata,
                              pipeline.start_frames, state_predictors={"arm": predictor})


def test_the_env_observes_the_predicted_robot_state(tmp_path):
    pipeline = with_state_predictor(two_camera_pipeline())
    pipeline.save_pretrained(tmp_path / "model")
    env = WorldModelEnv(str(tmp_path / "model"))  # the predictor and the start states load from the folder
    assert env.observation_space["observation.state"] == gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    check_env(env, skip_render_check=True)
    observation, _ = env.reset(seed=0)
    first = observation["observation.state"]
    index = [i for i, clip in enumerate(pipeline.start_extras()["state"][:, -1].numpy())
             if np.array_equal(clip, first)]
    assert len(index) == 1  # the start clip's last real state
    states = [env.step(np.zeros(4, np.float32))[0]["observation.state"] for _ in range(3)]
    assert all(state.dtype == np.float32 and state.shape == (3,) for state in states)
    assert not np.array_equal(states[0], first) and not np.array_equal(states[1], states[0])
    # a context given by the user needs the state of its frames
    scene = np.zeros((2, 16, 16, 3), np.uint8)
    context = {CAMERAS[0]: scene, CAMERAS[1]: scene, "action": np.zeros((1, 4))}
    with pytest.raises(ValueError, match="lacks 'observation.state'"):
        env.reset(options={"context": context})
    observation, _ = env.reset(options={"context": {**context, "observation.state": np.ones((2, 3))}})
    np.testing.assert_array_equal(observation["observation.state"], np.ones(3, np.float32))
    # the vector env predicts every sub-env's state, restarts included
    envs = WorldModelVectorEnv(str(tmp_path / "model"), num_envs=2, max_episode_steps=2)
    observation, _ = envs.reset(seed=0)
    assert observation["observation.state"].shape == (2, 3)
    for _ in range(3):
        observation, *_ = envs.step(np.zeros((2, 4), np.float32))
        assert np.isfinite(observation["observation.state"]).all()
    # a predictor that reads other latents than the model's is refused
    from worldsim.models.state import StatePredictor

    with pytest.raises(ValueError, match="reads latents"):
        WorldModelPipeline(pipeline.autoencoder, pipeline.transformer, pipeline.scheduler, pipeline.metadata,
                           state_predictors={"arm": StatePredictor(in_channels=4, sample_size=4, state_dim=3)})


def test_policy_adapters_take_dict_observations():
    """A LeRobot-style policy gets every camera as (N, 3, H, W) in [0, 1] and the state as float32; per-env callables
    get one env's dict."""
    from worldsim.evaluation.policy_adapters import as_policy

    observation = {CAMERAS[0]: np.full((2, 16, 16, 3), 255, np.uint8), CAMERAS[1]: np.zeros((2, 16, 16, 3), np.uint8),
                   "observation.state": np.arange(6, dtype=np.float32).reshape(2, 3)}
    seen = {}

    class LeRobotLike:
        def reset(self):
            pass

        def select_action(self, batch):
            seen.update(batch)
            return torch.zeros(2, 4)

    policy = as_policy(LeRobotLike(), (4,))
    policy.reset(2)
    assert policy.act(observation).shape == (2, 4)
    assert seen[CAMERAS[0]].shape == (2, 3, 16, 16) and float(seen[CAMERAS[0]].max()) == 1.0
    assert seen[CAMERAS[1]].dtype == torch.float32 and seen["observation.state"].tolist() == [[0, 1, 2], [3, 4, 5]]
    per_env = as_policy(lambda single: np.tile(single["observation.state"][:2], 2), (4,))
    per_env.reset(2)
    np.testing.assert_array_equal(per_env.act(observation), [[0, 1, 0, 1], [3, 4, 3, 4]])


def test_success_calibration():
    from worldsim.evaluation.fidelity import success_calibration

    labels = np.array([0, 0, 1, 1], float)
    perfect = success_calibration(labels, labels)
    assert perfect["brier"] == 0.0 and perfect["ece"] == 0.0
    unsure = success_calibration(np.full(4, 0.5), labels)
    assert unsure["brier"] == 0.25 and unsure["ece"] == 0.0 and unsure["bins"][0]["count"] == 4
    wrong = success_calibration(1.0 - labels, labels)
    assert wrong["ece"] == 1.0
    with pytest.raises(ValueError, match="equal-length"):
        success_calibration(np.zeros(3), np.zeros(4))


def test_evaluate_reports_the_state_on_imagined_frames(tmp_path):
    """worldsim evaluate on a two-camera task model with a state predictor: the imagined frames' states against the
    real ones, next to holding the last context state."""
    from worldsim.evaluation.fidelity import evaluate_fidelity

    data = two_camera_dataset(tmp_path / "arm", episodes=2, length=10)
    pipeline = with_state_predictor(two_camera_pipeline(), state_dim=2)
    from worldsim.data.lerobot import LeRobotDataset

    report, imagined, windows = evaluate_fidelity(pipeline, LeRobotDataset(data), horizon=4, num_context=2,
                                                  progress=False)
    assert imagined.shape == (2, 4, 16, 32, 3) and windows.tasks == [TASKS[0], TASKS[1]]
    summary = report["summary"]
    assert summary["state_error/model"] > 0 and summary["state_error/copy_last_frame"] > 0
    assert len(report["per_step"]["state_error"]["model"]) == 4
