"""A diffusers Wan transformer adapted into a world model: exact start from the backbone, frame causality, the KV
cache, pretrained weights, and a tiny random config through training, save/load, rollout, the env, rank and steering.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanAttnProcessor
from gymnasium.utils.env_checker import check_env

from worldsim.models.backbones import WanWorldModel
from worldsim.models.world_model import block_causal_mask
from worldsim.pipelines.world_model import WorldModelPipeline
from worldsim.training.config import load_config

TINY_WAN = dict(patch_size=[1, 2, 2], num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
                text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2, rope_max_seq_len=64)


def tiny_wan(**overrides) -> WanWorldModel:
    torch.manual_seed(0)
    config = dict(backbone_config=TINY_WAN, sample_size=(4, 8), action_dim=3, num_action_experts=2,
                  tasks=["push", "pull"], text_sequence_length=5)
    config.update(overrides)
    model = WanWorldModel(**config).eval()
    model.set_task_text_states(0, torch.randn(5, 16))
    model.set_task_text_states(1, torch.randn(5, 16))
    return model


class BlockCausalProcessor(WanAttnProcessor):
    """Wan's own attention processor with a block-causal mask on self-attention (frames of ``tokens`` tokens)."""

    def __init__(self, tokens: int):
        super().__init__()
        self.tokens = tokens

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if encoder_hidden_states is None:
            frames = hidden_states.shape[1] // self.tokens
            attention_mask = block_causal_mask(frames, self.tokens, hidden_states.device)
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)


def test_adapted_wan_starts_exactly_as_the_backbone():
    model = tiny_wan()
    sample, timestep = torch.randn(3, 1, 4, 4, 8), torch.tensor([[300.0], [700.0], [20.0]])
    task = torch.tensor([0, 1, 2])  # 2: the null row
    with torch.no_grad():
        ours = model(sample, timestep, torch.randn(3, 1, 3), task=task)
        for row in range(3):  # one frame: block-causal attention is the backbone's full attention
            reference = model.backbone(sample[row:row + 1].transpose(1, 2), timestep[row],
                                       model.task_text_states[task[row:row + 1]], return_dict=False)[0]
            torch.testing.assert_close(ours[row:row + 1], reference.transpose(1, 2), atol=1e-5, rtol=1e-4)
    # several frames: the backbone itself, made block-causal by an attention processor and given per-token
    # timesteps (Wan 2.2's form), computes what the adapted model computes: rotary slots, per-frame modulation
    sample, timestep = torch.randn(2, 3, 4, 4, 8), torch.tensor([[900.0, 40.0, 500.0], [10.0, 300.0, 999.0]])
    tokens = model.tokens_per_frame
    for block in model.backbone.blocks:
        block.attn1.set_processor(BlockCausalProcessor(tokens))
    with torch.no_grad():
        ours = model(sample, timestep, torch.randn(2, 3, 3), task=task[:2])
        reference = model.backbone(sample.transpose(1, 2), timestep.repeat_interleave(tokens, dim=1),
                                   model.task_text_states[task[:2]], return_dict=False)[0]
    torch.testing.assert_close(ours, reference.transpose(1, 2), atol=1e-5, rtol=1e-4)
    # every new weight starts at zero, so actions change nothing until fine-tuning moves them
    sample, timestep = torch.randn(2, 4, 4, 4, 8), torch.rand(2, 4) * 1000
    with torch.no_grad():
        a = model(sample, timestep, torch.randn(2, 4, 3), task=task[:2])
        b = model(sample, timestep, torch.randn(2, 4, 3), task=task[:2])
    torch.testing.assert_close(a, b)


