"""Behaviour-cloned policies (worldsim.policies.bc) and their trainer (worldsim.training.train_bc, ``worldsim
train-bc``), on tiny synthetic two-camera datasets whose action follows from the state and the task."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from worldsim.cli.main import main
from worldsim.data.lerobot import Episode, LeRobotDataset, LeRobotDatasetWriter
from worldsim.evaluation.policy_adapters import as_policy
from worldsim.policies.bc import BCNetwork, BCPolicy
from worldsim.training.config import BCConfig, load_config
from worldsim.training.train_bc import random_shift, train_bc

CAMERAS = ("observation.images.scene", "observation.images.wrist")
TASKS = ("push the block away", "pull the block back")
SIZE, STATE_DIM = 16, 5
#: a network small enough to train in seconds on 16 x 16 images
TINY = dict(image_size=SIZE, channels=[8, 8], hidden_dim=32, batch_size=32, learning_rate=3e-3, shift_pixels=1)


def expert_action(position: np.ndarray, task: str) -> np.ndarray:
    """The demonstrations' action: away from the centre (first task) or towards it (second), plus a per-task third
    entry and a zero fourth."""
    sign = 1.0 if task == TASKS[0] else -1.0
    return np.array([0.8 * sign * position[0], 0.8 * sign * position[1], 0.5 * sign, 0.0], np.float32)


def arm_dataset(root, episodes: int, length: int = 12, seed: int = 0, failures: int = 0, state: bool = True):
    """Episodes alternating between the two tasks: a square at ``position`` (in [-1, 1]^2) in the scene view, the wrist
    view as bright as its row; the state is the position, a constant and two noise entries; the expert acts
    (:func:`expert_action`) and succeeds on its last frame. ``failures`` more episodes act at random and never
    succeed."""
    writer = LeRobotDatasetWriter(root, fps=10, robot_type="arm", action_space={
        "type": "Box", "low": [-1.0] * 4, "high": [1.0] * 4, "shape": [4], "dtype": "float32"})
    rng = np.random.default_rng(seed)
    for index in range(episodes + failures):
        task, expert = TASKS[index % 2], index < episodes
        position = rng.uniform(-1, 1, 2)
        scene, wrist, states, actions = [], [], [], []
        for _ in range(length):
            image = np.full((SIZE, SIZE, 3), 30, np.uint8)
            row, col = np.clip(((position + 1) / 2 * (SIZE - 4)).astype(int), 0, SIZE - 4)
            image[row:row + 4, col:col + 4] = 230
            scene.append(image)
            wrist.append(np.full((SIZE, SIZE, 3), int(40 + 90 * (position[0] + 1)), np.uint8))
            states.append(np.concatenate([position, [0.5], rng.normal(0, 1, 2)]).astype(np.float32))
            action = expert_action(position, task) if expert else rng.uniform(-1, 1, 4).astype(np.float32)
            actions.append(action)
            position = np.clip(position + 0.1 * action[:2], -1, 1)
        success = np.zeros(length, bool)
        success[-1] = expert
        writer.add_episode(Episode(frames=None, images={CAMERAS[0]: np.stack(scene), CAMERAS[1]: np.stack(wrist)},
                                   action=np.stack(actions), reward=success.astype(np.float32),
                                   terminated=success.copy(), truncated=np.zeros(length, bool), success=success,
                                   state=np.stack(states) if state else None, task=task))
    return writer.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bc-data")
    return {"train": arm_dataset(root / "train", episodes=16, failures=2),
            "val": arm_dataset(root / "val", episodes=4, seed=1)}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A run through the CLI: 150 steps, checkpoints after 5, 50 and 150."""
    output = tmp_path_factory.mktemp("bc-run") / "run"
    settings = [f"{key}={json.dumps(value)}" for key, value in TINY.items()]
    assert main(["train-bc", "--dataset", str(data["train"]), "--val-dataset", str(data["val"]),
                 "--output", str(output), "--steps", "150", "save_steps=[5,50]", *settings]) == 0
    return output


def dict_observation(dataset: LeRobotDataset, rows: np.ndarray) -> dict:
    """The frames ``rows`` of a dataset as a batched Dict observation (what a two-camera env gives)."""
    observation = {key: np.concatenate([dataset.decode_episode(e, key) for e in range(dataset.num_episodes)])[rows]
                   for key in CAMERAS}
    observation["observation.state"] = dataset.columns["observation.state"][rows]
    return observation


def test_training_beats_the_mean_action_and_improves_from_checkpoint_to_checkpoint(trained):
    report = json.loads((trained / "report.json").read_text())
    steps = [entry["step"] for entry in report["checkpoints"]]
    assert steps == [5, 50, 150] and report["final"] == str(trained / "step-000150")
    assert report["tasks"] == list(TASKS) and report["camera_keys"] == list(CAMERAS)
    assert report["train_episodes"] == 16  # the two failed episodes are not imitated
    first, last = report["checkpoints"][0], report["checkpoints"][-1]
    baseline = last["val_mean_action_mse"]
    assert baseline > 0.1
    assert last["val_action_mse"] < 0.2 * baseline, (last["val_action_mse"], baseline)
    assert last["val_action_mse"] < 0.5 * first["val_action_mse"]
    assert last["train_loss"] < first["train_loss"]


