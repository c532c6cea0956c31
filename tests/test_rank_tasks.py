"""Ranking a robot arm's policies: Dict observations (cameras and state) in both worlds, one ranking per task pooled
over tasks, and rankings split by policies, states or tasks combined into one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from worldsim.cli.main import main
from worldsim.evaluation.rank import combine_rank_reports, join_policy_reports, pool_task_reports
from worldsim.evaluation.ranking_metrics import ranking_agreement

METAWORLD_MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "metaworld"


def _report(names, real, imagined, env_id="arm-a", seed=0, **settings) -> dict:
    """A rank report of policies ``names`` with per-state real and imagined values `(P, S)`."""
    policies = {}
    for index, name in enumerate(names):
        policies[name] = {"real": {"mean": float(real[index].mean())}, "real_values": real[index].tolist(),
                          "real_success_values": (real[index] > 0.5).astype(float).tolist(),
                          "real_success": {"mean": float((real[index] > 0.5).mean())},
                          "real_returns": (10 * real[index]).tolist(), "imagined_returns": (9 * imagined[index]).tolist(),
                          "imagined": {"mean": float(imagined[index].mean())}, "imagined_values": imagined[index].tolist(),
                          "imagined_per_sample": [float(imagined[index].mean())], "imagined_sample_std": 0.0}
    return {"policies": policies, "agreement": {"spearman": 1.0},
            "settings": {"env_id": env_id, "seed": seed, "num_states": real.shape[1], "horizon": 100,
                         "seconds": 1.0, "date": "2026-11-30", **settings}}


def test_policies_ranked_apart_join_and_tasks_pool(tmp_path):
    rng = np.random.default_rng(0)
    real = rng.uniform(0, 1, (4, 2, 6))  # policy, task, state
    imagined = real + rng.normal(0, 0.05, real.shape)
    names = ["a", "b", "c", "d"]
    # the same states, other policies: joined, nothing per policy recomputed
    joined = join_policy_reports([_report(names[:2], real[:2, 0], imagined[:2, 0]),
                                  _report(names[2:], real[2:, 0], imagined[2:, 0])])
    assert list(joined["policies"]) == names
    assert joined["agreement"] == pytest.approx(ranking_agreement(imagined[:, 0].mean(1), real[:, 0].mean(1)))
    with pytest.raises(ValueError, match="in two of the reports"):
        join_policy_reports([_report(names[:2], real[:2, 0], imagined[:2, 0])] * 2)
    with pytest.raises(ValueError, match="horizon=50"):
        join_policy_reports([_report(names[:2], real[:2, 0], imagined[:2, 0]),
                             _report(names[2:], real[2:, 0], imagined[2:, 0], horizon=50)])
    # two tasks pool into one ranking over all 12 states
    tasks = {env: _report(names, real[:, t], imagined[:, t], env_id=env) for t, env in enumerate(("arm-a", "arm-b"))}
    pooled = pool_task_reports(tasks)
    flat_real, flat_imagined = real.reshape(4, -1), imagined.reshape(4, -1)
    assert pooled["settings"]["num_states"] == 12 and pooled["settings"]["env_id"] == ["arm-a", "arm-b"]
    np.testing.assert_allclose(pooled["policies"]["c"]["real_values"], flat_real[2])
    assert pooled["agreement"] == pytest.approx(ranking_agreement(flat_imagined.mean(1), flat_real.mean(1)))
    assert pooled["return_agreement"] == pytest.approx(ranking_agreement(9 * flat_imagined.mean(1),
                                                                         10 * flat_real.mean(1)))
    assert pooled["policies"]["a"]["real_success"]["mean"] == pytest.approx((flat_real[0] > 0.5).mean())
    with pytest.raises(ValueError, match="ranks"):
        pool_task_reports({"arm-a": tasks["arm-a"], "arm-b": _report(names[:3], real[:3, 1], imagined[:3, 1])})
    # split every way at once (by policies on task a, by states on task b) and combined by the CLI
    parts = [_report(names[:2], real[:2, 0], imagined[:2, 0]), _report(names[2:], real[2:, 0], imagined[2:, 0]),
             _report(names, real[:, 1, :3], imagined[:, 1, :3], env_id="arm-b"),
             _report(names, real[:, 1, 3:], imagined[:, 1, 3:], env_id="arm-b", seed=3)]
    combined = combine_rank_reports(parts)
    assert combined["pooled"]["agreement"] == pytest.approx(pooled["agreement"])
    paths = []
    for index, part in enumerate(parts):
        paths.append(tmp_path / f"{index}.json")
        paths[-1].write_text(json.dumps(part))
    assert main(["rank-report", *map(str, paths), "--json", str(tmp_path / "all.json")]) == 0
    written = json.loads((tmp_path / "all.json").read_text())
    assert set(written["tasks"]) == {"arm-a", "arm-b"} and written["pooled"]["settings"]["num_states"] == 12


class SeeingPolicy:
    """A LeRobot-style policy that records the batches it is given and holds still."""

    def __init__(self):
        self.batches = []

    def reset(self):
        pass

    def select_action(self, batch):
        import torch

        self.batches.append(batch)
        return torch.zeros(len(batch["observation.state"]), 4)


@pytest.mark.skipif(not METAWORLD_MODEL.is_dir(), reason="the shipped Meta-World model is not in this checkout")
def test_arm_policies_see_cameras_and_state_in_both_worlds_per_task():
    pytest.importorskip("metaworld")
    from worldsim.embodiments.metaworld import MetaWorldEmbodiment
    from worldsim.evaluation.rank import rank_tasks
    from worldsim.pipelines import WorldModelPipeline

    pipeline = WorldModelPipeline.from_pretrained(METAWORLD_MODEL)
    plugin = MetaWorldEmbodiment()
    seeing = SeeingPolicy()
    zoos = []

    def policies(env_id):
        zoos.append(plugin.task_zoo(env_id))
        return {"expert": zoos[-1]["expert"], "seeing": seeing}

    env_ids = ["worldsim/MetaWorld-reach-v3", "worldsim/MetaWorld-push-v3"]
    result = rank_tasks(pipeline, policies, env_ids, num_states=2, horizon=3, num_context=2, progress=False,
                        num_inference_steps=1, timestep_spacing="trailing")
    assert [zoo["expert"].task for zoo in zoos] == ["reach-v3", "push-v3"]  # each task its own zoo
    # every batch, real (one env) or imagined (both states), holds both cameras as LeRobot images and the state,
    # and the task of the episode
    assert len(seeing.batches) == 2 * (2 * 3 + 3)
    for batch in seeing.batches:
        assert batch["observation.images.scene"].shape[1:] == (3, 64, 64)
        assert batch["observation.images.wrist"].shape[1:] == (3, 64, 64)
        assert batch["observation.state"].shape[1:] == (39,)
    assert {batch["task"][0] for batch in seeing.batches} == {plugin.task_text(env) for env in env_ids}
    for env_id in env_ids:
        report = result["tasks"][env_id]
        assert report["settings"]["env_id"] == env_id and report["settings"]["task"] == plugin.task_text(env_id)
        assert report["settings"]["imagined_value"] == "success_probability"
        entry = report["policies"]["expert"]
        assert len(entry["real_returns"]) == len(entry["imagined_returns"]) == 2
        assert 0.0 <= min(entry["imagined_values"]) <= max(entry["imagined_values"]) <= 1.0  # probabilities
        real, imagined = report["videos"]["seeing"]
        assert real.shape == imagined.shape == (1, 3, 64, 128, 3)
    assert result["pooled"]["settings"]["num_states"] == 4


def test_state_only_real_env_steps_the_same_physics():
    pytest.importorskip("metaworld")
    from worldsim.embodiments.metaworld import MetaWorldEmbodiment

    plugin = MetaWorldEmbodiment()
    full, fast = plugin.make_env(task="push-v3"), plugin.make_env(task="push-v3", **plugin.state_only_env_kwargs)
    assert set(fast.observation_space.spaces) == {"observation.state"}
    for env in (full, fast):
        env.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(5):
        action = rng.uniform(-1, 1, 4).astype(np.float32)
        seen, reward, *_ = full.step(action)
        state_only, fast_reward, *_ = fast.step(action)
        np.testing.assert_array_equal(seen["observation.state"], state_only["observation.state"])
        assert reward == fast_reward
    assert fast.render().shape == full.render().shape == (64, 128, 3)  # rendered on demand
    full.close()
    fast.close()


def test_the_state_success_rule_matches_the_real_env_and_values_imagined_episodes():
    pytest.importorskip("metaworld")
    from worldsim.embodiments.metaworld import (CONTACT_OFFSETS, OBJECT_MOVED, STATE_SUCCESS_RULES, TCP_OFFSET,
                                                MetaWorldEmbodiment, dead_reckon, tool_centre)
    from worldsim.evaluation.rank import rank_policies
    from worldsim.pipelines import WorldModelPipeline

    plugin = MetaWorldEmbodiment()
    # on real states the rule is Meta-World's own: it agrees with info["success"] at every step of expert episodes
    for task in ("push-v3", "button-press-v3"):
        env = plugin.make_env(task=task, observe_cameras=False)
        expert = plugin.task_zoo(task)["expert"]
        observation, info = env.reset(seed=3)
        expert.reset(1)
        states, successes = [], []
        for _ in range(60):
            observation, _, _, _, info = env.step(expert.act(observation["observation.state"][None])[0])
            states.append(observation["observation.state"])
            successes.append(float(info["success"]))
        assert max(successes) == 1.0  # the expert succeeds, so both outcomes are compared
        np.testing.assert_array_equal(plugin.state_success(np.stack(states), task), successes)
        # the dense progress measure steering can score by: it rises along the expert's episode and is higher from
        # the first success on than anywhere in the first half of the approach
        progress = plugin.state_progress(np.stack(states), task)
        assert progress.shape == (60,) and progress.dtype == np.float32 and np.all(np.isfinite(progress))
        first = successes.index(1.0)
        assert progress[first] > progress[0] + 0.1 and progress[first:].min() > progress[:first // 2].max()
        # the contact pose it steers the hand to is where this expert's tool centre is when the object first moves
        states = np.stack(states)
        moved = int(np.argmax(np.linalg.norm(states[:, 4:7] - states[0, 4:7], axis=1) > OBJECT_MOVED))
        assert moved > 0
        assert np.linalg.norm(tool_centre(states[moved]) - states[moved, 4:7] - CONTACT_OFFSETS[task]) < 0.02
        env.close()
    assert plugin.state_success(np.zeros((2, 39)), "door-open-v3") is None  # no rule: refused for ranking below
    with pytest.raises(ValueError, match=r"\(N, 39\)"):
        plugin.state_success(np.zeros((2, 4)), "reach-v3")
    # the formula on made-up states: reach compares the tool centre (hand + TCP_OFFSET) with the goal; push adds
    # the tool centre's distance to the puck's contact pose; button-press compares only the button's y with the
    # goal's, plus the tool centre's distance to the button's contact pose. Every task with an object has one.
    assert set(CONTACT_OFFSETS) == set(STATE_SUCCESS_RULES) - {"reach-v3"}
    made = np.zeros((1, 39), np.float32)
    made[0, 0:3] = [0.0, 0.6, 0.2]  # the hand; the tool centre is 4.5 cm below it
    made[0, 36:39] = [0.0, 0.6, 0.155]
    np.testing.assert_allclose(plugin.state_progress(made, "reach-v3"), [0.0], atol=1e-6)
    made[0, 4:7] = [0.0, 0.7, 0.155]  # the object 10 cm from the goal, its contact pose about 10 cm from the tool
    to_contact = np.linalg.norm(made[0, 0:3] + TCP_OFFSET - made[0, 4:7] - CONTACT_OFFSETS["push-v3"])
    assert 0.1 < to_contact < 0.11
    np.testing.assert_allclose(plugin.state_progress(made, "push-v3"), [-0.1 - to_contact], atol=1e-6)
    made[0, 37] = 0.73  # button-press: only the y travel to the goal (3 cm), plus the tool centre to the contact pose
    to_contact = np.linalg.norm(made[0, 0:3] + TCP_OFFSET - made[0, 4:7] - CONTACT_OFFSETS["button-press-v3"])
    np.testing.assert_allclose(plugin.state_progress(made, "button-press-v3"), [-0.03 - to_contact], atol=1e-6)
    made[0, 0:3] = made[0, 4:7] + CONTACT_OFFSETS["button-press-v3"] - TCP_OFFSET  # the hand at the contact pose
    np.testing.assert_allclose(plugin.state_progress(made, "button-press-v3"), [-0.03], atol=1e-6)
    # dead reckoning, the no-model control: the hand moves 1 cm per unit action per step, nothing else moves
    chunks = np.zeros((2, 3, 4), np.float32)
    chunks[0, :, 0], chunks[1, :, 2], chunks[1, :, 3] = 1.0, -0.5, 1.0
    ends = dead_reckon(made[0], chunks)
    np.testing.assert_allclose(ends[:, 0:3] - made[0, 0:3], [[0.03, 0.0, 0.0], [0.0, 0.0, -0.015]], atol=1e-6)
    np.testing.assert_array_equal(ends[:, 3:], np.repeat(made[:, 3:], 2, axis=0))
    with pytest.raises(ValueError, match=r"\(K, H, 4\) chunks"):
        dead_reckon(made[0], chunks[0])
    assert plugin.state_progress(np.zeros((2, 39)), "door-open-v3") is None
    with pytest.raises(ValueError, match=r"\(N, 39\)"):
        plugin.state_progress(np.zeros((2, 4)), "reach-v3")
    pipeline = WorldModelPipeline.from_pretrained(METAWORLD_MODEL)
    zoo = plugin.task_zoo("reach-v3")
    report = rank_policies(pipeline, {"expert": zoo["expert"], "wrong": zoo["wrong-task"]}, num_states=2, horizon=3,
                           num_context=2, progress=False, num_inference_steps=1, timestep_spacing="trailing",
                           env_id="worldsim/MetaWorld-reach-v3", imagined_value="state_success")
    assert report["settings"]["imagined_value"] == "state_success"
    assert set(report["policies"]["expert"]["imagined_values"]) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="no success rule on the state"):
        rank_policies(pipeline, {"expert": zoo["expert"], "wrong": zoo["wrong-task"]}, num_states=2, horizon=2,
                      env_id="worldsim/MetaWorld-door-open-v3", imagined_value="state_success", real=False)