def test_adapted_wan_is_frame_causal_and_its_cache_reproduces_the_full_pass():
    model = tiny_wan()
    with torch.no_grad():  # zero-initialised paths get weights, so actions and tasks matter below
        for parameter in model.parameters():
            if parameter.requires_grad and parameter.abs().sum() == 0:
                parameter.copy_(torch.randn_like(parameter) * 0.05)
    sample, timestep, action = torch.randn(2, 5, 4, 4, 8), torch.rand(2, 5) * 1000, torch.randn(2, 5, 3)
    task = torch.tensor([0, 1])
    with torch.no_grad():
        full = model(sample, timestep, action, task=task)
        changed = sample.clone()
        changed[:, 3:] = torch.randn(2, 2, 4, 4, 8)
        later = model(changed, timestep, action, task=task)
        torch.testing.assert_close(full[:, :3], later[:, :3])  # earlier frames never see later ones
        assert (full[:, 3:] - later[:, 3:]).abs().max() > 1e-3
        other_action = action.clone()
        other_action[:, 1] += 1.0  # the action after frame 1 produces frame 2
        acted = model(sample, timestep, other_action, task=task)
        torch.testing.assert_close(full[:, :2], acted[:, :2])
        assert (full[:, 2:] - acted[:, 2:]).abs().max() > 1e-4
        cache = model.new_cache(2, local_attn_size=8)
        steps = []
        for frame in range(5):
            producing = action[:, max(frame - 1, 0):max(frame - 1, 0) + 1]
            present = torch.full((2, 1), frame > 0)
            steps.append(model.forward_cached(sample[:, frame:frame + 1], timestep[:, frame:frame + 1], producing,
                                              present, cache, update_cache=True, task=task))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


def test_from_backbone_reads_a_saved_diffusers_folder(tmp_path):
    torch.manual_seed(1)
    WanTransformer3DModel(**TINY_WAN).save_pretrained(tmp_path / "wan")
    assert not list((tmp_path / "wan").glob("*.bin"))  # safetensors only
    model = WanWorldModel.from_backbone(tmp_path / "wan", sample_size=4, action_dim=2)
    pretrained = WanTransformer3DModel.from_pretrained(tmp_path / "wan")
    for name, tensor in pretrained.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[name], tensor)
    assert "_name_or_path" not in model.config.backbone_config  # no local path in a saved model's config
    # weights that do not match the folder's config are refused, not initialised at random
    WanTransformer3DModel(**{**TINY_WAN, "ffn_dim": 48}).save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "config.json").write_text((tmp_path / "wan" / "config.json").read_text())
    with pytest.raises(ValueError, match="cannot load the backbone's weights.*ffn"):
        WanWorldModel.from_backbone(tmp_path / "other", sample_size=4, action_dim=2)
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "wan" / "diffusion_pytorch_model.safetensors")
    del weights["proj_out.weight"]  # a missing tensor: diffusers alone would initialise it at random
    save_file(weights, tmp_path / "wan" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ValueError, match="do not match its config.json.*proj_out.weight"):
        WanWorldModel.from_backbone(tmp_path / "wan", sample_size=4, action_dim=2)


@pytest.mark.parametrize("change, message", [({"patch_size": [2, 2, 2]}, "patch_size"),
                                             ({"image_dim": 8}, "image-to-video"),
                                             ({"out_channels": 8}, "out_channels")])
def test_backbones_the_adaptation_cannot_run_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        WanWorldModel(backbone_config={**TINY_WAN, **change}, sample_size=4)
    with pytest.raises(ValueError, match="not divisible"):
        WanWorldModel(backbone_config=TINY_WAN, sample_size=5)


def test_backbone_config_errors_name_the_field():
    with pytest.raises(ValueError, match="exactly one of transformer.backbone_path"):
        load_config("configs/pusht.yaml", ["transformer.backbone=wan"])
    with pytest.raises(ValueError, match="not one of"):
        load_config("configs/pusht.yaml", ["transformer.backbone=ltx", "transformer.backbone_path=x"])
    for setting in ("transformer.backbone_path=x", "transformer.lora_rank=4", "transformer.gradient_checkpointing=true"):
        with pytest.raises(ValueError, match=f"{setting.split('=')[0]} is for adapted backbones"):
            load_config("configs/pusht.yaml", [setting])


def _wan_overrides(dataset, out):
    from tests.test_training import tiny_overrides

    backbone = ", ".join(f"{key}: {value}" for key, value in TINY_WAN.items())
    return tiny_overrides(dataset, out) + ["transformer.backbone=wan", f"transformer.backbone_config={{{backbone}}}",
                                           "transformer.gradient_checkpointing=true"]


@pytest.fixture(scope="module")
def wan_pipeline(pusht_dataset, tmp_path_factory):
    """A tiny random Wan-architecture model trained 3 steps on real PushT, with outcome heads."""
    from worldsim.training.train_autoencoder import train_autoencoder
    from worldsim.training.train_heads import train_heads
    from worldsim.training.train_world_model import train_world_model

    out = tmp_path_factory.mktemp("wan")
    config = load_config("configs/pusht.yaml", _wan_overrides(pusht_dataset, out) + ["train.max_steps=3"])
    train_autoencoder(config, progress=False)
    final = train_world_model(config, progress=False)
    train_heads(final, [pusht_dataset], steps=20, batch_size=16, val_episodes=1, progress=False)
    return final


