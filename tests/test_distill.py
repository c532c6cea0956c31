"""Step distillation (``worldsim distill``): student initialisation, the teacher's trajectory, a trained student."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import randomize, tiny_transformer
from worldsim.models.autoencoders import encode_frames
from worldsim.pipelines.world_model import WorldModelPipeline
from worldsim.training.distill import (distill_world_model, encode_history, euler_trajectory, sampler_sigmas,
                                       student_from_teacher)


def test_student_keeps_evenly_spaced_teacher_blocks_and_refuses_a_deeper_one():
    teacher = randomize(tiny_transformer(num_layers=4)).eval()
    student, kept = student_from_teacher(teacher, 2)
    assert kept == [0, 3] and student.config.num_layers == 2
    for name, tensor in student.state_dict().items():
        source = name if not name.startswith("blocks.") else f"blocks.{kept[int(name.split('.')[1])]}." + \
            name.split(".", 2)[2]
        assert torch.equal(tensor, teacher.state_dict()[source]), name
    full, kept = student_from_teacher(teacher)  # same depth: the same network
    sample, timestep, action = torch.randn(2, 3, 4, 4, 4), torch.full((2, 3), 400.0), torch.rand(2, 3, 2)
    assert kept == [0, 1, 2, 3]
    torch.testing.assert_close(full.eval()(sample, timestep, action), teacher(sample, timestep, action))
    with pytest.raises(ValueError, match=r"num_layers must be in \[1, 4\]"):
        student_from_teacher(teacher, 5)


def test_teacher_trajectory_ends_where_the_pipelines_sampler_does(tiny_pipeline_path):
    pipe = WorldModelPipeline.from_pretrained(tiny_pipeline_path)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (2, 3, 16, 16, 3), dtype=np.uint8)
    action = rng.uniform(0, 512, (2, 3, 2)).astype(np.float32)  # two between the frames, then the next one
    state = pipe.encode_context(frames, action[:, :2], context_noise=0.0)
    stepped = pipe.step(state, action[:, 2], num_inference_steps=3, context_noise=0.0,
                        generator=torch.Generator().manual_seed(3), timestep_spacing="trailing")
    latents = encode_frames(pipe.autoencoder, torch.from_numpy(frames))
    normalized = pipe._normalize(pipe.embodiment(), action)
    noise = torch.randn((2, 1, *latents.shape[2:]), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), pipe._autocast():
        cache = encode_history(pipe.transformer, latents, normalized, 0.0)
        states = euler_trajectory(pipe.transformer, cache, normalized[:, -1:], noise,
                                  sampler_sigmas(pipe, 3, "trailing"))
    assert states.shape == (4, 2, 1, *latents.shape[2:])
    torch.testing.assert_close(states[0], noise)
    torch.testing.assert_close(states[-1][:, 0], stepped.frame_latents, atol=2e-2, rtol=2e-2)


def test_distilled_one_step_student_is_closer_to_the_teacher_and_loads(tiny_pipeline_path, pusht_dataset, tmp_path,
                                                                        capsys):
    from worldsim.cli.main import main

    manifest = (tiny_pipeline_path / "model_index.json").read_text()
    out = tmp_path / "student"
    main(["distill", "--model", str(tiny_pipeline_path), "--dataset", str(pusht_dataset), "--out", str(out),
          "--student-steps", "1", "--teacher-steps", "4", "--steps", "150", "--batch-size", "16",
          "--learning-rate", "3e-3", "--val-clips", "32"])
    assert "latent error against the teacher's 4-step samples" in capsys.readouterr().out
    report = json.loads((out / "distill_metrics.json").read_text())
    errors = report["latent_mse_to_teacher"]
    # before training the student is the teacher, cut to one step; after, its one step lands near four of the teacher's
    assert errors["student_init"] == pytest.approx(errors["teacher_1_steps"], rel=1e-4)
    assert errors["student"] < 0.5 * errors["student_init"], errors
    assert report["steps"] == 150 and len((out / "distill_log.jsonl").read_text().splitlines()) == 150
    student = WorldModelPipeline.from_pretrained(out)  # a complete pipeline, manifest included
    assert student.metadata["num_inference_steps"] == 1 and student.metadata["timestep_spacing"] == "trailing"
    assert student.resolve_sampler() == {"num_inference_steps": 1, "timestep_spacing": "trailing"}
    rng = np.random.default_rng(0)
    imagined = student.rollout(rng.integers(0, 255, (1, 2, 16, 16, 3), dtype=np.uint8),
                               rng.uniform(0, 512, (1, 1, 2)), rng.uniform(0, 512, (1, 3, 2)))
    assert imagined.shape == (1, 3, 16, 16, 3)
    assert (tiny_pipeline_path / "model_index.json").read_text() == manifest  # the teacher is untouched


def test_distill_refuses_bad_settings_before_writing(tiny_pipeline_path, pusht_dataset, tmp_path):
    out = tmp_path / "student"
    with pytest.raises(ValueError, match="must be a multiple of student_steps"):
        distill_world_model(tiny_pipeline_path, [pusht_dataset], out, student_steps=2, teacher_steps=3,
                            progress=False)
    with pytest.raises(ValueError, match="num_layers must be in"):
        distill_world_model(tiny_pipeline_path, [pusht_dataset], out, num_layers=3, progress=False)
    with pytest.raises(ValueError, match="timestep_spacing"):
        distill_world_model(tiny_pipeline_path, [pusht_dataset], out, timestep_spacing="leading", progress=False)
    with pytest.raises(ValueError, match="teacher's folder"):
        distill_world_model(tiny_pipeline_path, [pusht_dataset], tiny_pipeline_path, progress=False)
    assert not out.exists() and not (tmp_path / ".student.partial").exists()


def test_sampler_sweep_reads_a_model_per_sampler():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "sampler_sweep.py"
    spec = importlib.util.spec_from_file_location("sampler_sweep", path)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    assert sweep.parse_sampler("3:trailing") == (3, "trailing", "full", None, None)
    assert sweep.parse_sampler("1:trailing:light@runs/pusht-1step") == (1, "trailing", "light", "runs/pusht-1step",
                                                                        None)
    assert sweep.parse_sampler("2:trailing:light:int8") == (2, "trailing", "light", None, "int8")
    assert sweep.parse_sampler("2:trailing:light:int8+decoder") == (2, "trailing", "light", None, "int8+decoder")
    with pytest.raises(ValueError, match="got '2:trailing:light:fp4'"):
        sweep.parse_sampler("2:trailing:light:fp4")
    with pytest.raises(ValueError, match="got '0:trailing@x'"):
        sweep.parse_sampler("0:trailing@x")


def test_second_sigma_sweep_runs_one_two_step_sampler_per_sigma(tiny_pipeline_path, pusht_dataset, tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "second_sigma_sweep.py"
    spec = importlib.util.spec_from_file_location("second_sigma_sweep", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit):
        tool.main(["--sigmas", "0.5", "1.5"])  # refused before any model is read
    out = tmp_path / "sweep.json"
    result = tool.main(["--model", str(tiny_pipeline_path), "--dataset", str(pusht_dataset), "--horizon", "2",
                        "--context", "2", "--decoder", "full", "--sigmas", "0.5", "0.3", "--json", str(out)])
    assert [row["second_sigma"] for row in result["rows"]] == [0.5, 0.3]
    assert result["rows"][0]["psnr"] != result["rows"][1]["psnr"]  # another second step, other frames
    assert json.loads(out.read_text())["rows"][1]["second_sigma"] == 0.3


def test_distill_reads_a_config_file_flags_and_overrides(tiny_pipeline_path, pusht_dataset, tmp_path, capsys):
    from dataclasses import asdict

    from worldsim.cli.main import main
    from worldsim.training.config import DistillConfig, load_config

    for settings, message in (({"student_steps": 0}, r"distill\.student_steps must be >= 1"),
                              ({"timestep_spacing": "leading"}, r"distill\.timestep_spacing"),
                              ({"num_layers": 0}, r"distill\.num_layers"), ({"ema_decay": 1.0}, r"distill\.ema_decay"),
                              ({"val_clips": 0}, r"distill\.val_clips must be > 0")):
        with pytest.raises(ValueError, match=message):
            DistillConfig(**settings)
    assert DistillConfig(student_steps=3).resolved_teacher_steps == 6
    preset = tmp_path / "distill.yaml"
    preset.write_text("mixed_precision: no\n")  # YAML 1.1 reads `no` as false
    assert load_config(preset, schema=DistillConfig) == DistillConfig(mixed_precision="no")
    # (this process's accelerate state is bf16 already: the run below keeps that precision)
    preset.write_text("teacher_steps: 2\nbatch_size: 16\nsteps: 500\n")
    out = tmp_path / "student"
    command = ["distill", "--model", str(tiny_pipeline_path), "--dataset", str(pusht_dataset), "--out", str(out),
               "--config", str(preset)]
    assert main(command + ["--steps", "2", "steps=3"]) == 2  # one field, two values: refused
    assert main(command + ["steps=0"]) == 2
    assert "distill.steps must be > 0" in capsys.readouterr().err and not out.exists()
    assert main(command + ["--steps", "2", "val_clips=4"]) == 0
    report = json.loads((out / "distill_metrics.json").read_text())
    assert report["config"] == asdict(DistillConfig(teacher_steps=2, batch_size=16, steps=2, val_clips=4))
    assert report["steps"] == 2 and report["teacher_steps"] == 2 and report["val_clips"] == 4
    assert len((out / "distill_log.jsonl").read_text().splitlines()) == 2
