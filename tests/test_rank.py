"""worldsim rank end to end on a tiny model: real and imagined values, intervals, agreement, the HTML report."""
from __future__ import annotations

import json

import numpy as np
import pytest

from worldsim.cli.main import main
from worldsim.embodiments.pusht.zoo import CentroidPusher, RandomTargets, StandStill, pusht_zoo
from worldsim.embodiments.pusht import PushTEmbodiment
from worldsim.evaluation.rank import (episode_values, rank_policies, rank_table, real_starts, reset_policy, run_real,
                                      run_imagined, write_rank_report)
from worldsim.pipelines.world_model import WorldModelPipeline


def test_real_starts_hold_the_agent_still():
    frames, actions = real_starts(PushTEmbodiment(), [0, 1], num_context=3, image_size=16)
    assert frames.shape == (2, 3, 16, 16, 3) and actions.shape == (2, 2, 2)
    np.testing.assert_array_equal(actions[:, 0], actions[:, 1])  # the same hold target twice


def test_episode_values_median_drops_spikes_keeps_trends_and_stops_at_the_episode_end():
    rewards = np.array([[0.1, 0.1, 0.9, 0.1, 0.1, 0.1],     # a one-step spike
                        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],     # a steady rise: kept to its last step
                        [0.0, 0.0, 0.5, 0.2, 0.9, 0.9],     # ended after 4 steps; the 0.9s are the next episode's
                        [0.0, 0.4, 0.0, 0.0, 0.0, 0.0]])    # ended after 2 steps
    in_episode = np.array([[True] * 6, [True] * 6, [True] * 4 + [False] * 2, [True] * 2 + [False] * 4])
    np.testing.assert_allclose(episode_values(rewards, in_episode), [0.9, 0.6, 0.5, 0.4])
    # row 2, width 3: at its last step the window is [0.5, 0.2, 0.2 (its own last step repeated)] -> 0.2; a window
    # running on into the next episode would see [0.5, 0.2, 0.9] -> 0.5. Row 3: an episode's last step is repeated
    # to fill the window, so it is kept at any width (at the end a spike and the start of a rise look alike).
    np.testing.assert_allclose(episode_values(rewards, in_episode, 3), [0.1, 0.6, 0.2, 0.4])
    np.testing.assert_allclose(episode_values(rewards, in_episode, 5), [0.1, 0.6, 0.2, 0.4])
    for bad in (0, 2, -3, 1.0, True):
        with pytest.raises(ValueError, match="reward_median"):
            episode_values(rewards, in_episode, bad)
    with pytest.raises(ValueError, match="prefix"):
        episode_values(rewards, np.array([[False, True] * 3] * 4))
    with pytest.raises(ValueError, match="shape"):
        episode_values(rewards, in_episode[:, :3])


def test_zoo_skill_is_graded_in_the_real_env():
    # the strongest pusher moves the block toward the goal; standing still only keeps the initial overlap
    zoo = pusht_zoo()
    strong = run_real(PushTEmbodiment(), zoo["pusher-close-fast"], [0, 2, 3, 4], num_context=4, horizon=64, image_size=64, keep_frames=0)
    still = run_real(PushTEmbodiment(), zoo["still"], [0, 2, 3, 4], num_context=4, horizon=64, image_size=64, keep_frames=0)
    assert strong["values"].mean() > still["values"].mean() + 0.15


def test_zoo_policies_act_on_any_resolution():
    frames, _ = real_starts(PushTEmbodiment(), [0], num_context=1, image_size=64)
    zoo = pusht_zoo()
    assert len(zoo) >= 8
    for name, policy in zoo.items():
        policy.reset(2)
        action = policy.act(np.repeat(frames[:, 0], 2, axis=0))
        assert action.shape == (2, 2) and action.dtype == np.float32, name
        assert np.all((0 <= action) & (action <= 512)), name
    with pytest.raises(ValueError, match="noise_std"):
        CentroidPusher(noise_std=-1)