def test_a_wan_model_trains_saves_loads_and_runs_as_the_env(wan_pipeline):
    import json

    index = json.loads((wan_pipeline / "model_index.json").read_text())
    assert index["transformer"] == ["worldsim", "WanWorldModel"]
    pipeline = WorldModelPipeline.from_pretrained(wan_pipeline)
    assert isinstance(pipeline.transformer, WanWorldModel)
    log = [json.loads(line) for line in (wan_pipeline.parent / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3] and all(np.isfinite(e["loss"]) for e in log)
    frames = pipeline.start_frames["frames"][:1].numpy()
    imagined = pipeline.rollout(frames, pipeline.start_frames["action"][:1].numpy(),
                                np.full((1, 3, 2), 256.0, dtype=np.float32), generator=torch.Generator().manual_seed(0))
    assert imagined.shape == (1, 3, 16, 16, 3) and imagined.dtype == np.uint8
    env = gym.make("worldsim/WorldModel-v0", model=str(wan_pipeline))
    check_env(env.unwrapped, skip_render_check=True)


def test_a_wan_model_ranks_and_steers(wan_pipeline):
    from worldsim.embodiments.pusht.zoo import CentroidPusher, StandStill
    from worldsim.evaluation.rank import rank_policies
    from worldsim.steering import OutcomePredictor

    pipeline = WorldModelPipeline.from_pretrained(wan_pipeline)
    report = rank_policies(pipeline, {"still": StandStill(), "pusher": CentroidPusher()}, num_states=2, horizon=2,
                           num_context=2, progress=False)
    assert report["agreement"] is not None and set(report["policies"]) == {"still", "pusher"}
    rng = np.random.default_rng(0)
    prediction = OutcomePredictor(pipeline, aggregate="last").predict(
        rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8), rng.uniform(0, 512, (2, 2)).astype(np.float32),
        rng.uniform(0, 512, (4, 2, 2)).astype(np.float32))
    assert prediction.frames.shape == (4, 2, 16, 16, 3) and np.isfinite(prediction.scores).all()


def test_lora_trains_only_adapters_and_merges_into_a_plain_model():
    pytest.importorskip("peft")
    model = tiny_wan()
    frozen = {name: tensor.clone() for name, tensor in model.backbone.state_dict().items()}
    model.add_lora(rank=4)
    assert model.has_lora
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert all("lora_" in name for name in trainable if name.startswith("backbone."))
    assert any(name.startswith("action_adapters.") for name in trainable)
    sample, timestep, action = torch.randn(2, 3, 4, 4, 8), torch.rand(2, 3) * 1000, torch.randn(2, 3, 3)
    with torch.no_grad():
        before = model(sample, timestep, action)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    (model(sample, timestep, action) ** 2).mean().backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        tuned = model(sample, timestep, action)
    assert (tuned - before).abs().max() > 1e-5
    for name, parameter in model.backbone.named_parameters():  # the pretrained weights did not move
        if "lora_" not in name:
            base = name.replace(".base_layer", "")
            torch.testing.assert_close(parameter, frozen[base])
    model.merge_lora()
    assert not model.has_lora and all(p.requires_grad for p in model.parameters()
                                      if p is not model.task_text_states)
    assert set(model.backbone.state_dict()) == set(frozen)  # plain WanTransformer3DModel weights again
    with torch.no_grad():
        torch.testing.assert_close(model(sample, timestep, action), tuned, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="no LoRA"):
        model.merge_lora()


