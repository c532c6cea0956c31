"""Embodiment plug-ins: the registry, a user's own plug-in written outside worldsim, ranking from logged episodes,
outcome heads per embodiment, and generic modules that name no built-in env."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from tests.conftest import randomize, tiny_autoencoder, tiny_transformer
from worldsim.cli.main import main
from worldsim.data.collect import collect
from worldsim.data.lerobot import LeRobotDataset
from worldsim.embodiments import (EmbodimentPlugin, check_plugin, embodiment_for_env, make_embodiment,
                                  register_embodiment, registered_embodiments, resolve_embodiment,
                                  unregister_embodiment)
from worldsim.pipelines.world_model import WorldModelPipeline

PACKAGE = Path(__file__).resolve().parents[1] / "worldsim"


# ---------------------------------------------------------------------- a user's env and plug-in, outside worldsim
class DotWorld(gym.Env):
    """A dot on a row of 8 cells of a 16 x 16 frame; Discrete(3): left, stay, right; reward 1 and the end at cell 7."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = "rgb_array"):
        self.render_mode = render_mode
        self.action_space = gym.spaces.Discrete(3)
        self.observation_space = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
        self.position = 0

    def _frame(self) -> np.ndarray:
        frame = np.zeros((16, 16, 3), np.uint8)
        frame[:, 14:16] = (0, 255, 0)  # the goal column
        frame[7:9, 2 * self.position:2 * self.position + 2] = (255, 0, 0)
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = int(self.np_random.integers(0, 4))
        return self._frame(), {}

    def step(self, action):
        self.position = int(np.clip(self.position + int(action) - 1, 0, 7))
        done = self.position == 7
        return self._frame(), float(done), done, False, {"is_success": done}

    def render(self):
        return self._frame()


class AlwaysRight:
    def reset(self, num_envs: int) -> None:
        pass

    def act(self, frames: np.ndarray) -> np.ndarray:
        return np.full(len(frames), 2, dtype=np.int64)


class AlwaysLeft(AlwaysRight):
    def act(self, frames: np.ndarray) -> np.ndarray:
        return np.zeros(len(frames), dtype=np.int64)


class DotEmbodiment(EmbodimentPlugin):
    name = "dot"
    env_ids = ("DotWorld-v0",)

    def make_env(self, env_id=None, **kwargs):
        return DotWorld()

    def context_action(self, env, observation, info):
        return np.int64(1)  # stay

    def policy_zoo(self, seed: int = 0) -> dict:
        return {"right": AlwaysRight(), "left": AlwaysLeft()}


def dot_pipeline() -> WorldModelPipeline:
    """A tiny untrained model whose one embodiment is the dot world's."""
    torch.manual_seed(0)
    metadata = {"embodiment": "dot", "env_id": "DotWorld-v0", "fps": 10, "image_size": 16, "window_size": 4,
                "num_inference_steps": 2, "context_noise": 0.05,
                "action_space": {"type": "Discrete", "n": 3, "start": 0},
                "action_normalizer": {"min": [0.0], "max": [2.0], "continuous": [False]}}
    return WorldModelPipeline(tiny_autoencoder(), randomize(tiny_transformer(action_dim=1)),
                              FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000), metadata)


@pytest.fixture()
def dot_registered():
    register_embodiment("tests.test_embodiment_plugins:DotEmbodiment", replace=True)
    yield make_embodiment("dot")
    unregister_embodiment("dot")


