import json

import numpy as np
import pytest
import torch

from worldsim.pipelines.world_model import WorldModelPipeline
from worldsim.training.config import load_config
from worldsim.training.train_autoencoder import train_autoencoder
from worldsim.training.train_world_model import flow_matching_loss, sample_noise_levels, train_world_model


def tiny_overrides(dataset, out):
    return [f"dataset.root={dataset}", "dataset.image_size=16", "dataset.num_frames=4", "dataset.val_episodes=1",
            f"dataset.cache_dir={out}/cache",
            "autoencoder.block_out_channels=[8,8,16]", "autoencoder.latent_channels=4", "autoencoder.norm_num_groups=4",
            "autoencoder.steps=3", "autoencoder.batch_size=4", f"autoencoder.output_dir={out}/ae",
            "transformer.num_layers=1", "transformer.num_attention_heads=2", "transformer.attention_head_dim=16",
            "transformer.rope_axes_dim=[8,4,4]", "train.batch_size=4", "train.checkpointing_steps=2",
            f"train.output_dir={out}/wm", f"train.autoencoder={out}/ae/final", "train.validation_frames=3",
            "train.validation_context_frames=2", "train.warmup_steps=1", "rollout.num_inference_steps=2"]


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="not_a_key"):
        load_config("configs/pusht.yaml", ["train.not_a_key=1"])
    with pytest.raises(ValueError, match="max_steps"):
        load_config("configs/pusht.yaml", ["train.max_steps=many"])
    with pytest.raises(ValueError, match=r"train.history_prob must be in \[0, 1\]"):
        load_config("configs/pusht.yaml", ["train.history_prob=1.5"])
    with pytest.raises(ValueError, match="rope_axes_dim"):
        load_config(None, ["transformer.attention_head_dim=32"])
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    assert load_config("configs/pusht.yaml", ["train.max_steps=7"]).train.max_steps == 7


def test_noise_levels_per_frame():
    config = load_config(None).train
    sigma, target = sample_noise_levels(512, 8, config, torch.Generator().manual_seed(0))
    assert sigma.shape == (512, 8) and target[:, -1].all()
    history = sigma[~target]
    assert history.max() <= config.max_history_noise and 0.4 < (~target[:, :-1]).float().mean() < 0.6
    assert sigma[target].std() > 0.1  # independent levels, not one per clip


def test_flow_matching_loss_is_zero_for_the_exact_velocity():
    config = load_config(None).train
    latents = torch.randn(2, 3, 4, 4, 4)

    class Oracle(torch.nn.Module):
        def forward(self, noisy, timestep, action, action_mask=None, embodiment=None):
            sigma = (timestep / 1000.0)[:, :, None, None, None]
            # noisy = (1 - s) x0 + s n  =>  n - x0 = (noisy - x0) / s, the velocity the loss expects
            return (noisy - latents) / sigma.clamp_min(1e-6)

    loss = flow_matching_loss(Oracle(), latents, torch.zeros(2, 3, 2), config, torch.Generator().manual_seed(0))
    assert loss.item() < 1e-6


def test_tiny_training_end_to_end_with_resume(pusht_dataset, tmp_path):
    config = load_config("configs/pusht.yaml", tiny_overrides(pusht_dataset, tmp_path) + ["train.max_steps=2"])
    ae_path = train_autoencoder(config, progress=False)
    metrics = json.loads((ae_path / "metrics.json").read_text())
    assert metrics["steps"] == 3 and np.isfinite(metrics["val_psnr"])

    final = train_world_model(config, progress=False)
    assert (tmp_path / "wm" / "checkpoint-2" / "training_state" / "optimizer.safetensors").is_file()
    assert (tmp_path / "wm" / "checkpoint-2" / "validation.mp4").stat().st_size > 0
    pipeline = WorldModelPipeline.from_pretrained(final)  # checkpoints load with from_pretrained
    assert pipeline.window_size == 4 and pipeline.start_frames["frames"].shape[1:] == (2, 16, 16, 3)

    # a run killed after checkpoint-2 resumes there and reproduces the uninterrupted run's losses
    full = load_config("configs/pusht.yaml", tiny_overrides(pusht_dataset, tmp_path) +
                       ["train.max_steps=4", f"train.output_dir={tmp_path}/wm2"])
    train_world_model(full, progress=False)
    log_path = tmp_path / "wm2" / "train_log.jsonl"
    uninterrupted = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [entry["step"] for entry in uninterrupted] == [1, 2, 3, 4]
    import shutil

    shutil.rmtree(tmp_path / "wm2" / "checkpoint-4")
    shutil.rmtree(tmp_path / "wm2" / "final")
    log_path.write_text("".join(line + "\n" for line in log_path.read_text().splitlines()[:2]))
    train_world_model(full, progress=False)
    resumed = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [entry["step"] for entry in resumed] == [1, 2, 3, 4]
    np.testing.assert_allclose([e["loss"] for e in resumed], [e["loss"] for e in uninterrupted], rtol=1e-5)