def test_lora_training_saves_merged_weights_that_load_as_a_plain_model(pusht_dataset, tmp_path):
    pytest.importorskip("peft")
    import json
    import shutil

    from worldsim.training.train_autoencoder import train_autoencoder
    from worldsim.training.train_world_model import train_world_model

    torch.manual_seed(2)
    WanTransformer3DModel(**{**TINY_WAN, "patch_size": [1, 2, 2]}).save_pretrained(tmp_path / "pretrained")
    config = load_config("configs/pusht.yaml", _wan_overrides(pusht_dataset, tmp_path)[:-2] + [
        "transformer.backbone=wan", f"transformer.backbone_path={tmp_path / 'pretrained'}", "transformer.lora_rank=2",
        "train.max_steps=2", "train.learning_rate=1e-2"])
    train_autoencoder(config, progress=False)
    final = train_world_model(config, progress=False)
    model = WorldModelPipeline.from_pretrained(final).transformer
    assert not model.has_lora and isinstance(model, WanWorldModel)
    pretrained = WanTransformer3DModel.from_pretrained(tmp_path / "pretrained")
    moved = [name for name, tensor in pretrained.state_dict().items()
             if not torch.equal(tensor, model.backbone.state_dict()[name])]
    # only LoRA's targets (the attention projections) moved, by the merged low-rank update; nothing else did
    assert moved and all(name.rsplit(".", 1)[0].endswith(("to_q", "to_k", "to_v", "to_out.0")) for name in moved)
    # a resumed LoRA run reloads its checkpoint (LoRA layers and all) and finishes
    shutil.rmtree(final)
    resumed = load_config("configs/pusht.yaml", _wan_overrides(pusht_dataset, tmp_path)[:-2] + [
        "transformer.backbone=wan", f"transformer.backbone_path={tmp_path / 'pretrained'}", "transformer.lora_rank=2",
        "train.max_steps=3", "train.learning_rate=1e-2"])
    assert WorldModelPipeline.from_pretrained(train_world_model(resumed, progress=False)).transformer.has_lora is False
    log = [json.loads(line) for line in (tmp_path / "wm" / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3]  # resumed at checkpoint-2, not started over


def test_a_wan_vae_encodes_single_frames_and_serves_as_the_models_autoencoder(pusht_dataset, tmp_path):
    from diffusers import AutoencoderKLWan

    from worldsim.models.autoencoders import decode_latents, encode_frames
    from worldsim.training.train_world_model import train_world_model

    torch.manual_seed(4)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[False, True],
                           latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[2.0, 1.0, 0.5, 1.5]).eval()
    frames = torch.randint(0, 255, (2, 3, 16, 16, 3), dtype=torch.uint8)
    latents = encode_frames(vae, frames)
    assert latents.shape == (2, 3, 4, 4, 4)
    torch.testing.assert_close(encode_frames(vae, frames[1, 2]), latents[1, 2])  # each frame on its own
    with torch.no_grad():  # normalised per channel by the VAE's own statistics
        raw = vae.encode(frames_to_clip(frames[0, :1])).latent_dist.mean[:, :, 0]
    torch.testing.assert_close(latents[0, :1], (raw - torch.tensor([0.1, -0.2, 0.3, 0.0])[:, None, None])
                               / torch.tensor([2.0, 1.0, 0.5, 1.5])[:, None, None], atol=1e-5, rtol=1e-4)
    assert decode_latents(vae, latents).shape == (2, 3, 16, 16, 3)
    vae.save_pretrained(tmp_path / "vae")
    config = load_config("configs/pusht.yaml", _wan_overrides(pusht_dataset, tmp_path) + [
        f"train.autoencoder={tmp_path / 'vae'}", "train.max_steps=1"])
    pipeline = WorldModelPipeline.from_pretrained(train_world_model(config, progress=False))
    assert isinstance(pipeline.autoencoder, AutoencoderKLWan) and isinstance(pipeline.transformer, WanWorldModel)
    env = gym.make("worldsim/WorldModel-v0", model=pipeline)
    observation, _ = env.reset(seed=0)
    observation, *_ = env.step(env.action_space.sample())
    assert observation.shape == (16, 16, 3) and observation.dtype == np.uint8


def frames_to_clip(frames: torch.Tensor) -> torch.Tensor:
    """uint8 `(B, H, W, 3)` -> one-frame clips `(B, 3, 1, H, W)` in [-1, 1]."""
    return (frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0).unsqueeze(2)


def tiny_wan_vae(temperal_downsample=(True, True)):
    """A tiny random ``AutoencoderKLWan``: 4 latent channels, 4x spatial and (by default) 4x temporal compression."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(4)
    return AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1,
                            temperal_downsample=list(temperal_downsample),
                            latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[2.0, 1.0, 0.5, 1.5]).eval()


def decode_whole(vae, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents `(B, n, C, h, w)` decoded by the VAE's own ``decode`` in one call -> `(B, F, H, W, 3)`."""
    from worldsim.models.autoencoders import latent_normalization, pixels_to_frames

    shift, scale = latent_normalization(vae)
    with torch.no_grad():
        pixels = vae.decode((latents / scale + shift).transpose(1, 2)).sample
    return pixels_to_frames(pixels.transpose(1, 2))