def test_a_plugin_written_outside_worldsim_registers_and_ranks(dot_registered, tmp_path):
    from worldsim.training.train_heads import train_heads

    assert "dot" in registered_embodiments() and isinstance(dot_registered, DotEmbodiment)
    assert embodiment_for_env("DotWorld-v0") is dot_registered
    path = tmp_path / "dot-model"
    dot_pipeline().save_pretrained(path)
    # the user's plug-in makes the env the collector records from, then the model gets outcome heads for it
    gym.register("DotWorld-v0", entry_point=DotWorld)
    try:
        data = collect("DotWorld-v0", "random", 6, tmp_path / "dot-data", seed=0, max_steps=12, progress=False)
    finally:
        gym.registry.pop("DotWorld-v0")
    assert LeRobotDataset(data).info["robot_type"] == "dot"
    train_heads(path, [data], steps=20, batch_size=16, val_episodes=1, progress=False)
    report_path = tmp_path / "rank.json"
    main(["rank", "--model", str(path), "--embodiment", "dot", "--num-states", "3", "--horizon", "6",
          "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert report["settings"]["embodiment"] == "dot" and set(report["policies"]) == {"right", "left"}
    right, left = report["policies"]["right"], report["policies"]["left"]
    # real values come from the user's env: moving right reaches the goal from every start, left never does
    assert right["real"]["mean"] == 1.0 and left["real"]["mean"] == 0.0
    assert len(right["imagined_values"]) == 3 and np.isfinite(right["imagined"]["mean"])


def test_module_object_names_a_plugin_on_the_command_line(tmp_path):
    path = tmp_path / "dot-model"
    pipeline = dot_pipeline()
    name, plugin = resolve_embodiment(pipeline, "tests.test_embodiment_plugins:DotEmbodiment")
    assert name == "dot" and isinstance(plugin, DotEmbodiment)
    unregister_embodiment("dot")
    pipeline.save_pretrained(path)
    with pytest.raises(ValueError, match="no embodiment plug-in for the model's embodiment 'dot'"):
        resolve_embodiment(WorldModelPipeline.from_pretrained(path))


def test_registry_refuses_bad_plugins_and_unknown_names(dot_registered):
    with pytest.raises(ValueError, match="unknown embodiment 'nowhere'.*pusht"):
        make_embodiment("nowhere")
    with pytest.raises(ValueError, match="already registered"):
        register_embodiment(DotEmbodiment())  # another instance under a taken name
    assert make_embodiment("dot") is dot_registered  # unchanged

    class Nameless(EmbodimentPlugin):
        env_ids = ("X-v0",)

    class Summing(DotEmbodiment):
        value_aggregation = "mean"

    with pytest.raises(ValueError, match="no name"):
        check_plugin(Nameless())
    with pytest.raises(ValueError, match="value_aggregation"):
        check_plugin(Summing())
    with pytest.raises(TypeError, match="EmbodimentPlugin"):
        register_embodiment(object())
    with pytest.raises(ValueError, match="not 'module:object'"):
        register_embodiment("tests.test_embodiment_plugins")


def test_builtin_plugins_are_found_by_package():
    assert {"pusht", "minigrid", "breakout"} <= set(registered_embodiments())
    for name in ("pusht", "minigrid", "breakout"):
        plugin = make_embodiment(name)
        assert plugin.name == name and embodiment_for_env(plugin.default_env_id) is plugin
        assert len(plugin.policy_zoo()) >= 2


def test_no_generic_module_names_a_builtin_env():
    """Everything env-specific lives in the env's plug-in package; the rest of worldsim asks the registry."""
    builtins = {"pusht": r"push[_-]?t", "minigrid": r"minigrid", "breakout": r"breakout"}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("embodiments/") and relative.split("/")[1] in builtins:
            continue
        text = path.read_text()
        offenders += [f"{relative}:{text[:match.start()].count(chr(10)) + 1}"
                      for match in re.finditer(builtins["pusht"], text, flags=re.IGNORECASE)]
    assert not offenders, f"generic modules name PushT: {offenders}"


# ---------------------------------------------------------------------- ranking from logged episodes
def test_rank_from_logged_episodes_end_to_end(model_with_heads, tmp_path, capsys):
    """No real env: each policy's starts and real values are its own recorded episodes, found by policy name."""
    from worldsim.evaluation.rank import rank_from_dataset

    path, _ = model_with_heads
    root = tmp_path / "logged"
    for member in ("still", "random", "pusher-close-fast"):  # the same seeds: episode i starts alike for each
        collect("gym_pusht/PushT-v0", f"zoo:{member}", 3, tmp_path / member, seed=11, max_steps=10,
                policy_kwargs={"image_size": 16}, progress=False)
    # one dataset holding all three policies' episodes: merged by recording them in turn into one folder
    from worldsim.data.lerobot import Episode, LeRobotDatasetWriter

    writer = LeRobotDatasetWriter(root, fps=10, robot_type="pusht", env_id="gym_pusht/PushT-v0",
                                  action_space=LeRobotDataset(tmp_path / "still").action_space)
    for member in ("still", "random", "pusher-close-fast"):
        source = LeRobotDataset(tmp_path / member)
        for episode in range(source.num_episodes):
            rows = source.episode_slice(episode)
            columns = source.columns
            writer.add_episode(Episode(
                frames=source.decode_episode(episode), action=source.action[rows],
                reward=np.asarray(columns["next.reward"][rows], np.float32).reshape(-1),
                terminated=np.asarray(columns["next.terminated"][rows], bool).reshape(-1),
                truncated=np.asarray(columns["next.truncated"][rows], bool).reshape(-1),
                success=np.asarray(columns["next.success"][rows], bool).reshape(-1),
                policy=source.episode_policies[episode]))
    writer.close()
    dataset = LeRobotDataset(root)
    assert dataset.episode_policies == ["still"] * 3 + ["random"] * 3 + ["pusher-close-fast"] * 3

    from worldsim.embodiments.pusht.zoo import pusht_zoo

    zoo = pusht_zoo()
    policies = {name: zoo[name] for name in ("still", "random", "pusher-close-fast")}
    pipeline = WorldModelPipeline.from_pretrained(path)
    report = rank_from_dataset(pipeline, policies, root, horizon=5, num_context=2, progress=False)
    reward = np.asarray(dataset.columns["next.reward"], np.float64).reshape(-1)
    for name in policies:
        episodes = report["settings"]["episodes"][name]
        expected = [reward[dataset.episode_from[e] + 1:dataset.episode_from[e] + 6].max() for _, e in episodes]
        np.testing.assert_allclose(report["policies"][name]["real_values"], expected)
        assert len(report["policies"][name]["imagined_values"]) == 3
    assert report["agreement"]["num_policies"] == 3 and report["settings"]["source"] == [str(root)]
    # the same episodes given as one dataset per policy rank the same
    split = rank_from_dataset(pipeline, policies, [tmp_path / m for m in policies], horizon=5, num_context=2,
                              progress=False)
    for name in policies:
        assert split["policies"][name]["real_values"] == report["policies"][name]["real_values"]

    out = tmp_path / "rank.json"
    main(["rank", "--model", str(path), "--dataset", str(root), "--policy", "zoo:still", "--policy", "zoo:random",
          "--horizon", "5", "--context", "2", "--json", str(out)])
    written = json.loads(out.read_text())
    assert written["settings"]["num_states"] == 3 and list(written["policies"]) == ["still", "random"]
    assert main(["rank", "--model", str(path), "--dataset", str(root), "--policy", "zoo:nobody"]) == 2
    assert "no zoo policy 'nobody'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no episode of policy 'wanderer'.*pusher-close-fast"):
        rank_from_dataset(pipeline, {"still": zoo["still"], "wanderer": zoo["wanderer"]}, root, horizon=5,
                          num_context=2, progress=False)
    with pytest.raises(ValueError, match="num_states"):
        rank_from_dataset(pipeline, policies, root, num_states=4, horizon=5, num_context=2, progress=False)


# ---------------------------------------------------------------------- outcome heads per embodiment
def two_embodiment_pipeline() -> WorldModelPipeline:
    torch.manual_seed(0)
    box = {"type": "Box", "low": [0.0, 0.0], "high": [512.0, 512.0], "shape": [2], "dtype": "float32"}
    metadata = {"embodiment": "pusht", "fps": 10, "image_size": 16, "window_size": 4, "num_inference_steps": 2,
                "context_noise": 0.05,
                "embodiments": {
                    "pusht": {"env_id": "gym_pusht/PushT-v0", "action_space": box,
                              "action_normalizer": {"min": [0.0, 0.0], "max": [512.0, 512.0]}},
                    "minigrid": {"env_id": "MiniGrid-Empty-8x8-v0", "action_space": {"type": "Discrete", "n": 7, "start": 0},
                                 "action_normalizer": {"min": [0.0], "max": [6.0], "continuous": [False]}}}}
    transformer = tiny_transformer(embodiments=[{"name": "pusht", "action_space": box},
                                                {"name": "minigrid", "action_space": {"type": "Discrete", "n": 7, "start": 0}}],
                                   num_action_experts=2, action_experts_top_k=1)
    return WorldModelPipeline(tiny_autoencoder(), randomize(transformer),
                              FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000), metadata)