def test_checkpoints_at_each_save_step_round_trip(trained, data, tmp_path):
    dataset = LeRobotDataset(data["val"])
    rows = np.arange(dataset.num_frames)
    observation = dict_observation(dataset, rows)
    batch = {key: torch.from_numpy(observation[key]).permute(0, 3, 1, 2).float() / 255 for key in CAMERAS}
    batch["observation.state"] = torch.from_numpy(observation["observation.state"])
    batch["task"] = [dataset.episode_tasks[e] for e in dataset.episode_index]

    actions = {}
    for step in (5, 50, 150):
        folder = trained / f"step-{step:06d}"
        assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
        assert json.loads((folder / "metrics.json").read_text())["step"] == step
        actions[step] = BCPolicy.from_pretrained(folder).select_action(batch)
    assert not torch.equal(actions[5], actions[150])

    # the saved weights are the ones scored: the report's held-out error, recomputed from the folder
    report = json.loads((trained / "report.json").read_text())
    error = ((actions[150].numpy() - dataset.action) ** 2).mean()
    assert error == pytest.approx(report["checkpoints"][-1]["val_action_mse"], rel=1e-4)

    policy = BCPolicy.from_pretrained(trained / "step-000150")
    policy.save_pretrained(tmp_path / "copy")
    assert torch.equal(BCPolicy.from_pretrained(tmp_path / "copy").select_action(batch), actions[150])
    policy.reset()
    assert torch.equal(policy.select_action(batch), actions[150])  # no state kept between calls


def test_the_policy_adapter_drives_it_on_dict_observations_of_another_size(trained, data):
    policy = BCPolicy.from_pretrained(trained / "step-000150")
    rng = np.random.default_rng(0)
    count = 6
    observation = {key: rng.integers(0, 256, (count, 64, 64, 3), dtype=np.uint8) for key in CAMERAS}
    observation["observation.state"] = np.concatenate(
        [rng.uniform(-1, 1, (count, 2)), np.full((count, 1), 0.5), rng.normal(0, 1, (count, 2))], 1).astype(np.float32)
    adapter = as_policy(policy, (4,))
    adapter.reset(count)
    adapter.task = TASKS[0]
    push = adapter.act(observation)
    adapter.task = TASKS[1]
    pull = adapter.act(observation)
    assert push.shape == pull.shape == (count, 4)
    assert np.all(np.abs(push) <= 1) and np.all(np.abs(pull) <= 1)
    # the task sets the sign of the third action entry (+0.5 for the first task, -0.5 for the second)
    assert np.all(push[:, 2] > 0.25) and np.all(pull[:, 2] < -0.25)


def test_unknown_task_missing_camera_or_state_raise(trained):
    policy = BCPolicy.from_pretrained(trained / "step-000150")
    batch = {key: torch.rand(2, 3, SIZE, SIZE) for key in CAMERAS}
    batch["observation.state"] = torch.zeros(2, STATE_DIM)
    with pytest.raises(ValueError, match=r"unknown task 'juggle'.*push the block away"):
        policy.select_action({**batch, "task": ["juggle", TASKS[0]]})
    with pytest.raises(ValueError, match="several tasks"):
        policy.select_action(batch)  # no task for a two-task policy
    without_wrist = {key: value for key, value in batch.items() if key != CAMERAS[1]}
    with pytest.raises(ValueError, match="no camera 'observation.images.wrist'"):
        policy.select_action({**without_wrist, "task": [TASKS[0]] * 2})
    without_state = {key: value for key, value in batch.items() if key != "observation.state"}
    with pytest.raises(ValueError, match="no 'observation.state'"):
        policy.select_action({**without_state, "task": [TASKS[0]] * 2})
    with pytest.raises(ValueError, match=r"observation.state must be \(2, 5\)"):
        policy.select_action({**batch, "observation.state": torch.zeros(2, 4), "task": [TASKS[0]] * 2})


def test_datasets_lacking_what_bc_reads_are_refused_before_decoding(data, tmp_path):
    stateless = arm_dataset(tmp_path / "stateless", episodes=1, length=3, state=False)
    with pytest.raises(ValueError, match="no 'observation.state' column"):
        train_bc([data["train"], stateless], tmp_path / "out", progress=False, steps=1, save_steps=[1])
    assert not (stateless / "cache").exists() and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="no camera 'observation.images.top'"):
        train_bc([data["train"]], tmp_path / "out", progress=False, steps=1, save_steps=[1],
                 camera_keys=["observation.images.top"])
    failed = arm_dataset(tmp_path / "failed", episodes=0, failures=1, length=3)
    with pytest.raises(ValueError, match="none of its 1 episodes reaches next.success"):
        train_bc([failed], tmp_path / "out", progress=False, steps=1, save_steps=[1])
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "report.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not empty"):
        train_bc([data["train"]], tmp_path / "taken", progress=False, steps=1, save_steps=[1])


