"""Policy adapters: per-step callables, chunk callables (open-loop queues per env), LeRobot-style objects."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from worldsim.evaluation.policy_adapters import CallablePolicy, ChunkPolicy, LeRobotPolicy, as_policy

OBS = np.zeros((3, 8, 8, 3), dtype=np.uint8) + np.arange(3, dtype=np.uint8)[:, None, None, None]


def test_callable_policy_per_env_and_batched():
    policy = as_policy(lambda obs: np.array([obs[0, 0, 0], 1.0]), (2,), chunk=False)
    policy.reset(3)
    np.testing.assert_array_equal(policy.act(OBS), [[0, 1], [1, 1], [2, 1]])
    batched = as_policy(lambda obs: torch.ones(len(obs), 2), (2,), chunk=False, batched=True)
    batched.reset(3)
    assert batched.act(OBS).shape == (3, 2)
    with pytest.raises(ValueError, match=r"expected \(3, 2\)"):
        CallablePolicy(lambda obs: np.zeros(3), (2,)).act(OBS)


def test_chunk_policy_plays_each_chunk_open_loop_and_refills_per_env():
    calls = []

    def chunker(obs):
        calls.append(int(obs[0, 0, 0]))
        start = 10 * len(calls)
        return np.arange(start, start + 2, dtype=np.float32)[:, None]  # H=2, action (1,)

    policy = ChunkPolicy(chunker, (1,))
    policy.reset(2)
    first = policy.act(OBS[:2])
    second = policy.act(OBS[:2])
    third = policy.act(OBS[:2])
    np.testing.assert_array_equal(first[:, 0], [10, 20])
    np.testing.assert_array_equal(second[:, 0], [11, 21])  # no new call while the chunks last
    np.testing.assert_array_equal(third[:, 0], [30, 40])
    assert calls == [0, 1, 0, 1]
    policy.reset(2)  # reset drops what is left of the chunks
    policy.act(OBS[:2])
    assert len(calls) == 6
    with pytest.raises(ValueError, match="chunk of shape"):
        bad = ChunkPolicy(lambda obs: np.zeros((0, 1)), (1,))
        bad.reset(1)
        bad.act(OBS[:1])


def test_auto_detection_uses_the_first_output_and_calls_once_per_decision():
    counter = {"n": 0}

    def stateful(obs):
        counter["n"] += 1
        return np.full((4, 2), counter["n"], dtype=np.float32)  # a chunk of 4

    policy = as_policy(stateful, (2,))
    policy.reset(1)
    actions = [policy.act(OBS[:1])[0, 0] for _ in range(5)]
    assert actions == [1, 1, 1, 1, 2] and counter["n"] == 2
    step_policy = as_policy(lambda obs: np.zeros(2), (2,))
    step_policy.reset(3)
    assert step_policy.act(OBS).shape == (3, 2)
    with pytest.raises(ValueError, match="neither an action"):
        weird = as_policy(lambda obs: np.zeros((2, 2, 2)), (2,))
        weird.reset(1)
        weird.act(OBS[:1])
    with pytest.raises(TypeError, match="callable"):
        as_policy(42, (2,))


class FakeLeRobotPolicy:
    """Stands in for a LeRobot PreTrainedPolicy: select_action on a batch dict of tensors, reset()."""

    def __init__(self):
        self.resets, self.seen = 0, None

    def reset(self):
        self.resets += 1

    def select_action(self, batch):
        self.seen = batch
        return batch["observation.image"].mean(dim=(2, 3))[:, :2]


def test_lerobot_policy_gets_channels_first_unit_range_images():
    fake = FakeLeRobotPolicy()
    policy = as_policy(fake, (2,))
    assert isinstance(policy, LeRobotPolicy)
    policy.reset(3)
    action = policy.act(OBS)
    assert fake.resets == 1
    image = fake.seen["observation.image"]
    assert image.shape == (3, 3, 8, 8) and image.dtype == torch.float32 and float(image.max()) <= 1.0
    np.testing.assert_allclose(action[:, 0], np.arange(3) / 255.0, rtol=1e-6)
    with pytest.raises(ValueError, match="select_action returned"):
        LeRobotPolicy(fake, (5,)).act(OBS)
