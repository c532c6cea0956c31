"""Sharded training (FSDP) is refused with a clear error, not run as something else without a word.

Measured with accelerate 1.15 / torch 2.13 on a machine without a GPU (docs/scaling.md, "Sharded training (FSDP)"):
accelerate enters its FSDP mode only on GPUs and other accelerators. On CPU, ``accelerate launch --use_fsdp
--fsdp_version 2`` with ``ACCELERATE_USE_CPU=1`` silently runs DDP over gloo (unsharded parameters), and without it
(or with an accelerate config file saying ``distributed_type: FSDP`` and ``use_cpu: true``) the processes are never
joined: each believes it is the only one and would write the same checkpoints. ``worldsim train`` stops both before
any work (:func:`worldsim.training.train_world_model.refuse_unsupported_launch`). Should a later accelerate shard on
CPU, these tests fail, and FSDP training can be tested here for real. (Launching without ``ACCELERATE_USE_CPU``,
by flags or by a config file with ``use_cpu: true``, reaches the same refusal through ``ACCELERATE_USE_FSDP``; it
was checked by hand, not here, to keep the suite short.)
"""

from __future__ import annotations

import os
import subprocess

import pytest
import torch

from tests.conftest import tiny_autoencoder
from tests.test_scaling import ACCELERATE, REPO, _free_port
from tests.test_training import tiny_overrides


def _launch_train(launcher: list[str], tmp_path, pusht_dataset, env_extra: dict) -> subprocess.CompletedProcess:
    tiny_autoencoder().save_pretrained(tmp_path / "ae" / "final")  # train.autoencoder of the tiny config
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "SDL_VIDEODRIVER": "dummy", **env_extra}
    for name in ("ACCELERATE_USE_CPU", "ACCELERATE_USE_FSDP"):
        if name not in env_extra:
            env.pop(name, None)
    command = [ACCELERATE, "launch", *launcher, "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               "-m", "worldsim.cli.main", "train", "--config", "configs/pusht.yaml",
               *tiny_overrides(pusht_dataset, tmp_path), "train.mixed_precision=no", "train.max_steps=2"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _assert_refused(done: subprocess.CompletedProcess, tmp_path, *phrases: str) -> None:
    assert done.returncode != 0, done.stdout[-2000:]
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "wm").exists()  # stopped before any work: no log, no checkpoint


@pytest.mark.slow
def test_fsdp2_on_cpu_is_refused_rather_than_run_as_ddp(pusht_dataset, tmp_path):
    done = _launch_train(["--use_fsdp", "--fsdp_version", "2"], tmp_path, pusht_dataset, {"ACCELERATE_USE_CPU": "1"})
    _assert_refused(done, tmp_path, "worldsim train: error: FSDP was requested (ACCELERATE_USE_FSDP=true) but "
                    "accelerate", "it set up MULTI_CPU on cpu", "with 2 process(es)")
    assert done.stderr.count("worldsim train: error: FSDP was requested") == 2  # each process stops itself


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, --multi_gpu joins the processes over NCCL")
def test_processes_launched_without_a_gpu_and_without_use_cpu_are_refused(pusht_dataset, tmp_path):
    done = _launch_train(["--multi_gpu"], tmp_path, pusht_dataset, {})
    _assert_refused(done, tmp_path, "2 processes were launched (WORLD_SIZE=2) but accelerate joined none of them")