def test_training_one_embodiments_heads_keeps_the_others(model_with_heads, pusht_dataset, tmp_path):
    from worldsim.models.heads import OutcomeHeads
    from worldsim.training.train_heads import train_heads

    pytest.importorskip("minigrid")
    path = tmp_path / "joint"
    pipeline = two_embodiment_pipeline()
    pipeline.add_heads(randomize(OutcomeHeads(in_channels=4, sample_size=4, hidden_dim=8, embodiment="pusht"), seed=3))
    pipeline.save_pretrained(path)
    before = {k: v.clone() for k, v in pipeline.heads_for("pusht").state_dict().items()}
    assert pipeline.heads_for("minigrid") is None
    # a folder saved before heads were per embodiment: heads/ holds one set; training another embodiment's splits it
    shutil.rmtree(path / "heads")
    pipeline.heads_for("pusht").save_pretrained(path / "heads")
    from worldsim.registry import write_manifest

    write_manifest(path)
    grid = collect("MiniGrid-Empty-8x8-v0", "minigrid-zoo", 4, tmp_path / "grid", seed=0, max_steps=12,
                   start="minigrid-random-start", progress=False)
    train_heads(path, [grid], steps=10, batch_size=16, val_episodes=1, embodiment="minigrid", progress=False)
    assert sorted(p.name for p in (path / "heads").iterdir()) == ["minigrid", "pusht"]
    loaded = WorldModelPipeline.from_pretrained(path)
    assert loaded.heads_for("minigrid").config.embodiment == "minigrid"
    kept = loaded.heads_for("pusht").state_dict()
    assert all(torch.equal(kept[k], before[k]) for k in before)
    # retraining the minigrid heads replaces only them
    train_heads(path, [grid], steps=5, batch_size=16, val_episodes=1, embodiment="minigrid", progress=False)
    again = WorldModelPipeline.from_pretrained(path)
    assert all(torch.equal(again.heads_for("pusht").state_dict()[k], before[k]) for k in before)
    index = json.loads((path / "model_index.json").read_text())["worldsim_files"]
    assert {"heads/minigrid/config.json", "heads/pusht/config.json"} <= set(index)
    # an edited heads file of either embodiment is refused by the manifest
    weights = path / "heads" / "pusht" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(ValueError, match="heads/pusht"):
        WorldModelPipeline.from_pretrained(path)
