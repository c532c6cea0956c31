"""OutcomePredictor: K candidates branched from one encoded context, scored by the heads or a user scorer."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from worldsim.pipelines.world_model import WorldModelPipeline
from worldsim.steering import OutcomePredictor

RNG = np.random.default_rng(0)
FRAMES = RNG.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)  # resized to the model's 16
ACTIONS = RNG.uniform(0, 512, (2, 2)).astype(np.float32)


def test_candidates_share_one_encoded_context_and_get_head_scores(model_with_heads, monkeypatch):
    path, _ = model_with_heads
    pipeline = WorldModelPipeline.from_pretrained(path)
    calls = []
    original = pipeline.encode_context
    monkeypatch.setattr(pipeline, "encode_context", lambda *a, **k: calls.append(1) or original(*a, **k))
    predictor = OutcomePredictor(pipeline, aggregate="last")
    candidates = RNG.uniform(0, 512, (5, 3, 2)).astype(np.float32)
    prediction = predictor.predict(FRAMES, ACTIONS, candidates)
    assert len(calls) == 1  # encoded once for all 5 candidates
    assert prediction.frames.shape == (5, 3, 16, 16, 3) and prediction.rewards.shape == (5, 3)
    np.testing.assert_allclose(prediction.scores, prediction.rewards[:, -1], rtol=1e-6)
    assert prediction.best == int(np.argmax(prediction.scores))
    # the heads score exactly the imagined frames
    np.testing.assert_allclose(pipeline.outcomes(prediction.frames[:, -1])["reward"], prediction.rewards[:, -1],
                               rtol=1e-5)


def test_a_user_scorer_ranks_the_candidates(tiny_pipeline_path):
    seen = {}

    def judge(frames, task):  # a stand-in judge: prefers brighter futures
        seen["shape"], seen["task"] = frames.shape, task
        return frames.reshape(len(frames), -1).mean(axis=1)

    predictor = OutcomePredictor(tiny_pipeline_path, scorer=judge, task="push the T onto the goal")
    prediction = predictor.predict(FRAMES, ACTIONS, RNG.uniform(0, 512, (4, 2, 2)))
    assert seen == {"shape": (4, 2, 16, 16, 3), "task": "push the T onto the goal"}
    assert prediction.best == int(np.argmax(prediction.frames.reshape(4, -1).mean(axis=1)))
    assert np.isnan(prediction.rewards).all()  # no heads: rewards are not invented


def test_follow_up_policy_continues_every_candidate_in_imagination(model_with_heads):
    pipeline = WorldModelPipeline.from_pretrained(model_with_heads[0])
    seen = []

    class Follower:  # a batched policy acting on the imagined frames
        def reset(self, num_envs):
            seen.append(("reset", num_envs))

        def act(self, frames):
            seen.append(("act", frames.shape))
            return np.full((len(frames), 2), 256.0, dtype=np.float32)

    predictor = OutcomePredictor(pipeline, aggregate="max", follow_policy=Follower(), follow_steps=4, seed=3)
    candidates = RNG.uniform(0, 512, (3, 2, 2)).astype(np.float32)
    prediction = predictor.predict(FRAMES, ACTIONS, candidates)
    assert prediction.frames.shape == (3, 2 + 4, 16, 16, 3) and prediction.chunk_length == 2
    assert seen == [("reset", 3)] + [("act", (3, 16, 16, 3))] * 4
    # the score covers chunk and follow-up
    np.testing.assert_allclose(prediction.scores, prediction.rewards.max(axis=1), rtol=1e-6)
    # the same rollout by hand: the chunk, then the follower's actions, from the same seed
    by_hand = OutcomePredictor(pipeline, aggregate="max", seed=3)
    extended = np.concatenate([candidates, np.full((3, 4, 2), 256.0, np.float32)], axis=1)
    np.testing.assert_array_equal(by_hand.predict(FRAMES, ACTIONS, extended).frames, prediction.frames)


def test_scores_average_several_imagination_samples(model_with_heads):
    candidates = RNG.uniform(0, 512, (2, 3, 2)).astype(np.float32)
    single = OutcomePredictor(model_with_heads[0], aggregate="last", seed=5)
    one = single.predict(FRAMES, ACTIONS, candidates)
    assert np.all(one.score_spread == 0)
    predictor = OutcomePredictor(model_with_heads[0], aggregate="last", num_samples=3, seed=5)
    prediction = predictor.predict(FRAMES, ACTIONS, candidates)
    assert prediction.frames.shape == (2, 3, 16, 16, 3) and prediction.scores.shape == (2,)
    # each candidate's score is the mean of its 3 samples: rerun them as 6 explicit candidates with the same noise
    explicit = OutcomePredictor(model_with_heads[0], aggregate="last", seed=5)
    rows = explicit.predict(FRAMES, ACTIONS, np.repeat(candidates, 3, axis=0))
    np.testing.assert_allclose(prediction.scores, rows.scores.reshape(2, 3).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(prediction.score_spread, rows.scores.reshape(2, 3).std(axis=1), rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(prediction.frames, rows.frames[::3])
    assert np.any(rows.frames[0] != rows.frames[1])  # different noise, different futures


def test_predictor_refuses_bad_input(tiny_pipeline_path, model_with_heads):
    with pytest.raises(ValueError, match="no outcome heads"):
        OutcomePredictor(tiny_pipeline_path)
    predictor = OutcomePredictor(model_with_heads[0])
    with pytest.raises(ValueError, match=r"\(K, H, 2\)"):
        predictor.predict(FRAMES, ACTIONS, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        predictor.predict(FRAMES, ACTIONS, np.full((1, 1, 2), np.nan))
    with pytest.raises(ValueError, match="aggregate"):
        OutcomePredictor(model_with_heads[0], aggregate="median")
    with pytest.raises(ValueError, match="follow_policy"):
        OutcomePredictor(model_with_heads[0], follow_steps=2)
    with pytest.raises(ValueError, match="follow_steps"):
        OutcomePredictor(model_with_heads[0], follow_steps=-1, follow_policy=lambda o: np.zeros(2))
    with pytest.raises(ValueError, match="num_samples"):
        OutcomePredictor(model_with_heads[0], num_samples=0)
    with pytest.raises(ValueError, match="timestep_spacing"):
        OutcomePredictor(model_with_heads[0], num_inference_steps=2, timestep_spacing="cosine")
    broken = OutcomePredictor(model_with_heads[0], scorer=lambda frames, task: np.zeros(2))
    with pytest.raises(ValueError, match="scorer returned"):
        broken.predict(FRAMES, ACTIONS, np.zeros((3, 1, 2)))


def test_steered_policy_executes_the_best_candidate_chunk(tiny_pipeline_path):
    from worldsim.steering import SteeredPolicy

    chunks = iter(np.arange(200, dtype=np.float32).reshape(50, 2, 2) * 2)  # a different chunk per call

    def judge(frames, task):  # prefers the last candidate, so the choice is visible
        return np.arange(len(frames), dtype=float)

    policy = SteeredPolicy(lambda observation: next(chunks), OutcomePredictor(tiny_pipeline_path, scorer=judge),
                           num_candidates=3, context=2)
    frame = np.zeros((16, 16, 3), np.uint8)
    first = [policy.act(frame) for _ in range(2)]  # one frame of context only: the first chunk, unsteered
    np.testing.assert_array_equal(first, [[0, 2], [4, 6]])
    assert policy.last_decision is None
    steered = [policy.act(frame) for _ in range(2)]  # now steered: candidates 3, 4, 5 -> the judge picks 5
    np.testing.assert_array_equal(steered, [[40, 42], [44, 46]])
    assert policy.last_decision["best"] == 2 and len(policy.last_decision["scores"]) == 3
    with pytest.raises(ValueError, match="num_candidates"):
        SteeredPolicy(lambda o: np.zeros((2, 2)), OutcomePredictor(tiny_pipeline_path, scorer=judge), 0)


def test_goal_image_scorer_prefers_the_future_that_ends_at_the_goal(tiny_pipeline_path):
    from worldsim.steering import GoalImageScorer

    goal = np.zeros((16, 16, 3), np.uint8)
    goal[4:12, 4:12] = 200
    near = np.repeat(goal[None, None], 3, axis=1)  # (1, 3, 16, 16, 3): a future that stays at the goal
    far = np.zeros_like(near)
    frames = np.concatenate([far, near])
    scores = GoalImageScorer(goal)(frames)
    assert scores.shape == (2,) and scores[1] == pytest.approx(0.0) and scores[0] < scores[1]
    latent = GoalImageScorer(goal, space="latent", pipeline=WorldModelPipeline.from_pretrained(tiny_pipeline_path))
    latent_scores = latent(frames, "any task")
    assert latent_scores[1] == pytest.approx(0.0, abs=1e-6) and latent_scores[0] < latent_scores[1]
    with pytest.raises(ValueError, match="pipeline"):
        GoalImageScorer(goal, space="latent")
    with pytest.raises(ValueError, match="uint8"):
        GoalImageScorer(goal.astype(float))


def test_steer_eval_runs_base_and_steered_policies_in_the_real_env(model_with_heads, tmp_path):
    """End to end on the tiny model: K = 1 is the base policy, K = 2 imagines; the oracle executes candidates."""
    pytest.importorskip("gym_pusht")
    from worldsim.steering.evaluate import steer_evaluate, steer_table, steering_video_frames, write_steer_report

    predictor = OutcomePredictor(model_with_heads[0])
    report = steer_evaluate(predictor, [2], num_states=2, horizon=6, num_context=2, chunk_length=3,
                            oracle_follow=2, progress=False)
    results = report["results"]
    assert sorted(results) == [1, 2]  # the base policy is always included
    assert results[1]["seconds_per_decision"] == 0.0 and results[1]["oracle"] is None
    assert results[1]["gain"]["mean"] == 0.0
    assert report["settings"]["decoder"] == "full"  # the pipeline's choice, recorded so runs merge only alike
    steered = results[2]
    assert len(steered["values"]) == 2 and all(0.0 <= v <= 1.0 for v in steered["values"])
    assert steered["seconds_per_decision"] > 0
    assert steered["oracle"]["decisions"] == 2 * 2  # 6 steps, chunks of 3: two decisions per state
    assert steered["oracle"]["oracle_gain"] >= steered["oracle"]["captured_gain"] - 1e-12
    np.testing.assert_allclose(steered["gain"]["mean"], np.mean(steered["values"]) - np.mean(results[1]["values"]))
    video = report["video"]
    assert video["futures"].shape == (2, 3, 16, 16, 3) and video["real"].shape == (3, 16, 16, 3)
    grid = steering_video_frames(video["futures"], video["best"], video["real"], columns=2)
    assert grid.shape == (3, 2 * 20, 2 * 20, 3)  # 2 candidates + the real outcome + one empty cell, 2 x 2
    assert (grid[:, 20:, 20:] == 255).all()
    assert tuple(grid[0, 0, 20 * video["best"]]) == (0, 200, 0)  # the chosen candidate is framed green
    assert "| 2 |" in steer_table(report)
    written = write_steer_report(report, tmp_path)
    assert written["plot"].stat().st_size > 0 and written["video"].stat().st_size > 0


def test_an_interrupted_steer_eval_resumes_to_the_uninterrupted_report(model_with_heads, tmp_path, monkeypatch):
    """Progress is saved per episode; a resumed run restores the noise generator and equals a run never stopped."""
    pytest.importorskip("gym_pusht")
    from worldsim.steering import evaluate

    settings = dict(num_states=3, horizon=6, num_context=2, chunk_length=3, oracle_follow=2, progress=False)
    uninterrupted = OutcomePredictor(model_with_heads[0], seed=5)
    straight = evaluate.steer_evaluate(uninterrupted, [2], **settings)

    from worldsim.embodiments.pusht import PushTEmbodiment

    built, original = [], PushTEmbodiment.steering_policy

    def interrupted(self, *args, **kwargs):  # K = 1 builds states 0-2, K = 2 builds 0, 1, then stops in state 2
        if "seed" in kwargs:  # (the check before the run passes the seed by position)
            built.append(kwargs["seed"])
        if len(built) == 6:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PushTEmbodiment, "steering_policy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate.steer_evaluate(OutcomePredictor(model_with_heads[0], seed=5), [2], progress_dir=tmp_path,
                                **settings)
    monkeypatch.setattr(PushTEmbodiment, "steering_policy", original)
    saved = json.loads((tmp_path / "steer-progress.json").read_text())
    assert [len(saved["runs"][k]["values"]) for k in ("1", "2")] == [3, 2]
    assert (tmp_path / "steer-progress-video.safetensors").exists()  # its episode (K = 2, state 0) finished
    before = (tmp_path / "steer-progress.json").read_text()
    with pytest.raises(FileExistsError, match="K=2: 2"):  # never overwritten without being asked
        evaluate.steer_evaluate(OutcomePredictor(model_with_heads[0], seed=5), [2], progress_dir=tmp_path,
                                **settings)
    with pytest.raises(ValueError, match="settings"):
        evaluate.steer_evaluate(OutcomePredictor(model_with_heads[0], seed=5), [2], progress_dir=tmp_path,
                                resume=True, **{**settings, "horizon": 5})
    with pytest.raises(ValueError, match="candidates"):
        evaluate.steer_evaluate(OutcomePredictor(model_with_heads[0], seed=5), [4], progress_dir=tmp_path,
                                resume=True, **settings)
    assert (tmp_path / "steer-progress.json").read_text() == before
    damaged = tmp_path.parent / f"{tmp_path.name}-damaged"
    damaged.mkdir()
    (damaged / "steer-progress.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "runs"}))
    with pytest.raises(ValueError, match="damaged"):
        evaluate.steer_evaluate(OutcomePredictor(model_with_heads[0], seed=5), [2], progress_dir=damaged,
                                resume=True, **settings)

    predictor = OutcomePredictor(model_with_heads[0], seed=5)
    resumed = evaluate.steer_evaluate(predictor, [2], progress_dir=tmp_path, resume=True, **settings)
    for count in (1, 2):  # JSON text, so that a NaN Spearman compares equal to itself
        ours, theirs = resumed["results"][count], straight["results"][count]
        for key in ("values", "successes", "gain", "oracle"):
            assert json.dumps(ours[key]) == json.dumps(theirs[key]), (count, key)
    # the noise generator went on from where it stopped: the same draws as the run never interrupted
    assert torch.equal(predictor.generator.get_state(), uninterrupted.generator.get_state())
    assert not torch.equal(predictor.generator.get_state(), OutcomePredictor(model_with_heads[0], seed=5)
                           .generator.get_state())
    assert straight["results"][2]["oracle"]["decisions"] == 3 * 2
    for key in ("futures", "real"):
        np.testing.assert_array_equal(resumed["video"][key], straight["video"][key])
    assert resumed["video"]["best"] == straight["video"]["best"]
    assert not list(tmp_path.iterdir())  # a finished run leaves no progress behind


def test_steer_eval_refuses_bad_settings(model_with_heads):
    from worldsim.embodiments.pusht import NoisyPusherChunks
    from worldsim.steering.evaluate import steer_evaluate

    predictor = OutcomePredictor(model_with_heads[0])
    with pytest.raises(ValueError, match="candidates"):
        steer_evaluate(predictor, [0], progress=False)
    with pytest.raises(ValueError, match="num_context"):
        steer_evaluate(predictor, [2], num_context=1, progress=False)
    with pytest.raises(ValueError, match="noise_std"):
        NoisyPusherChunks(noise_std=-1.0)


def _steer_report(results: dict, **settings) -> dict:
    base = {"num_states": 3, "horizon": 8, "seed": 0, "samples": 1, "scorer": "heads (max)", "date": "2026-11-22"}
    return {"settings": {**base, **settings}, "model": "m",
            "results": {str(count): {"values": values, "successes": [float(v > 0.9) for v in values],
                                     "seconds_per_decision": 0.1 * count, "oracle": None}
                        for count, values in results.items()}}


def test_steer_reports_of_other_k_values_merge_with_gains_against_the_shared_base(tmp_path):
    import json

    from worldsim.cli.main import main
    from worldsim.steering.evaluate import merge_steer_reports

    first = _steer_report({1: [0.2, 0.4, 0.6], 2: [0.3, 0.5, 0.6]})
    second = _steer_report({1: [0.2, 0.4 + 1e-15, 0.6], 16: [0.5, 1.0, 0.6]}, date="2026-11-23")  # round-off
    merged = merge_steer_reports([first, second])
    assert sorted(merged["results"]) == [1, 2, 16]
    assert merged["settings"]["date"] == "2026-11-22, 2026-11-23" and merged["model"] == "m"
    np.testing.assert_allclose(merged["results"][16]["gain"]["mean"], (0.3 + 0.6 + 0.0) / 3)
    assert merged["results"][16]["gain"]["low"] <= 0.3 <= merged["results"][16]["gain"]["high"]
    np.testing.assert_allclose(merged["results"][16]["success_gain"]["mean"], 1 / 3)
    assert merged["results"][1]["gain"]["mean"] == 0.0

    paths = []
    for index, report in enumerate((first, second)):
        paths.append(tmp_path / f"r{index}.json")
        paths[-1].write_text(json.dumps(report))
    assert main(["steer-report", *map(str, paths), "--out", str(tmp_path / "merged")]) == 0
    written = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert sorted(written["results"], key=int) == ["1", "2", "16"] and (tmp_path / "merged" / "gain.png").stat().st_size
    assert main(["steer-report", str(paths[0]), str(tmp_path / "missing.json")]) == 2
    (tmp_path / "other.json").write_text('{"values": []}')
    assert main(["steer-report", str(paths[0]), str(tmp_path / "other.json")]) == 2


def test_steer_reports_of_other_protocols_are_not_merged():
    from worldsim.steering.evaluate import merge_steer_reports

    first = _steer_report({1: [0.2, 0.4, 0.6], 2: [0.3, 0.5, 0.6]})
    with pytest.raises(ValueError, match="samples=2"):
        merge_steer_reports([first, _steer_report({1: [0.2, 0.4, 0.6], 4: [0.1, 0.1, 0.1]}, samples=2)])
    with pytest.raises(ValueError, match="K = 1 differs.*base policy"):
        merge_steer_reports([first, _steer_report({1: [0.2, 0.4, 0.7], 4: [0.1, 0.1, 0.1]})])
    with pytest.raises(ValueError, match="K = 2 differs"):
        merge_steer_reports([first, _steer_report({1: [0.2, 0.4, 0.6], 2: [0.1, 0.1, 0.1]})])
    with pytest.raises(ValueError, match="no K = 1"):
        merge_steer_reports([first, {**first, "results": {"4": first["results"]["2"]}}])
    with pytest.raises(ValueError, match="at least two"):
        merge_steer_reports([first])
    with pytest.raises(ValueError, match="model"):
        merge_steer_reports([first, {**first, "model": "other"}])
    # reports from before the light decoder (no "decoder" setting) ran the full one
    light = _steer_report({1: [0.2, 0.4, 0.6], 4: [0.1, 0.1, 0.1]}, decoder="light")
    with pytest.raises(ValueError, match="decoder='light'.*'full'"):
        merge_steer_reports([first, light])
    assert 4 in merge_steer_reports([first, _steer_report({1: [0.2, 0.4, 0.6], 4: [0.1, 0.1, 0.1]},
                                                          decoder="full")])["results"]
    # reports written before embodiment plug-ins do not name it: compared only when both do
    named = _steer_report({1: [0.2, 0.4, 0.6], 4: [0.1, 0.1, 0.1]}, embodiment="pusht")
    assert 4 in merge_steer_reports([first, named])["results"]
    with pytest.raises(ValueError, match="embodiment='pusht'.*'minigrid'"):
        merge_steer_reports([_steer_report({1: [0.2, 0.4, 0.6]}, embodiment="minigrid"), named])


def test_steer_reports_of_other_initial_states_merge_into_one_run():
    """States 0-1 and 2-4 run separately (other sessions or machines) merge into one 5-state run, and K pieces too."""
    from worldsim.steering.evaluate import merge_steer_reports

    def oracle(decisions, gain, spearman):
        return {"decisions": decisions, "oracle_gain": gain, "captured_gain": gain / 2, "spearman": spearman}

    low = _steer_report({1: [0.2, 0.4], 8: [0.3, 0.6]}, seed=0, num_states=2)
    high = _steer_report({1: [0.6, 0.1, 0.5], 8: [0.9, 0.1, 0.5]}, seed=2, num_states=3)
    low["results"]["8"]["oracle"], high["results"]["8"]["oracle"] = oracle(4, 0.1, 0.5), oracle(6, 0.2, float("nan"))
    high["results"]["8"]["seconds_per_decision"] = 1.3
    merged = merge_steer_reports([high, low])
    assert merged["settings"]["seed"] == 0 and merged["settings"]["num_states"] == 5
    assert merged["results"][1]["values"] == [0.2, 0.4, 0.6, 0.1, 0.5]
    np.testing.assert_allclose(merged["results"][8]["gain"]["mean"], (0.1 + 0.2 + 0.3) / 5)
    np.testing.assert_allclose(merged["results"][8]["seconds_per_decision"], (2 * 0.8 + 3 * 1.3) / 5)
    combined = merged["results"][8]["oracle"]
    assert combined["decisions"] == 10 and combined["spearman"] == 0.5  # the undefined Spearman is left out
    np.testing.assert_allclose([combined["oracle_gain"], combined["captured_gain"]], [0.16, 0.08])
    wide = _steer_report({1: [0.2, 0.4, 0.6, 0.1, 0.5], 16: [0.5, 0.5, 0.6, 0.2, 0.5]}, seed=0, num_states=5)
    assert sorted(merge_steer_reports([low, high, wide])["results"]) == [1, 8, 16]

    with pytest.raises(ValueError, match="in part, on states 1-1"):
        merge_steer_reports([low, _steer_report({1: [0.4, 0.6], 8: [0.6, 0.9]}, seed=1)])
    with pytest.raises(ValueError, match=r"miss states \[2, 3\]"):
        merge_steer_reports([low, _steer_report({1: [0.5], 8: [0.5]}, seed=4)])
    with pytest.raises(ValueError, match="K = 4 covers 3 of the 5 merged states"):
        merge_steer_reports([low, _steer_report({1: [0.6, 0.1, 0.5], 4: [0.6, 0.1, 0.5]}, seed=2)])
    with pytest.raises(ValueError, match="K = 8 has 1 values, K = 1 has 2"):
        merge_steer_reports([low, _steer_report({1: [0.6, 0.1], 8: [0.1]}, seed=2)])
    with pytest.raises(ValueError, match="K = 1 differs.*states 0-1.*base policy"):
        merge_steer_reports([low, _steer_report({1: [0.2, 0.5], 4: [0.1, 0.1]}, seed=0)])


def test_steer_eval_cli_writes_a_report_that_merges_with_a_run_of_other_states(model_with_heads, tmp_path):
    import json

    from worldsim.cli.main import main

    pytest.importorskip("gym_pusht")
    common = ["steer-eval", "--model", str(model_with_heads[0]), "--candidates", "2", "--num-states", "1",
              "--horizon", "3", "--context", "2", "--chunk-length", "3", "--device", "cpu"]
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "steer-progress.json").write_text("{}")  # an unfinished run is there
    assert main([*common, "--seed", "1", "--out", str(tmp_path / "1")]) == 2  # refused, not overwritten
    assert main([*common, "--seed", "0", "--out", str(tmp_path / "0"), "--resume"]) == 0  # nothing saved: starts
    (tmp_path / "1" / "steer-progress.json").unlink()
    assert main([*common, "--seed", "1", "--out", str(tmp_path / "1")]) == 0
    assert sorted(path.name for path in (tmp_path / "0").iterdir()) == ["gain.png", "report.json", "steered.mp4"]
    written = json.loads((tmp_path / "0" / "report.json").read_text())
    assert written["settings"]["decoder"] == "full" and sorted(written["results"], key=int) == ["1", "2"]
    assert main(["steer-report", str(tmp_path / "0" / "report.json"), str(tmp_path / "1" / "report.json"),
                 "--out", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert merged["settings"]["seed"] == 0 and merged["settings"]["num_states"] == 2
    assert len(merged["results"]["2"]["values"]) == 2


def test_steer_eval_runs_an_int8_transformer_and_tells_its_weights_apart(model_with_heads, tmp_path):
    import json

    from tests.conftest import make_tiny_pipeline
    from worldsim.cli.main import main
    from worldsim.steering.evaluate import _weights_sha256

    pipeline, quantized = make_tiny_pipeline(), make_tiny_pipeline()
    quantized.quantize("int8")
    assert _weights_sha256(quantized) == _weights_sha256(quantized) != _weights_sha256(pipeline)
    pytest.importorskip("gym_pusht")
    assert main(["steer-eval", "--model", str(model_with_heads[0]), "--candidates", "2", "--num-states", "1",
                 "--horizon", "3", "--context", "2", "--chunk-length", "3", "--device", "cpu", "--quantize", "int8",
                 "--out", str(tmp_path / "q")]) == 0
    written = json.loads((tmp_path / "q" / "report.json").read_text())
    assert written["settings"]["quantization"] == "int8"
