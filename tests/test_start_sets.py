"""Start sets (what reset() without a context draws from) and the model's default sampler and decoder."""

from __future__ import annotations

import json
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.conftest import make_tiny_pipeline, randomize
from worldsim.cli.main import main
from worldsim.data.frame_cache import load_frame_cache
from worldsim.data.lerobot import LeRobotDataset
from worldsim.envs import WorldModelEnv, WorldModelVectorEnv
from worldsim.pipelines.world_model import WorldModelPipeline


def first_clips(root, size: int, count: int, context: int) -> np.ndarray:
    dataset = LeRobotDataset(root)
    frames = load_frame_cache(dataset, size, progress=False)
    return np.stack([np.asarray(frames[dataset.episode_from[e]:dataset.episode_from[e] + context])
                     for e in range(count)])


def test_start_set_command_rewrites_the_bundled_clips(tiny_pipeline_path, pusht_dataset, tmp_path):
    path = tmp_path / "model"
    shutil.copytree(tiny_pipeline_path, path)
    assert len(WorldModelPipeline.from_pretrained(path).start_set()[0]) == 3
    main(["start-set", "--model", str(path), "--dataset", str(pusht_dataset), "--num-clips", "2", "--context", "3"])
    frames, action = WorldModelPipeline.from_pretrained(path).start_set()  # the manifest was rewritten: it loads
    expected = first_clips(pusht_dataset, 16, 2, 3)
    np.testing.assert_array_equal(frames.numpy(), expected)
    dataset = LeRobotDataset(pusht_dataset)
    np.testing.assert_allclose(action.numpy()[1], dataset.action[dataset.episode_from[1]:dataset.episode_from[1] + 2])
    # asking for more clips than the dataset has episodes gives what it has
    main(["start-set", "--model", str(path), "--dataset", str(pusht_dataset), "--num-clips", "100"])
    assert WorldModelPipeline.from_pretrained(path).start_set()[0].shape == (3, 4, 16, 16, 3)


def test_env_draws_its_starts_from_a_users_dataset(tiny_pipeline_path, pusht_dataset):
    pipeline = WorldModelPipeline.from_pretrained(tiny_pipeline_path)
    expected = {first_clips(pusht_dataset, 16, 3, 2)[e, -1].tobytes() for e in range(3)}
    env = WorldModelEnv(pipeline, start_dataset=pusht_dataset, start_context=2)
    seen = {env.reset(seed=seed)[0].tobytes() for seed in range(12)}
    assert seen <= expected and len(seen) > 1
    envs = WorldModelVectorEnv(pipeline, num_envs=4, start_dataset=pusht_dataset, start_context=2)
    observation, _ = envs.reset(seed=0)
    assert {frame.tobytes() for frame in observation} <= expected
    bundled = {clip[-1].numpy().tobytes() for clip in pipeline.start_set()[0]}
    assert not seen & bundled  # not the model's bundled clips


def test_bad_start_datasets_and_clips_are_refused(tiny_pipeline_path, pusht_dataset):
    from worldsim.data.starts import dataset_start_set

    pipeline = WorldModelPipeline.from_pretrained(tiny_pipeline_path)
    with pytest.raises(ValueError, match="actions of size 2; the embodiment's are of size 3"):
        dataset_start_set(pusht_dataset, 16, 2, action_dim=3)
    with pytest.raises(ValueError, match="no episode has the 500 frames"):
        WorldModelEnv(pipeline, start_dataset=pusht_dataset, start_context=500)
    before = {key: value.clone() for key, value in pipeline.start_frames.items()}
    with pytest.raises(ValueError, match="start frames must be uint8"):
        pipeline.set_start_set(np.zeros((2, 2, 8, 8, 3), np.uint8), np.zeros((2, 1, 2), np.float32))
    with pytest.raises(ValueError, match="start actions have shape"):
        pipeline.set_start_set(np.zeros((2, 2, 16, 16, 3), np.uint8), np.zeros((2, 2, 2), np.float32))
    assert all(torch.equal(before[key], pipeline.start_frames[key]) for key in before)  # unchanged


def test_a_models_default_sampler_and_decoder_are_what_gym_make_gives(tmp_path):
    from worldsim.models.autoencoders import LightDecoder

    pipeline = make_tiny_pipeline()
    pipeline.decoder = randomize(LightDecoder(latent_channels=4, block_out_channels=8, num_blocks=(1, 1, 0)), seed=2)
    pipeline.metadata.update({"num_inference_steps": 3, "timestep_spacing": "trailing", "decoder": "light"})
    pipeline.save_pretrained(tmp_path / "fast")
    loaded = WorldModelPipeline.from_pretrained(tmp_path / "fast")
    assert loaded.decoder_name == "light"
    assert loaded.resolve_sampler() == {"num_inference_steps": 3, "timestep_spacing": "trailing"}
    import worldsim  # noqa: F401  (registers the env id)

    env = gym.make("worldsim/WorldModel-v0", model=str(tmp_path / "fast"))
    assert env.unwrapped.decoder == "light"
    env.close()
    env = gym.make("worldsim/WorldModel-v0", model=str(tmp_path / "fast"), decoder="full")
    assert env.unwrapped.decoder == "full"
    env.close()
    metadata = json.loads((tmp_path / "fast" / "worldsim.json").read_text())
    assert metadata["decoder"] == "light"


def test_sampler_settings_resolve_once_and_travel_whole(tiny_pipeline_path):
    from worldsim.pipelines import SamplerSettings

    pipeline = WorldModelPipeline.from_pretrained(tiny_pipeline_path)
    default = pipeline.sampler_settings()
    assert default.to_dict() == {"num_inference_steps": 2, "timestep_spacing": "linspace", "context_noise": 0.05,
                                 "action_guidance_scale": 1.0, "decoder": "full"}
    sampler = SamplerSettings.resolve(pipeline, num_inference_steps=3, timestep_spacing="trailing")
    assert sampler == default.replace(num_inference_steps=3, timestep_spacing="trailing")
    for bad, message in (({"num_inference_steps": 0}, "num_inference_steps"), ({"timestep_spacing": "leading"},
                         "'linspace' or 'trailing'"), ({"context_noise": 1.0}, "context_noise"),
                         ({"decoder": "light"}, "no light decoder"), ({"action_guidance_scale": 0.0}, "guidance")):
        with pytest.raises(ValueError, match=message):
            SamplerSettings.resolve(pipeline, **bad)
    # an env given the settings object imagines exactly what an env given the same loose settings imagines
    frames = []
    for kwargs in ({"sampler": sampler}, {"num_inference_steps": 3, "timestep_spacing": "trailing"}):
        env = WorldModelEnv(pipeline, **kwargs)
        assert env.sampler == sampler
        env.reset(seed=4)
        frames.append(env.step(np.array([100.0, 300.0], np.float32))[0])
    np.testing.assert_array_equal(*frames)
    with pytest.raises(ValueError, match="not both"):
        WorldModelEnv(pipeline, sampler=sampler, num_inference_steps=3)
    envs = WorldModelVectorEnv(pipeline, num_envs=2, sampler=sampler)
    assert envs.sampler == sampler