def test_rank_policies_reports_values_intervals_and_agreement(model_with_heads, tmp_path):
    path, _ = model_with_heads
    pipeline = WorldModelPipeline.from_pretrained(path)
    report = rank_policies(pipeline, {"still": StandStill(), "random": RandomTargets(), "pusher": CentroidPusher()},
                           num_states=3, horizon=3, num_context=2, samples=2, progress=False)
    assert set(report["policies"]) == {"still", "random", "pusher"}
    for entry in report["policies"].values():
        for key in ("imagined", "real", "real_success"):
            assert entry[key]["low"] <= entry[key]["mean"] <= entry[key]["high"]
        assert len(entry["real_values"]) == 3 and len(entry["imagined_per_sample"]) == 2
    assert set(report["agreement"]) >= {"pearson", "spearman", "kendall", "mmrv"}
    assert "MMRV" in rank_table(report)
    written = write_rank_report(report, tmp_path / "report")
    assert written["html"].is_file() and written["scatter"].is_file() and len(written["videos"]) == 3
    with pytest.raises(ValueError, match="at least 2 policies"):
        rank_policies(pipeline, {"still": StandStill()}, num_states=2, horizon=2)
    assert report["settings"]["decoder"] == "full"
    assert report["settings"]["sampler"] == {"num_inference_steps": pipeline.metadata.get("num_inference_steps", 10),
                                             "timestep_spacing": pipeline.metadata.get("timestep_spacing", "linspace")}


def test_rank_sampler_is_used_and_a_bad_one_refused_before_anything_runs(model_with_heads, monkeypatch):
    from worldsim.evaluation import rank

    pipeline = WorldModelPipeline.from_pretrained(model_with_heads[0])
    policies = {"still": StandStill(), "random": RandomTargets()}
    ran = []
    monkeypatch.setattr(rank, "run_real", lambda *args, **kwargs: ran.append(1))
    for bad, message in (({"num_inference_steps": 0}, "num_inference_steps"),
                         ({"timestep_spacing": "leading"}, "timestep_spacing"), ({"reward_median": 4}, "reward_median")):
        with pytest.raises(ValueError, match=message):
            rank_policies(pipeline, policies, num_states=2, horizon=2, num_context=2, progress=False, **bad)
    assert not ran
    monkeypatch.undo()
    report = rank_policies(pipeline, policies, num_states=2, horizon=2, num_context=2, real=False, progress=False,
                           num_inference_steps=2, timestep_spacing="trailing")
    assert report["settings"]["sampler"] == {"num_inference_steps": 2, "timestep_spacing": "trailing"}
    assert report["settings"]["reward_median"] == 3  # the default
    # the vector env ran the 2-step trailing sampler: the scheduler holds its sigmas
    np.testing.assert_allclose(pipeline.scheduler.sigmas.numpy(), [1.0, 0.5, 0.0], atol=1e-6)


def test_rank_cli_writes_json(model_with_heads, tmp_path):
    path, _ = model_with_heads
    out = tmp_path / "rank.json"
    main(["rank", "--model", str(path), "--policy", "still=worldsim.embodiments.pusht.zoo:StandStill",
          "--policy", "random=worldsim.embodiments.pusht.zoo:RandomTargets", "--num-states", "2", "--horizon", "2",
          "--context", "2", "--json", str(out)])
    report = json.loads(out.read_text())
    assert set(report["policies"]) == {"still", "random"} and "videos" not in report
    assert set(report["agreement_intervals"]) == {"pearson", "spearman", "kendall", "mmrv"}
    assert report["agreement_intervals"]["mmrv"]["low"] <= report["agreement"]["mmrv"] <= \
        report["agreement_intervals"]["mmrv"]["high"]


