"""Scale-out with accelerate: 2 CPU processes over gloo give what one process gives.

Launched as users launch it (docs/scaling.md): ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu
--num_processes 2 ...``; accelerate starts the processes with torchrun and, with no GPU, joins them with the gloo
backend (its MULTI_CPU mode).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from worldsim.evaluation.rank import state_batches
from worldsim.training.config import load_config
from worldsim.training.train_autoencoder import train_autoencoder

from tests.test_training import tiny_overrides

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(arguments: list[str], processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "SDL_VIDEODRIVER": "dummy"}
    if processes == 1:
        command = [sys.executable, "-m", "worldsim.cli.main", *arguments]
    else:
        env["ACCELERATE_USE_CPU"] = "1"
        command = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
                   "-m", "worldsim.cli.main", *arguments]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_two_process_training_equals_one_process_with_the_same_global_batch(pusht_dataset, tmp_path):
    train_autoencoder(load_config("configs/pusht.yaml", tiny_overrides(pusht_dataset, tmp_path)), progress=False)
    # fp32, so that "the same" can be checked to 1e-6 (bf16 autocast agrees to bf16 rounding)
    overrides = tiny_overrides(pusht_dataset, tmp_path) + ["train.mixed_precision=no", "train.max_steps=4"]
    train = ["train", "--config", "configs/pusht.yaml", *overrides]
    _launch(train + ["train.batch_size=4", f"train.output_dir={tmp_path}/one"], processes=1)
    done = _launch(train + ["train.batch_size=2", f"train.output_dir={tmp_path}/two"], processes=2)
    assert done.stdout.count("world model written") == 1  # one process writes, the other waits

    one = [json.loads(line) for line in (tmp_path / "one" / "train_log.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-5)
    for name in ("final/transformer/diffusion_pytorch_model.safetensors",
                 "checkpoint-4/training_state/model.safetensors"):
        a, b = load_file(tmp_path / "one" / name), load_file(tmp_path / "two" / name)
        assert a.keys() == b.keys()
        for key in a:  # synchronised gradients: the same weights as one process with the global batch
            np.testing.assert_allclose(b[key].numpy(), a[key].numpy(), atol=1e-6, err_msg=key)


def test_state_batches_cover_every_state_once():
    for num_states, batch, processes in ((50, 16, 2), (7, 2, 3), (5, 8, 2), (64, 64, 4)):
        shards = [state_batches(num_states, batch, index, processes) for index in range(processes)]
        covered = sorted(i for shard in shards for start, stop in shard for i in range(start, stop))
        assert covered == list(range(num_states))
        assert [b for shard in shards for b in shard] != [] and all(stop - start <= batch for shard in shards
                                                                    for start, stop in shard)
    with pytest.raises(ValueError, match="process_index"):
        state_batches(10, 4, 2, 2)


@pytest.mark.slow
def test_sharded_ranking_equals_the_single_process_ranking(model_with_heads, tmp_path):
    path, _ = model_with_heads
    rank = ["rank", "--model", str(path), "--num-states", "5", "--horizon", "3", "--batch-size", "2",
            "--policy", "pusher=worldsim.embodiments.pusht.zoo:CentroidPusher",
            "--policy", "random=worldsim.embodiments.pusht.zoo:RandomTargets",
            "--policy", "wanderer=worldsim.embodiments.pusht.zoo:Wanderer"]
    _launch(rank + ["--json", str(tmp_path / "one.json")], processes=1)
    _launch(rank + ["--json", str(tmp_path / "two.json")], processes=2)
    one, two = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("one", "two"))
    assert two["settings"]["num_processes"] == 2
    for name, entry in one["policies"].items():
        assert two["policies"][name]["real_values"] == entry["real_values"]
        np.testing.assert_allclose(two["policies"][name]["imagined_values"], entry["imagined_values"], atol=1e-6)
    assert two["agreement"] == pytest.approx(one["agreement"], rel=1e-4)  # values agree to float32 rounding