def test_motion_weights_depend_only_on_history():
    from worldsim.training.train_world_model import motion_weights

    latents = torch.zeros(1, 4, 2, 6, 6)
    latents[:, 2, :, 1, 1] = 1.0  # something appears at cell (1, 1) in frame 2
    weights = motion_weights(latents, motion_weight=4.0, motion_threshold=0.5)
    assert torch.all(weights[:, :3] == 1.0)  # frames 0-2 cannot know about that change
    assert weights[0, 3, 1, 1] == 5.0 and weights[0, 3, 2, 2] == 5.0  # dilated by one cell
    assert weights[0, 3, 4, 4] == 1.0
    changed = latents.clone()
    changed[:, 3] += torch.randn(1, 2, 6, 6)  # the predicted frame does not move its own weights
    torch.testing.assert_close(motion_weights(changed, 4.0, 0.5), weights)


def test_joint_training_of_two_embodiments(pusht_dataset, tmp_path):
    """PushT (Box) and MiniGrid (Discrete) in one model with action experts: trains, checkpoints router statistics,
    and serves either embodiment as an env."""
    import gymnasium as gym

    from worldsim.data.collect import collect
    from worldsim.envs.world_model_env import WorldModelEnv

    from tests.conftest import tiny_autoencoder

    minigrid = collect("MiniGrid-Empty-8x8-v0", "random", 2, tmp_path / "minigrid", seed=3, max_steps=12, progress=False)
    tiny_autoencoder().save_pretrained(tmp_path / "start_ae")  # the autoencoder is fine-tuned from this one
    extra = (f"extra_datasets=[{{root: '{minigrid}', image_size: 16, num_frames: 4, val_episodes: 1, "
             f"cache_dir: '{tmp_path}/cache_minigrid'}}]")
    config = load_config("configs/pusht.yaml", tiny_overrides(pusht_dataset, tmp_path) + [
        "train.max_steps=2", "dataset.embodiment=pusht", "transformer.num_action_experts=2",
        "transformer.action_experts_top_k=1", f"autoencoder.init_from={tmp_path}/start_ae", extra])
    metrics = json.loads((train_autoencoder(config, progress=False) / "metrics.json").read_text())
    assert sorted(metrics["datasets"]) == ["minigrid", "pusht"]
    assert all(np.isfinite(entry["val_psnr"]) for entry in metrics["datasets"].values())
    final = train_world_model(config, progress=False)
    checkpoint = tmp_path / "wm" / "checkpoint-2"
    router = json.loads((checkpoint / "router_stats.json").read_text())
    assert router["dispatches"]["pusht"] > 0 and router["dispatches"]["minigrid"] > 0
    assert (checkpoint / "validation-minigrid.mp4").stat().st_size > 0
    pipeline = WorldModelPipeline.from_pretrained(final)
    assert sorted(pipeline.embodiments) == ["minigrid", "pusht"]
    assert pipeline.embodiment("minigrid").normalizer.continuous.tolist() == [False]
    env = WorldModelEnv(pipeline, embodiment="minigrid")
    assert env.action_space == gym.spaces.Discrete(7)
    observation, _ = env.reset(seed=0)
    observation, *_ = env.step(2)
    assert observation.shape == (16, 16, 3)