def test_streaming_decode_through_the_vae_cache_equals_decoding_the_whole_clip():
    from worldsim.models.autoencoders import VideoDecoderCache, check_video_autoencoder, encode_video

    vae = tiny_wan_vae()
    frames = torch.randint(0, 255, (3, 13, 16, 16, 3), dtype=torch.uint8)
    latents = encode_video(vae, frames)
    assert latents.shape == (3, 4, 4, 4, 4)  # the first frame alone, then 3 latent frames of 4
    torch.testing.assert_close(encode_video(vae, frames[:, :5]), latents[:, :2])  # causal: later frames change nothing
    whole = decode_whole(vae, latents)
    cache = VideoDecoderCache(vae)
    pieces = [cache.decode(latents[:, :2]), cache.decode(latents[:, 2:3]), cache.decode(latents[:, 3:])]
    assert [piece.shape[1] for piece in pieces] == [5, 4, 4]
    assert torch.equal(torch.cat(pieces, dim=1), whole)
    # a vector env's reset: row 1 restarts from a one-latent context while rows 0 and 2 carry on
    running = VideoDecoderCache(vae)
    running.decode(latents[:, :3])
    fresh = VideoDecoderCache(vae)
    fresh.decode(latents[2:3, :1])
    running.select(torch.tensor([0, 0]))  # a copy: the running cache is not touched
    running.splice(torch.tensor([1]), fresh)
    stepped = running.decode(torch.stack([latents[0, 3], latents[2, 1], latents[2, 3]])[:, None])
    assert torch.equal(stepped[0], whole[0, 9:])
    assert torch.equal(stepped[1], whole[2, 1:5])  # as if row 1 had decoded clip 2 from its start
    assert torch.equal(stepped[2], whole[2, 9:])
    with pytest.raises(ValueError, match=r"1 \+ 4 m"):
        encode_video(vae, frames[:, :4])
    with pytest.raises(ValueError, match="compresses time 2x"):
        check_video_autoencoder(tiny_wan_vae((False, True)))


def test_grouped_actions_line_up_with_latent_frames():
    from worldsim.training.train_world_model import grouped_actions, latent_episode_lengths

    episode_from, episode_to = np.array([0, 10]), np.array([10, 13])  # 10 and 3 frames
    assert latent_episode_lengths(episode_from, episode_to, 4).tolist() == [3, 1]  # 1 + 9 // 4, 1 + 2 // 4
    action = np.arange(13, dtype=np.float32)[:, None] * np.array([[1.0, -1.0]], dtype=np.float32)
    grouped = grouped_actions(action, episode_from, episode_to, 4, width=3)
    assert grouped.shape == (4, 12)
    rows = grouped.reshape(4, 4, 3)
    assert rows[0, :, 0].tolist() == [0, 1, 2, 3] and rows[1, :, 0].tolist() == [4, 5, 6, 7]  # after latents 0, 1
    assert rows[2, :, 0].tolist() == [8, 9, 0, 0]  # the episode ends: padded with zeros
    assert rows[3, :, 0].tolist() == [10, 11, 12, 0] and rows[0, :, 1].tolist() == [0, -1, -2, -3]
    assert not rows[..., 2].any()  # each action padded to the width


