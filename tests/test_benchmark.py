"""`worldsim bench` and the few-step sampler: FLOP counting, the report, trailing timestep spacing."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import worldsim  # noqa: F401  (registers the env ids)
from tests.conftest import make_tiny_pipeline, randomize, tiny_transformer
from worldsim.cli.main import main as cli
from worldsim.envs.world_model_env import predict_outcomes
from worldsim.utils.measure import MARKDOWN_BEGIN, MARKDOWN_END, count_flops, transformer_flops, write_markdown_section


@pytest.mark.parametrize("num_layers", [1, 3])
def test_transformer_flops_from_the_config_match_torchs_flop_counter(num_layers):
    model = randomize(tiny_transformer(num_layers=num_layers)).eval()
    config = model.config
    batch, frames = 3, 5
    sample = torch.randn(batch, frames, 4, 4, 4)
    timestep = torch.full((batch, frames), 500.0)
    action = torch.rand(batch, frames, 2)
    with torch.no_grad():
        counted = count_flops(lambda: model(sample, timestep, action))
    assert counted == pytest.approx(transformer_flops(config, batch, frames, 0), rel=0.01)

    # one new frame attending to a cache of 3 frames (the streaming pass of every denoising step)
    cache = model.new_cache(batch, local_attn_size=4)
    with torch.no_grad():
        model.forward_cached(sample[:, :3], timestep[:, :3], action[:, :3], None, cache, update_cache=True)
        counted = count_flops(lambda: model.forward_cached(sample[:, 3:4], timestep[:, :1], action[:, :1], None, cache))
    assert counted == pytest.approx(transformer_flops(config, batch, 1, 3), rel=0.01)
    # the cache-only pass that writes a finished frame: the last block stops at its QKV projection
    with torch.no_grad():
        counted = count_flops(lambda: model.forward_cached(sample[:, 3:4], timestep[:, :1], action[:, :1], None,
                                                           cache.reorder(torch.arange(batch)), update_cache=True,
                                                           return_output=False))
    assert counted == pytest.approx(transformer_flops(config, batch, 1, 3, keys_only=True), rel=0.01)
    assert transformer_flops(config, batch, 1, 3, keys_only=True) < transformer_flops(config, batch, 1, 3)
    # more past frames cost more: the attention term is really there
    assert transformer_flops(config, batch, 1, 7) > transformer_flops(config, batch, 1, 3)


def test_count_flops_counts_cpu_attention():
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8)
    # Q K^T and P V: 2 * (rows * L * S * E) each
    assert count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)) == 2 * 2 * (2 * 3 * 4 * 6 * 8)


def test_markdown_section_replaces_only_what_is_between_the_markers(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nearlier figures\n")
    write_markdown_section(path, "first table\n")
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\nearlier figures\n") and "first table" in text
    path.write_text(text + "\n## Later section\nkept\n")
    write_markdown_section(path, "second table\n")
    text = path.read_text()
    assert "second table" in text and "first table" not in text
    assert "earlier figures" in text and "## Later section\nkept" in text
    assert text.count(MARKDOWN_BEGIN) == 1 and text.count(MARKDOWN_END) == 1


def test_bench_command_measures_everything_on_a_tiny_model(model_with_heads, tmp_path):
    path, _ = model_with_heads
    report_path, markdown = tmp_path / "bench.json", tmp_path / "benchmarks.md"
    code = cli(["bench", "--model", str(path), "--num-envs", "2", "3", "--seconds", "0.2", "--latency-steps", "4",
                "--memory-steps", "3", "6", "--train-steps", "1", "--train-batch-size", "2",
                "--num-inference-steps", "2", "--json", str(report_path), "--markdown", str(markdown)])
    assert code == 0
    report = json.loads(report_path.read_text())
    real = report["real_env"]["steps_per_second"]
    assert real > 0 and report["real_env"]["observation_shape"] == [96, 96, 3]
    # the flags not given are the model's defaults (the tiny model's: linspace spacing, the autoencoder's decoder)
    assert report["sampler"] == {"num_inference_steps": 2, "timestep_spacing": "linspace", "decoder": "full"}
    single = report["single_env"]
    assert single["steps_per_second"] > 0 and 0 < single["latency_ms_median"] <= single["latency_ms_p95"]
    for n in ("2", "3"):
        entry = report["vector_env"][n]
        assert entry["ratio_to_real"] == pytest.approx(entry["steps_per_second"] / real)
    inference = report["inference_flops"]
    assert inference["num_envs"] == 3
    # torch's count of a real vector-env step agrees with the count from the config (2 denoising passes + 1 cache pass)
    assert inference["counted_per_frame"] == pytest.approx(inference["config_per_frame"]["total"], rel=0.05)
    assert 0 < inference["fraction_of_peak"] < 2
    assert report["training"]["samples_per_second"] > 0 and report["training"]["flops_per_step"] > 0
    assert report["training"]["config_flops_per_step"] == pytest.approx(report["training"]["flops_per_step"], rel=0.2)
    assert set(report["memory"]) == {"3", "6"} and all(m["peak_rss_mib"] > 0 and m["finite_rewards"]
                                                       for m in report["memory"].values())
    text = markdown.read_text()
    assert "worldsim bench --model" in text and "| real `gym_pusht/PushT-v0` (pixels 96x96x3), steps/s |" in text
    assert "fraction of peak" in text and "3-step rollout" in text


def test_bench_with_an_int8_transformer_takes_the_flops_from_the_config(model_with_heads, tmp_path):
    path, _ = model_with_heads
    report_path = tmp_path / "bench-int8.json"
    assert cli(["bench", "--model", str(path), "--num-envs", "2", "--seconds", "0.2", "--latency-steps", "0",
                "--memory-steps", "3", "--train-steps", "0", "--num-inference-steps", "1", "--quantize", "int8",
                "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["sampler"]["quantize"] == "int8" and report["vector_env"]["2"]["steps_per_second"] > 0
    inference = report["inference_flops"]
    assert inference["from"] == "config"
    # the FLOP counter does not see the int8 matmuls, so the achieved rate comes from the config's count
    assert inference["counted_per_frame"] < inference["config_per_frame"]["total"]
    assert inference["achieved_flops_per_second"] == pytest.approx(
        inference["config_per_frame"]["total"] * report["vector_env"]["2"]["steps_per_second"])
    assert report["memory"]["3"]["finite_rewards"]


def test_bench_refuses_bad_settings_before_measuring(tiny_pipeline_path, tmp_path, capsys):
    assert cli(["bench", "--model", str(tiny_pipeline_path), "--num-envs", "0", "--json", str(tmp_path / "r.json")]) == 2
    assert "num_envs must be" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_trailing_spacing_takes_equal_steps_and_bad_settings_leave_the_state_alone():
    pipeline = make_tiny_pipeline()
    assert pipeline.set_timesteps(2).tolist() == pytest.approx([1000.0, 1.0])  # diffusers' default
    assert pipeline.set_timesteps(2, "trailing").tolist() == pytest.approx([1000.0, 500.0])
    assert pipeline.scheduler.sigmas.tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert pipeline.set_timesteps(4, "trailing").tolist() == pytest.approx([1000.0, 750.0, 500.0, 250.0])
    with pytest.raises(ValueError, match="'cosine'"):
        pipeline.set_timesteps(2, "cosine")
    with pytest.raises(ValueError, match="num_inference_steps must be >= 1, got 0"):
        pipeline.set_timesteps(0, "trailing")
    assert pipeline.resolve_sampler(3, "trailing") == {"num_inference_steps": 3, "timestep_spacing": "trailing"}
    assert pipeline.resolve_sampler() == {"num_inference_steps": pipeline.metadata.get("num_inference_steps", 10),
                                          "timestep_spacing": pipeline.metadata.get("timestep_spacing", "linspace")}
    with pytest.raises(ValueError, match="'cosine'"):
        pipeline.resolve_sampler(2, "cosine")

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (1, 2, 16, 16, 3), dtype=np.uint8)
    state = pipeline.encode_context(frames, rng.uniform(0, 512, (1, 1, 2)).astype(np.float32))
    seen = state.cache.frames_seen
    with pytest.raises(ValueError, match="timestep_spacing"):
        pipeline.step(state, np.full((1, 2), 256.0, np.float32), timestep_spacing="karras")
    assert not state.is_stale and state.cache.frames_seen == seen
    stepped = pipeline.step(state, np.full((1, 2), 256.0, np.float32), num_inference_steps=1, timestep_spacing="trailing")
    assert stepped.frames.shape == (1, 16, 16, 3) and stepped.frame_latents.shape == (1, 4, 4, 4)

    with pytest.raises(ValueError, match="timestep_spacing"):
        gym.make("worldsim/WorldModel-v0", model=pipeline, timestep_spacing="karras")


def test_env_heads_read_the_imagined_latents(model_with_heads):
    path, _ = model_with_heads
    env = gym.make("worldsim/WorldModel-v0", model=str(path), num_inference_steps=1, timestep_spacing="trailing")
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.array([100.0, 300.0], np.float32))
    pipeline, state = env.unwrapped.pipeline, env.unwrapped._state
    from_latents = pipeline.outcomes(None, latents=state.frame_latents)
    assert reward == pytest.approx(float(from_latents["reward"][0]))
    with pytest.raises(ValueError, match=r"latents have shape \(1, 4, 2, 2\), expected \(B, 4, 4, 4\)"):
        predict_outcomes(pipeline, state.frames.numpy(), latents=torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match="frames or latents"):
        pipeline.outcomes(None)


def test_xformers_is_used_where_enabled_with_its_own_layout(monkeypatch):
    from worldsim.models import world_model

    calls = []

    class FakeXformersOps:  # stands in for xformers.ops: same layout contract, (B, L, heads, d)
        @staticmethod
        def memory_efficient_attention(query, key, value):
            calls.append(query.shape)
            out = torch.nn.functional.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2),
                                                                   value.transpose(1, 2))
            return out.transpose(1, 2)

    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8)
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    monkeypatch.setattr(world_model, "_xformers_ops", lambda: FakeXformersOps)
    assert torch.allclose(world_model.attention(q, k, v), reference)
    assert calls == []  # CPU is not an xformers device by default
    monkeypatch.setattr(world_model, "XFORMERS_DEVICES", ("cuda", "cpu"))
    assert torch.allclose(world_model.attention(q, k, v), reference, atol=1e-6)
    assert calls == [(2, 4, 3, 8)]
    mask = torch.ones(4, 6, dtype=torch.bool).tril()
    world_model.attention(q, k, v, mask)  # a mask goes to SDPA
    assert len(calls) == 1