def test_settings_and_network_arguments_are_checked():
    assert load_config(None, ["steps=20", "save_steps=[10,20]"], schema=BCConfig).save_steps == [10, 20]
    with pytest.raises(ValueError, match=r"bc.save_steps must be steps in \[1, steps=100\]"):
        BCConfig(steps=100)
    with pytest.raises(ValueError, match="bc.batch_size must be > 0"):
        BCConfig(batch_size=0)
    with pytest.raises(ValueError, match="tasks must be distinct non-empty strings"):
        BCNetwork(tasks=["a", "a"])
    with pytest.raises(ValueError, match="multiple of num_groups=8"):
        BCNetwork(tasks=["a"], channels=[8, 12])
    with pytest.raises(ValueError, match="state_std must be 39 finite floats"):
        BCNetwork(tasks=["a"], state_std=[1.0] * 3)
    network = BCNetwork(tasks=["a"], image_size=[16, 24], channels=[8, 8])
    assert network.config.camera_keys == list(CAMERAS) and network.config.state_std == [1.0] * 39
    images = torch.rand(3, 2, 3, 16, 24)
    action = network(images, torch.zeros(3, 39), torch.zeros(3, dtype=torch.long))
    assert action.shape == (3, 4) and action.dtype == torch.float32
    with pytest.raises(ValueError, match=r"images must be \(B, 2, 3, 16, 24\)"):
        network(images[:, :1], torch.zeros(3, 39), torch.zeros(3, dtype=torch.long))


def test_random_shift_moves_images_by_at_most_the_given_pixels():
    images = torch.zeros(64, 2, 3, 8, 8)
    images[..., 4, 4] = 1.0  # one bright pixel per image
    shifted = random_shift(images, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    where = shifted[:, :, 0].flatten(0, 1).flatten(1).argmax(1)
    rows, cols = where // 8, where % 8
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5  # the shifts differ from image to image
    assert torch.equal(random_shift(images, 0, torch.Generator()), images)


class _ArmEnv:
    """A two-camera Dict env of SIZE-pixel views whose info holds the task (what plug-in envs give collection)."""

    def __init__(self, task: str):
        import gymnasium as gym

        self.task = task
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.rng = np.random.default_rng(0)

    def observation(self):
        return {CAMERAS[0]: self.rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8),
                CAMERAS[1]: self.rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8),
                "observation.state": self.rng.normal(0, 1, STATE_DIM).astype(np.float32)}

    def reset(self, seed=None, options=None):
        self.rng = np.random.default_rng(seed)
        return self.observation(), {"task": self.task}

    def step(self, action):
        return self.observation(), 0.0, False, False, {"task": self.task}


def test_a_saved_checkpoint_records_episodes_as_a_collection_policy(tmp_path):
    """``worldsim collect --policy <train-bc folder>``: the recorded actions are the checkpoint's on each observation
    and the task of the env's info; noise is seeded by the episode and clipped; a mismatched action space raises."""
    import gymnasium as gym

    from worldsim.data.collect import record_episode
    from worldsim.data.policies import CheckpointPolicy, make_policy

    torch.manual_seed(0)
    network = BCNetwork(camera_keys=list(CAMERAS), image_size=SIZE, state_dim=STATE_DIM, tasks=list(TASKS),
                        channels=[8, 8], hidden_dim=32)
    folder = BCPolicy(network).save_pretrained(tmp_path / "policy")
    env = _ArmEnv(TASKS[1])
    policy = make_policy(str(folder), env.action_space)
    assert isinstance(policy, CheckpointPolicy)

    episode = record_episode(env, policy, seed=3, max_steps=5)
    reference, replay = BCPolicy.from_pretrained(folder), _ArmEnv(TASKS[1])
    observation, _ = replay.reset(seed=3)
    for action in episode.action:
        batch = {key: torch.from_numpy(value[None]).permute(0, 3, 1, 2).float() / 255.0
                 for key, value in observation.items() if key in CAMERAS}
        batch.update({"observation.state": torch.from_numpy(observation["observation.state"][None]),
                      "task": [TASKS[1]]})
        np.testing.assert_allclose(action, reference.select_action(batch)[0].numpy(), atol=1e-6)
        observation = replay.step(action)[0]
    assert not np.allclose(episode.action, record_episode(_ArmEnv(TASKS[0]), policy, seed=3, max_steps=5).action)

    noisy = make_policy(str(folder), env.action_space, noise_std=2.0)
    first, second = (record_episode(env, noisy, seed=3, max_steps=5).action for _ in range(2))
    np.testing.assert_array_equal(first, second)  # the noise follows the episode's seed
    assert np.abs(first - episode.action).max() > 0.1 and np.abs(first).max() <= 1.0

    for space in (gym.spaces.Box(-1, 1, (2,), np.float32), gym.spaces.Box(-1, 1, (2, 2), np.float32),
                  gym.spaces.Discrete(4)):
        with pytest.raises(ValueError, match=r"expected a Box of shape \(4,\)"):
            make_policy(str(folder), space)
    with pytest.raises(ValueError, match="noise_std must be >= 0"):
        make_policy(str(folder), env.action_space, noise_std=-0.1)