def test_a_time_compressed_model_trains_and_imagines_four_frames_a_step(pusht_dataset, tmp_path):
    from worldsim.envs import WorldModelVectorEnv
    from worldsim.models.autoencoders import encode_video
    from worldsim.training.train_world_model import train_world_model

    vae = tiny_wan_vae()
    vae.save_pretrained(tmp_path / "vae")
    config = load_config("configs/pusht.yaml", _wan_overrides(pusht_dataset, tmp_path) + [
        f"train.autoencoder={tmp_path / 'vae'}", "train.temporal_compression=true", "train.max_steps=2",
        "train.validation_frames=8"])
    final = train_world_model(config, progress=False)
    assert (final / "validation.mp4").is_file()
    pipeline = WorldModelPipeline.from_pretrained(final)
    assert pipeline.frames_per_latent == 4 and pipeline.transformer.config.action_dim == 8  # 4 grouped 2-D actions
    start = pipeline.start_frames
    assert start["frames"].shape[1:] == (5, 16, 16, 3) and start["action"].shape[1:] == (4, 2)
    # open loop: 8 actions -> 8 frames, exactly the VAE's decoding of context + imagined latents in one call
    pipeline.metadata["bf16"] = False  # float32 throughout, so that the two decodings can be compared exactly
    action = np.random.default_rng(0).uniform(0, 512, (2, 8, 2)).astype(np.float32)
    frames, latents = pipeline.rollout(start["frames"][:2].numpy(), start["action"][:2].numpy(), action,
                                       generator=torch.Generator().manual_seed(0), return_latents=True)
    assert frames.shape == (2, 8, 16, 16, 3) and latents.shape == (2, 2, 4, 4, 4)
    context = encode_video(pipeline.autoencoder, start["frames"][:2])
    whole = decode_whole(pipeline.autoencoder, torch.cat([context, torch.from_numpy(latents)], dim=1))
    assert np.abs(whole[:, 5:].int().numpy() - frames.astype(np.int32)).max() <= 1
    # one rollout restarts from new context while the other carries on (what a vector env's reset does): its next
    # 4 frames are those of a fresh rollout from that context, so its VAE cache was spliced in, not inherited
    def seeds(*values):
        return [torch.Generator().manual_seed(value) for value in values]

    clips, clip_action = start["frames"][:2].numpy(), start["action"][:2].numpy()
    state = pipeline.encode_context(clips, clip_action, generator=seeds(0, 1))
    state = pipeline.step(state, action[:, :4], generator=seeds(2, 3))
    state = pipeline.restart(state, [1], clips[:1], clip_action[:1], generator=seeds(4))
    assert np.array_equal(state.chunk_frames[1].numpy(), np.repeat(clips[:1, -1], 4, axis=0))
    state = pipeline.step(state, action[:, 4:], generator=seeds(5, 6))
    fresh = pipeline.encode_context(clips[:1], clip_action[:1], generator=seeds(4))
    fresh = pipeline.step(fresh, action[1:, 4:], generator=seeds(6))
    assert np.abs(state.chunk_frames[1].int().numpy() - fresh.chunk_frames[0].int().numpy()).max() <= 1
    pipeline.metadata["bf16"] = True
    with pytest.raises(ValueError, match="multiple of 4"):
        pipeline.rollout(start["frames"][:1].numpy(), start["action"][:1].numpy(), action[:1, :3])
    with pytest.raises(ValueError, match="only its video VAE decodes"):
        pipeline.set_decoder("light")
    from worldsim.embodiments.pusht.zoo import CentroidPusher, StandStill
    from worldsim.evaluation.rank import rank_policies

    with pytest.raises(ValueError, match="ranking .* each hold 4 video frames"):
        rank_policies(pipeline, {"still": StandStill(), "pusher": CentroidPusher()}, num_states=2, horizon=2)
    # the env: a step is 4 actions and 4 frames
    env = gym.make("worldsim/WorldModel-v0", model=pipeline)
    assert env.action_space.shape == (4, 2)
    check_env(env.unwrapped, skip_render_check=True)
    observation, _ = env.reset(seed=0)
    observation, _, _, _, info = env.step(env.action_space.sample())
    assert info["frames"].shape == (4, 16, 16, 3) and np.array_equal(observation, info["frames"][-1])
    with pytest.raises(ValueError, match=r"expected \(4, 2\)"):
        env.step(np.zeros(2, dtype=np.float32))
    assert env.unwrapped.metadata["render_fps"] == pipeline.embodiment().fps / 4
    with pytest.raises(ValueError, match="start_context 4 does not fit"):
        gym.make("worldsim/WorldModel-v0", model=pipeline, start_dataset=pusht_dataset, start_context=4)
    # the vector env: sub-env 1 is reset alone mid-episode while sub-env 0 carries on
    vector = WorldModelVectorEnv(pipeline, num_envs=2)
    vector.reset(seed=0)
    observations, _, _, _, infos = vector.step(vector.action_space.sample())
    assert observations.shape == (2, 16, 16, 3) and infos["frames"].shape == (2, 4, 16, 16, 3)
    observations, _ = vector.reset(options={"reset_mask": np.array([False, True])})
    observations, _, _, _, infos = vector.step(vector.action_space.sample())
    assert infos["frames"].shape == (2, 4, 16, 16, 3) and np.array_equal(observations[1], infos["frames"][1, -1])