def test_rank_cli_runs_an_int8_transformer(model_with_heads, tmp_path):
    path, _ = model_with_heads
    out = tmp_path / "rank-int8.json"
    main(["rank", "--model", str(path), "--policy", "still=worldsim.embodiments.pusht.zoo:StandStill",
          "--policy", "random=worldsim.embodiments.pusht.zoo:RandomTargets", "--num-states", "2", "--horizon", "2",
          "--context", "2", "--no-real", "--quantize", "int8", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["settings"]["quantization"] == "int8" and set(report["policies"]) == {"still", "random"}


def test_rank_refuses_a_model_without_heads(tiny_pipeline_path):
    pipeline = WorldModelPipeline.from_pretrained(tiny_pipeline_path)
    with pytest.raises(RuntimeError, match="train-heads"):
        rank_policies(pipeline, {"a": StandStill(), "b": RandomTargets()}, num_states=2, horizon=2, num_context=2,
                      real=False, progress=False)


def _synthetic_report(seed: int, real: np.ndarray, imagined: np.ndarray, **settings) -> dict:
    policies = {}
    for index, name in enumerate(("a", "b", "c")):
        policies[name] = {"real": {"mean": float(real[index].mean())}, "real_values": real[index].tolist(),
                          "real_success": {"mean": 0.0, "low": 0.0, "high": 0.0},
                          "imagined": {"mean": float(imagined[index].mean())},
                          "imagined_values": imagined[index].tolist(),
                          "imagined_per_sample": [float(imagined[index].mean())], "imagined_sample_std": 0.0}
    return {"policies": policies, "agreement": {"spearman": 1.0},
            "settings": {"seed": seed, "num_states": real.shape[1], "horizon": 64, "decoder": "light",
                         "seconds": 1.0, "date": "2026-11-23", **settings}}


def test_rank_reports_of_disjoint_states_pool_into_one_ranking(tmp_path):
    from worldsim.evaluation.rank import merge_rank_reports
    from worldsim.evaluation.ranking_metrics import ranking_agreement

    rng = np.random.default_rng(0)
    real = np.linspace(0, 1, 3)[:, None] + rng.normal(0, 0.3, (3, 10))
    imagined = real[[1, 0, 2]] + rng.normal(0, 0.1, (3, 10))
    first, second = _synthetic_report(0, real[:, :4], imagined[:, :4]), _synthetic_report(4, real[:, 4:], imagined[:, 4:])
    merged = merge_rank_reports([first, second])
    assert merged["settings"]["num_states"] == 10 and merged["settings"]["seed"] == 0
    np.testing.assert_allclose(merged["policies"]["b"]["real_values"], real[1])
    expected = ranking_agreement(imagined.mean(1), real.mean(1))
    assert merged["agreement"] == pytest.approx(expected)
    assert merged["real_split_agreement"] == pytest.approx(ranking_agreement(real[:, :4].mean(1), real[:, 4:].mean(1)))
    assert merged["policies"]["a"]["imagined_per_sample"] == pytest.approx([imagined[0].mean()])
    assert "low" not in merged["policies"]["a"]["real_success"]  # no per-state success to recompute it from
    assert "Spearman" in rank_table(merged)
    with pytest.raises(ValueError, match="overlap"):
        merge_rank_reports([first, _synthetic_report(3, real[:, 4:], imagined[:, 4:])])
    with pytest.raises(ValueError, match="horizon=32"):
        merge_rank_reports([first, _synthetic_report(4, real[:, 4:], imagined[:, 4:], horizon=32)])
    with pytest.raises(ValueError, match="at least two"):
        merge_rank_reports([first])
    later = lambda **settings: _synthetic_report(4, real[:, 4:], imagined[:, 4:], **settings)
    # settings added later: embodiment and env_id are compared only when both reports name them; a report without
    # reward_median took the raw maximum (width 1)
    named = later(embodiment="pusht", env_id="gym_pusht/PushT-v0")
    assert merge_rank_reports([first, named])["settings"]["num_states"] == 10
    assert merge_rank_reports([first, later(reward_median=1)])["settings"]["num_states"] == 10
    for key, ours, theirs in (("embodiment", "pusht", "minigrid"), ("env_id", "a-v0", "b-v0"),
                              ("reward_median", None, 3)):
        ours_first = first if ours is None else _synthetic_report(0, real[:, :4], imagined[:, :4], **{key: ours})
        with pytest.raises(ValueError, match=f"{key}={theirs!r}.*only seed, num_states"):
            merge_rank_reports([ours_first, later(**{key: theirs})])
    # a gap between the runs' states is allowed (each state's values stand on their own)
    assert merge_rank_reports([first, _synthetic_report(20, real[:, 4:], imagined[:, 4:])])["settings"]["seed"] == 0
    # the CLI reads the JSON files `worldsim rank --json` writes
    paths = [tmp_path / "0.json", tmp_path / "4.json"]
    for path, report in zip(paths, (first, second)):
        path.write_text(json.dumps(report))
    assert main(["rank-report", *map(str, paths), "--json", str(tmp_path / "merged.json")]) == 0
    assert json.loads((tmp_path / "merged.json").read_text())["settings"]["num_states"] == 10


def test_run_imagined_values_are_the_smoothed_maximum_of_its_reward_traces(model_with_heads):
    pipeline = WorldModelPipeline.from_pretrained(model_with_heads[0])
    frames, actions = real_starts(PushTEmbodiment(), [0, 1, 2], num_context=2, image_size=pipeline.image_size)
    runs = {width: run_imagined(pipeline, RandomTargets(seed=0), frames, actions, horizon=5, reward_median=width,
                                keep_frames=0) for width in (1, 3)}
    np.testing.assert_array_equal(runs[1]["rewards"], runs[3]["rewards"])  # same seeds: the same imagination
    assert runs[1]["rewards"].shape == runs[1]["in_episode"].shape == (3, 5)
    masked = np.where(runs[1]["in_episode"], runs[1]["rewards"], -np.inf)
    np.testing.assert_allclose(runs[1]["values"], masked.max(1), rtol=1e-6)
    np.testing.assert_allclose(runs[3]["values"], episode_values(runs[3]["rewards"], runs[3]["in_episode"], 3))
    assert np.all(runs[3]["values"] <= runs[1]["values"] + 1e-6)


class _SeedRecorder(StandStill):
    """StandStill that records how ranking resets it."""

    def __init__(self):
        self.resets = []

    def reset(self, num_envs: int, seeds=None) -> None:
        super().reset(num_envs)
        self.resets.append((num_envs, None if seeds is None else list(seeds)))


def test_each_start_hands_its_seed_to_the_policy_in_both_worlds(model_with_heads):
    """Common random numbers: a policy whose reset takes seeds gets each episode's start seed, in the real env (one
    episode at a time) and in imagination (the batch); others get reset(num_envs) as before."""
    recorder = _SeedRecorder()
    run_real(PushTEmbodiment(), recorder, [0, 2, 3], num_context=2, horizon=2, image_size=64, keep_frames=0)
    assert recorder.resets == [(1, [0]), (1, [2]), (1, [3])]
    pipeline = WorldModelPipeline.from_pretrained(model_with_heads[0])
    frames, actions = real_starts(PushTEmbodiment(), [0, 2, 3], num_context=2, image_size=pipeline.image_size)
    recorder.resets.clear()
    run_imagined(pipeline, recorder, frames, actions, horizon=1, keep_frames=0, policy_seeds=[0, 2, 3], batch_size=2)
    assert recorder.resets == [(2, [0, 2]), (1, [3])]
    with pytest.raises(ValueError, match="one int per start clip"):
        run_imagined(pipeline, recorder, frames, actions, horizon=1, keep_frames=0, policy_seeds=[0, 2])
    recorder.resets.clear()  # rank_policies: the real episodes one at a time, then the batch, per batch of starts
    rank_policies(pipeline, {"recorder": recorder, "still": StandStill()}, num_states=3, horizon=1, num_context=2,
                  batch_size=2, seed=5, progress=False)
    assert recorder.resets == [(1, [5]), (1, [6]), (2, [5, 6]), (1, [7]), (1, [7])]

    class Plain(StandStill):  # reset(num_envs) only: no seeds reach it
        def reset(self, num_envs: int) -> None:
            super().reset(num_envs)
            self.count = num_envs

    plain = Plain()
    reset_policy(plain, 2, [5, 6])
    assert plain.count == 2
    with pytest.raises(ValueError, match="one integer seed per env"):
        reset_policy(recorder, 2, [5])
    with pytest.raises(ValueError, match="integer seeds"):
        reset_policy(recorder, 2, [5, 6.0])
    with pytest.raises(ValueError, match="integer seeds"):
        reset_policy(recorder, 1, [True])


def test_batch_random_shared_draws_are_numpys_and_per_env_draws_do_not_depend_on_the_batch():
    from worldsim.utils.batch_random import BatchRandom

    shared = BatchRandom(3, 4)
    expected = np.random.default_rng(3)
    np.testing.assert_array_equal(shared.uniform(0, 512, shared.rows(4), (2,)), expected.uniform(0, 512, (4, 2)))
    np.testing.assert_array_equal(shared.random(shared.rows(4)), expected.random(4))
    batch = BatchRandom(3, 3, seeds=[10, 11, 12])
    together = batch.normal(0.0, 1.0, batch.rows(3), (2,))
    alone = BatchRandom(3, 1, seeds=[11])
    np.testing.assert_array_equal(alone.normal(0.0, 1.0, alone.rows(1), (2,))[0], together[1])
    with pytest.raises(ValueError, match="reset\\(\\) seeded 3 envs"):
        batch.rows(2)
    with pytest.raises(ValueError, match="seeds must be 2 ints >= 0"):
        BatchRandom(0, 2, seeds=[1, -1])
    from worldsim.embodiments.breakout import RandomJoystick

    joystick, frames = RandomJoystick(seed=4), np.zeros((3, 8, 8, 3), np.uint8)
    joystick.reset(3)  # without seeds: numpy's generator shared by the batch, as before
    np.testing.assert_array_equal(joystick.act(frames), np.random.default_rng(4).integers(0, 4, 3))
    joystick.reset(3, seeds=[1, 2, 3])
    together = np.stack([joystick.act(frames) for _ in range(5)])
    joystick.reset(1, seeds=[2])
    np.testing.assert_array_equal(np.stack([joystick.act(frames[:1])[0] for _ in range(5)]), together[:, 1])


def test_pusht_zoo_draws_each_starts_noise_alone_or_in_a_batch():
    frames = np.zeros((3, 64, 64, 3), np.uint8)
    for policy in (RandomTargets(seed=1), CentroidPusher(noise_std=20.0, wander_prob=0.3, seed=1),
                   pusht_zoo(seed=1)["wanderer"]):
        policy.reset(3, seeds=[4, 5, 6])
        together = np.stack([policy.act(frames) for _ in range(3)])
        policy.reset(1, seeds=[5])
        alone = np.stack([policy.act(frames[1:2])[0] for _ in range(3)])
        np.testing.assert_array_equal(alone, together[:, 1])
    old = RandomTargets(seed=1)  # without seeds: the batch shares numpy's generator, as before
    old.reset(3)
    np.testing.assert_array_equal(old.act(frames), np.random.default_rng(1).uniform(0, 512, (3, 2)).astype(np.float32))


def test_minigrid_zoo_draws_each_starts_noise_alone_or_in_a_batch():
    from worldsim.embodiments.minigrid.policies import RandomActions, ShortestPathPlanner

    frames = np.zeros((3, 64, 64, 3), np.uint8)  # nothing perceived: the planner plays its random actions
    for policy in (RandomActions(seed=2), ShortestPathPlanner(random_prob=0.5, seed=2)):
        policy.reset(3, seeds=[7, 8, 9])
        together = np.stack([policy.act(frames) for _ in range(4)])
        policy.reset(1, seeds=[9])
        alone = np.stack([policy.act(frames[2:])[0] for _ in range(4)])
        np.testing.assert_array_equal(alone, together[:, 2])
    old = RandomActions(seed=2)  # without seeds: numpy's generator shared by the batch, as before
    old.reset(3)
    np.testing.assert_array_equal(old.act(frames), np.random.default_rng(2).choice([0, 1, 2], 3))


def test_rerun_rank_real_replaces_the_real_side_and_recomputes_the_agreement():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("rerun_rank_real",
                                                  Path(__file__).parents[1] / "tools/rerun_rank_real.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    def entry(imagined, real):
        return {"imagined": {"mean": float(np.mean(imagined))}, "imagined_values": imagined,
                "real": {"mean": float(np.mean(real))}, "real_values": real, "real_success_values": real,
                "real_success": {"mean": float(np.mean(real))}, "real_returns": real, "imagined_returns": imagined}

    report = {"policies": {"a": entry([1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]),
                           "b": entry([0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]),
                           "c": entry([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])},
              "agreement": {}, "settings": {"embodiment": "metaworld"}}
    outcome = {"values": np.array([1.0, 1.0, 1.0, 0.0]), "success": np.array([True, True, True, False]),
               "returns": np.array([5.0, 5.0, 5.0, 1.0])}
    fixed = tool.with_real(report, {"a": outcome}, "old.json", seed=0)
    assert fixed["policies"]["a"]["real_success"]["mean"] == 0.75 and fixed["policies"]["b"] == report["policies"]["b"]
    assert report["policies"]["a"]["real_values"] == [0.0, 0.0, 0.0, 0.0]  # the source report is left as it was
    assert fixed["agreement"]["spearman"] > 0 and set(fixed["agreement_intervals"]) >= {"spearman", "mmrv"}
    assert fixed["settings"]["real_rerun"]["policies"] == ["a"] and fixed["settings"]["policy_seeds"] == "per start"
    with pytest.raises(ValueError, match="3 real episodes for 4 imagined"):
        tool.with_real(report, {"a": {**outcome, "values": np.ones(3)}}, "old.json", seed=0)
