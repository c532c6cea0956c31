"""Int8 quantization (the transformer blocks dynamic, the light decoder static): close to the float model, refused
where it cannot work."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import make_tiny_pipeline, randomize
from worldsim.models.autoencoders import LightDecoder, decode_latents, encode_frames
from worldsim.models.quantization import (DynamicInt8Linear, StaticInt8Decoder, quantize_decoder_,
                                         quantize_transformer_)


def test_int8_linear_is_close_to_the_float_layer_and_keeps_the_dtype():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96)
    quantized = DynamicInt8Linear(linear)
    x = torch.randn(32, 64)
    error = (quantized(x) - linear(x)).norm() / linear(x).norm()
    assert 0 < error < 0.05  # int8 is not exact, but within a few percent
    assert quantized(x.bfloat16()).dtype == torch.bfloat16
    linear.weight.data.zero_()  # the quantized layer holds its own copy of the weights
    assert quantized(x).abs().sum() > 0


def test_quantized_pipeline_rolls_out_close_to_the_float_one():
    pipeline, quantized = make_tiny_pipeline(), make_tiny_pipeline()
    linears = [m for m in quantized.transformer.blocks.modules() if isinstance(m, torch.nn.Linear)]
    quantized.quantize("int8")
    replaced = [m for m in quantized.transformer.blocks.modules() if isinstance(m, DynamicInt8Linear)]
    assert len(replaced) == len(linears) > 0
    assert not any(isinstance(m, torch.nn.Linear) and not isinstance(p, DynamicInt8Linear)
                   for p in quantized.transformer.blocks.modules() for m in p.children())
    assert isinstance(quantized.transformer.patch_embed, torch.nn.Linear)  # outside the blocks: float
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (2, 3, 16, 16, 3), dtype=np.uint8)
    context_action = rng.uniform(0, 512, (2, 2, 2)).astype(np.float32)
    action = rng.uniform(0, 512, (2, 4, 2)).astype(np.float32)
    run = lambda p, seed: p.rollout(frames, context_action, action,
                                    generator=torch.Generator().manual_seed(seed)).astype(np.float64)
    float_frames, int8_frames = run(pipeline, 3), run(quantized, 3)
    quantization_error = np.abs(float_frames - int8_frames).mean()
    seed_spread = np.abs(float_frames - run(pipeline, 4)).mean()
    assert 0 < quantization_error < 0.2 * seed_spread


def test_quantization_is_refused_where_it_cannot_work(tmp_path):
    pipeline = make_tiny_pipeline()
    with pytest.raises(ValueError, match="'fp4'"):
        pipeline.quantize("fp4")
    assert pipeline.quantization is None
    assert not any(isinstance(m, DynamicInt8Linear) for m in pipeline.transformer.modules())
    pipeline.quantize("int8")
    with pytest.raises(RuntimeError, match="already quantized"):
        pipeline.quantize("int8")
    with pytest.raises(RuntimeError, match="quantized"):
        pipeline.save_pretrained(tmp_path / "q")
    assert not (tmp_path / "q").exists()
    with pytest.raises(ValueError, match="no `blocks`"):
        quantize_transformer_(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="must be 'int8'"):  # the decoder part is not the transformer's to do
        quantize_transformer_(make_tiny_pipeline().transformer, "int8+decoder")
    if torch.cuda.is_available():
        other = make_tiny_pipeline()
        other.transformer.cuda()
        with pytest.raises(ValueError, match="CPU only"):
            quantize_transformer_(other.transformer)


def pipeline_with_light_decoder(start_frames: bool = True):
    pipeline = make_tiny_pipeline(start_frames)
    pipeline.decoder = randomize(LightDecoder(latent_channels=4, block_out_channels=8, num_blocks=(1, 1, 0)), seed=3)
    pipeline.set_decoder("light")
    return pipeline


def test_int8_decoder_decodes_close_to_the_float_one():
    pipeline, quantized = pipeline_with_light_decoder(), pipeline_with_light_decoder()
    quantized.quantize("int8+decoder")
    assert quantized.quantization == "int8+decoder" and isinstance(quantized.decoder.decoder, StaticInt8Decoder)
    assert any(isinstance(m, DynamicInt8Linear) for m in quantized.transformer.blocks.modules())
    frames = torch.as_tensor(pipeline.start_frames["frames"]).reshape(-1, 16, 16, 3)
    latents = encode_frames(pipeline.autoencoder, frames)
    with torch.no_grad():
        reference, pixels = pipeline.decoder(latents), quantized.decoder(latents)
        assert quantized.decoder(latents.bfloat16()).dtype == torch.bfloat16
    assert 0 < ((pixels - reference).norm() / reference.norm()).item() < 0.05
    decoded = decode_latents(quantized.decoder, latents)  # the frame path works without float parameters
    assert decoded.dtype == torch.uint8 and decoded.shape == frames.shape
    assert np.abs(decoded.numpy().astype(int) - decode_latents(pipeline.decoder, latents).numpy()).mean() < 3.0
    rng = np.random.default_rng(2)
    rollout = quantized.rollout(rng.integers(0, 255, (2, 3, 16, 16, 3), dtype=np.uint8),
                                rng.uniform(0, 512, (2, 2, 2)).astype(np.float32),
                                rng.uniform(0, 512, (2, 3, 2)).astype(np.float32))
    assert rollout.shape == (2, 3, 16, 16, 3) and rollout.dtype == np.uint8


def test_int8_decoder_is_refused_where_it_cannot_work():
    pipeline = pipeline_with_light_decoder()
    pipeline.set_decoder("full")
    with pytest.raises(ValueError, match="set_decoder"):
        pipeline.quantize("int8+decoder")
    assert pipeline.quantization is None  # nothing changed: the transformer is still float
    assert not any(isinstance(m, DynamicInt8Linear) for m in pipeline.transformer.modules())
    without_start = pipeline_with_light_decoder(start_frames=False)
    with pytest.raises(ValueError, match="start frames"):
        without_start.quantize("int8+decoder")
    assert without_start.quantization is None
    with pytest.raises(ValueError, match="light decoder"):
        quantize_decoder_(pipeline.autoencoder, torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match=r"\(N >= 1, 4, h, w\)"):
        quantize_decoder_(pipeline.decoder, torch.zeros(2, 3, 4, 4))
    quantize_decoder_(pipeline.decoder, torch.randn(2, 4, 4, 4))
    with pytest.raises(RuntimeError, match="already quantized"):
        quantize_decoder_(pipeline.decoder, torch.randn(2, 4, 4, 4))


def test_bench_counts_the_int8_decoders_flops_from_the_float_decoder(tmp_path):
    """The config FLOP count is taken before quantizing: an int8 decoder is invisible to the FLOP counter."""
    import json

    from worldsim.benchmark import config_flops_per_frame
    from worldsim.cli.main import main as cli
    from worldsim.pipelines.world_model import WorldModelPipeline

    path = tmp_path / "model"
    pipeline_with_light_decoder().save_pretrained(path)
    float_count = config_flops_per_frame(WorldModelPipeline.from_pretrained(path), 1, 2)
    assert cli(["bench", "--model", str(path), "--num-envs", "2", "--seconds", "0.2", "--latency-steps", "0",
                "--memory-steps", "--train-steps", "0", "--num-inference-steps", "1", "--decoder", "light",
                "--quantize", "int8+decoder", "--json", str(tmp_path / "bench.json")]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    config = report["inference_flops"]["config_per_frame"]
    assert report["sampler"]["quantize"] == "int8+decoder" and config["decoder"] > 0
    light = WorldModelPipeline.from_pretrained(path)
    light.set_decoder("light")
    assert config == pytest.approx(config_flops_per_frame(light, 1, 2))
    assert config["decoder"] != pytest.approx(float_count["decoder"])  # the light decoder's, not the full one's
