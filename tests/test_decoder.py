"""The light decoder: trained on a model's latents of real frames, saved in the model folder, used when chosen."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from worldsim.models.autoencoders import LightDecoder, decode_latents, encode_frames
from worldsim.pipelines.world_model import WorldModelPipeline

TINY_BLOCKS = dict(block_out_channels=8, num_blocks=(1, 1, 0))  # the tiny model: 4 x 4 latents, 16 x 16 frames


@pytest.fixture(scope="module")
def model_with_decoder(tiny_pipeline_path, pusht_dataset, tmp_path_factory):
    from worldsim.training.train_decoder import train_decoder

    path = tmp_path_factory.mktemp("decoder") / "model"
    shutil.copytree(tiny_pipeline_path, path)
    report = train_decoder(path, [pusht_dataset], val_datasets=[pusht_dataset], steps=80, batch_size=16,
                           learning_rate=5e-3, progress=False, **TINY_BLOCKS)
    return path, report


def test_light_decoder_shapes_and_bad_settings():
    decoder = LightDecoder(latent_channels=8)
    assert decoder(torch.zeros(2, 8, 8, 8)).shape == (2, 3, 64, 64) and decoder.upsampling_factor == 8
    frames = decode_latents(decoder, torch.zeros(5, 7, 8, 8, 8))
    assert frames.shape == (5, 7, 64, 64, 3) and frames.dtype == torch.uint8
    with pytest.raises(ValueError, match="block_out_channels"):
        LightDecoder(block_out_channels=0)
    with pytest.raises(ValueError, match="num_blocks"):
        LightDecoder(num_blocks=(1, -1))


def test_trained_light_decoder_is_saved_in_the_model_and_beats_an_untrained_one(model_with_decoder, pusht_dataset):
    from worldsim.data.frame_cache import load_frame_cache
    from worldsim.data.lerobot import LeRobotDataset
    from worldsim.training.train_decoder import decoder_report

    path, report = model_with_decoder
    assert report["steps"] == 80 and (path / "decoder" / "metrics.json").is_file()
    assert "decoder/diffusion_pytorch_model.safetensors" in json.loads((path / "model_index.json").read_text())[
        "worldsim_files"]
    pipeline = WorldModelPipeline.from_pretrained(path)  # the manifest covers the new folder
    assert isinstance(pipeline.decoder, LightDecoder) and pipeline.decoder_name == "full"
    frames = np.array(load_frame_cache(LeRobotDataset(pusht_dataset), 16, progress=False))
    latents = encode_frames(pipeline.autoencoder, torch.from_numpy(frames)).numpy()
    trained = decoder_report(pipeline, pipeline.decoder, frames, latents)
    untrained = decoder_report(pipeline, LightDecoder(latent_channels=4, **TINY_BLOCKS), frames, latents)
    assert trained["psnr"]["light"] > untrained["psnr"]["light"] + 3.0
    assert np.isfinite(trained["psnr"]["full"])
    assert report["flops_per_frame"]["light"] > 0


def test_set_decoder_switches_what_decodes_imagined_frames(model_with_decoder, tiny_pipeline_path):
    from worldsim.envs import WorldModelEnv

    path, _ = model_with_decoder
    pipeline = WorldModelPipeline.from_pretrained(path)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (1, 2, 16, 16, 3), dtype=np.uint8)
    action = np.full((1, 2), 256.0, np.float32)

    def step():
        state = pipeline.encode_context(frames, np.zeros((1, 1, 2), np.float32),
                                        generator=torch.Generator().manual_seed(0))
        return pipeline.step(state, action, generator=torch.Generator().manual_seed(1))

    full = step()
    pipeline.set_decoder("light")
    light = step()
    torch.testing.assert_close(light.frame_latents, full.frame_latents)  # same latents, another decoder
    assert not torch.equal(light.frames, full.frames)
    with torch.no_grad(), pipeline._autocast():
        torch.testing.assert_close(light.frames, decode_latents(pipeline.decoder, light.frame_latents), atol=1,
                                   rtol=0)
    pipeline.set_decoder("full")
    assert torch.equal(step().frames, full.frames)

    with pytest.raises(ValueError, match="'full' or 'light'"):
        pipeline.set_decoder("tiny")
    assert pipeline.decoder_name == "full"  # unchanged by the refused call
    with pytest.raises(ValueError, match="train-decoder"):
        WorldModelEnv(tiny_pipeline_path, decoder="light")
    env = WorldModelEnv(path, decoder="light")
    observation, _ = env.reset(seed=0)
    observation, *_ = env.step(np.array([256.0, 256.0], np.float32))
    assert observation.shape == (16, 16, 3) and env.pipeline.decoder_name == "light"
    # no decoder given: the env keeps the pipeline's choice (a folder loads with "full")
    pipeline.set_decoder("light")
    assert WorldModelEnv(pipeline).decoder == "light" and WorldModelEnv(path).decoder == "full"

    # a refused env leaves a shared pipeline as it was: a bad decoder does not first change the steps, a bad step
    # count or spacing does not first change the decoder
    from worldsim.envs import WorldModelVectorEnv

    pipeline.set_timesteps(2, "trailing")
    timesteps = pipeline.scheduler.timesteps.clone()
    refused = [(WorldModelEnv, {"num_inference_steps": 5, "decoder": "tiny"}, "'full' or 'light'"),
               (WorldModelEnv, {"num_inference_steps": -1, "decoder": "full"}, "num_inference_steps must be"),
               (WorldModelVectorEnv, {"timestep_spacing": "leading", "decoder": "full"}, "timestep_spacing must be")]
    for env_class, settings, message in refused:
        with pytest.raises(ValueError, match=message):
            env_class(pipeline, **settings)
        assert pipeline.decoder_name == "light" and torch.equal(pipeline.scheduler.timesteps, timesteps)


def test_train_decoder_refuses_a_decoder_that_misses_the_frame_size(tiny_pipeline_path, pusht_dataset, tmp_path):
    from worldsim.training.train_decoder import train_decoder

    path = tmp_path / "model"
    shutil.copytree(tiny_pipeline_path, path)
    with pytest.raises(ValueError, match="use 3 stages"):
        train_decoder(path, [pusht_dataset], val_datasets=[pusht_dataset], steps=1, block_out_channels=8,
                      num_blocks=(1, 1, 1, 0), progress=False)
    assert not (path / "decoder").exists()
    with pytest.raises(ValueError, match="hold out 10"):
        train_decoder(path, [pusht_dataset], steps=1, progress=False, **TINY_BLOCKS)


def test_decoder_folder_naming_another_class_is_refused(model_with_decoder, tmp_path):
    path = tmp_path / "model"
    shutil.copytree(model_with_decoder[0], path)
    config = json.loads((path / "decoder" / "config.json").read_text())
    (path / "decoder" / "config.json").write_text(json.dumps({**config, "_class_name": "AutoencoderTiny"}))
    with pytest.raises(ValueError, match="not allowed for 'decoder'"):
        WorldModelPipeline.from_pretrained(path)


def test_bench_counts_the_light_decoders_flops_when_it_decodes(model_with_decoder, tmp_path):
    from worldsim.cli.main import main

    path, report = model_with_decoder
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(path), "--decoder", "light", "--num-envs", "2", "--seconds", "0.2",
                 "--latency-steps", "0", "--memory-steps", "--train-steps", "0", "--num-inference-steps", "2",
                 "--json", str(out)]) == 0
    bench = json.loads(out.read_text())
    inference = bench["inference_flops"]
    assert bench["sampler"]["decoder"] == "light"
    assert inference["config_per_frame"]["decoder"] == report["flops_per_frame"]["light"]
    # torch's count of a real vector-env step agrees with the config's, light decoder included
    assert inference["counted_per_frame"] == pytest.approx(inference["config_per_frame"]["total"], rel=0.05)


def test_decoder_config_is_validated_and_its_report_carries_it(model_with_decoder, tmp_path):
    from dataclasses import asdict

    from worldsim.cli.main import build_parser
    from worldsim.cli.training import _verb_config
    from worldsim.training.config import DecoderConfig

    path, report = model_with_decoder  # trained with keywords
    expected = DecoderConfig(steps=80, batch_size=16, learning_rate=5e-3, block_out_channels=8, num_blocks=[1, 1, 0])
    assert report["config"] == asdict(expected)
    assert json.loads((path / "decoder" / "metrics.json").read_text())["config"]["num_blocks"] == [1, 1, 0]
    for settings, message in (({"num_blocks": []}, r"decoder\.num_blocks"), ({"num_blocks": [1, -1]}, "num_blocks"),
                              ({"mixed_precision": "fp8"}, r"decoder\.mixed_precision"),
                              ({"max_minutes": 0}, r"decoder\.max_minutes must be > 0"),
                              ({"val_frames": 0}, r"decoder\.val_frames")):
        with pytest.raises(ValueError, match=message):
            DecoderConfig(**settings)
    assert DecoderConfig(mixed_precision=False).mixed_precision == "no"  # YAML 1.1 reads `no` as false
    args = build_parser().parse_args(["train-decoder", "--model", "m", "--dataset", "d"])
    assert _verb_config(args, DecoderConfig) == DecoderConfig(steps=9000, batch_size=64, learning_rate=2e-3,
                                                              block_out_channels=32, num_blocks=[2, 2, 1, 0])
    args = build_parser().parse_args(["train-decoder", "--model", "m", "--dataset", "d", "--num-blocks", "1", "1", "0",
                                      "--", "val_frames=16"])
    assert _verb_config(args, DecoderConfig) == DecoderConfig(num_blocks=[1, 1, 0], val_frames=16)