def test_fine_tuning_a_pipeline_keeps_its_heads_light_decoder_and_state_predictor(pusht_dataset, tmp_path):
    """`train.init_from` a pipeline with outcome heads, a light decoder and a state predictor, on the same autoencoder:
    the fine-tuned checkpoints carry all three unchanged (they read latents, not the transformer); another autoencoder
    drops them."""
    from worldsim.models.autoencoders import LightDecoder
    from worldsim.models.heads import OutcomeHeads
    from worldsim.models.state import StatePredictor
    from worldsim.training.train_world_model import carried_components

    from tests.conftest import make_tiny_pipeline, randomize, tiny_autoencoder

    source = make_tiny_pipeline()
    source.heads = randomize(OutcomeHeads(in_channels=4, sample_size=4, hidden_dim=8, embodiment="pusht"), seed=1)
    source.decoder = randomize(LightDecoder(latent_channels=4, block_out_channels=8, num_blocks=(1, 1, 0)), seed=2)
    source.state_predictors = {"pusht": randomize(StatePredictor(in_channels=4, sample_size=4, state_dim=2,
                                                                 hidden_dim=8), seed=3)}
    source.save_pretrained(tmp_path / "source")
    config = load_config("configs/pusht.yaml", tiny_overrides(pusht_dataset, tmp_path) + [
        "train.max_steps=2", "transformer.num_layers=2", "transformer.action_num_frequencies=2",
        f"train.autoencoder={tmp_path}/source/autoencoder", f"train.init_from={tmp_path}/source"])
    tuned = WorldModelPipeline.from_pretrained(train_world_model(config, progress=False))
    assert tuned.metadata["outcome_heads"] is True
    for theirs, ours in ((source.heads, tuned.heads), (source.decoder, tuned.decoder),
                         (source.state_predictors["pusht"], tuned.state_predictors["pusht"])):
        theirs, ours = theirs.state_dict(), ours.state_dict()
        assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in theirs)
    assert not all(torch.equal(a, b) for a, b in zip(source.transformer.parameters(), tuned.transformer.parameters()))

    randomize(tiny_autoencoder(), seed=5).save_pretrained(tmp_path / "other_ae")
    assert carried_components(tmp_path / "source", tmp_path / "other_ae", ["pusht"]) == (None, None, None)
    assert carried_components(tmp_path / "source", tmp_path / "source" / "autoencoder", ["minigrid"]) == (None,) * 3
    assert carried_components(None, tmp_path / "source" / "autoencoder", ["pusht"]) == (None, None, None)


def test_datasets_of_one_embodiment_share_its_action_normaliser():
    from types import SimpleNamespace

    from worldsim.data.clips import ActionNormalizer
    from worldsim.training.train_world_model import share_embodiments

    box = {"type": "Box", "low": [0.0], "high": [9.0], "shape": [1], "dtype": "float32"}
    sources = [SimpleNamespace(name="arm", action_space=box, config=SimpleNamespace(root=f"data/{index}"),
                               normalizer=ActionNormalizer([low], [high]))
               for index, (low, high) in enumerate(((0.0, 4.0), (1.0, 9.0)))]
    other = SimpleNamespace(name="grid", action_space={"type": "Discrete", "n": 3, "start": 0},
                            config=SimpleNamespace(root="data/grid"), normalizer=ActionNormalizer([0.0], [2.0]))
    share_embodiments(sources + [other])
    assert sources[0].normalizer is sources[1].normalizer
    assert sources[0].normalizer.to_dict() == {"min": [0.0], "max": [9.0]}
    assert other.normalizer.to_dict() == {"min": [0.0], "max": [2.0]}  # another embodiment: untouched
    sources[1].action_space = {**box, "high": [8.0]}
    with pytest.raises(ValueError, match="both show embodiment 'arm' but record different action spaces"):
        share_embodiments(sources)


def test_a_dotted_override_into_a_list_is_a_clear_error():
    with pytest.raises(ValueError, match="extra_datasets.2.repeat=8.*set in the YAML file"):
        load_config("configs/joint-minigrid.yaml", ["extra_datasets.2.repeat=8"])
