"""Shared fixtures: a tiny real PushT dataset and a tiny (untrained) pipeline, built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "egl"  # before any test imports MuJoCo (metaworld), which picks its OpenGL backend then

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from worldsim.data.collect import collect
from worldsim.models.autoencoders import build_autoencoder
from worldsim.models.world_model import WorldModelTransformer
from worldsim.pipelines.world_model import WorldModelPipeline



def tiny_transformer(**overrides) -> WorldModelTransformer:
    """2 layers, width 32, on a 4 x 4 x 4 latent grid (diffusers' get_init_dict pattern)."""
    config = dict(in_channels=4, sample_size=4, patch_size=2, num_layers=2, num_attention_heads=2,
                  attention_head_dim=16, action_dim=2, action_num_frequencies=2, rope_axes_dim=(8, 4, 4))
    config.update(overrides)
    return WorldModelTransformer(**config)


def tiny_autoencoder():
    return build_autoencoder(sample_size=16, latent_channels=4, block_out_channels=(8, 8, 16), norm_num_groups=4)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Gives zero-initialised layers random weights so outputs depend on every input."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.abs().sum() == 0:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model


@pytest.fixture(scope="session")
def pusht_dataset(tmp_path_factory):
    """3 real PushT episodes of 24 steps each, recorded by the project's collector."""
    root = tmp_path_factory.mktemp("data") / "pusht"
    collect("gym_pusht/PushT-v0", "pusht-scripted", 3, root, seed=7, max_steps=24,
            policy_kwargs={"noise_std": [0.0, 10.0]}, progress=False)
    return root


def make_tiny_pipeline(start_frames: bool = True) -> WorldModelPipeline:
    torch.manual_seed(0)
    metadata = {"embodiment": "pusht", "env_id": "gym_pusht/PushT-v0", "fps": 10, "image_size": 16,
                "window_size": 4, "num_inference_steps": 2, "context_noise": 0.05, "outcome_heads": False,
                "action_space": {"type": "Box", "low": [0.0, 0.0], "high": [512.0, 512.0], "shape": [2],
                                 "dtype": "float32"},
                "action_normalizer": {"min": [0.0, 0.0], "max": [512.0, 512.0]}}
    start = None
    if start_frames:
        rng = np.random.default_rng(0)
        start = {"frames": torch.from_numpy(rng.integers(0, 255, (3, 2, 16, 16, 3), dtype=np.uint8)),
                 "action": torch.from_numpy(rng.uniform(0, 512, (3, 1, 2)).astype(np.float32))}
    return WorldModelPipeline(tiny_autoencoder(), randomize(tiny_transformer()),
                              FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000), metadata, start)


@pytest.fixture(scope="session")
def tiny_pipeline_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny"
    make_tiny_pipeline().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def model_with_heads(tiny_pipeline_path, pusht_dataset, tmp_path_factory):
    """The tiny pipeline with outcome heads trained for 60 steps on the tiny real PushT dataset."""
    import shutil

    from worldsim.training.train_heads import train_heads

    path = tmp_path_factory.mktemp("heads") / "model"
    shutil.copytree(tiny_pipeline_path, path)
    report = train_heads(path, [pusht_dataset], steps=60, batch_size=32, val_episodes=1, progress=False)
    return path, report
