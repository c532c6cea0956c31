"""Best-of-K steering of a model that observes several cameras and the robot state and is conditioned on a task:
the predictor's states and task, the steered policy's Dict observations, and ``steer-eval`` on Meta-World (the
Meta-World parts are skipped where metaworld is not installed or MuJoCo cannot render)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from tests.conftest import randomize
from tests.test_multicamera_tasks import CAMERAS, two_camera_pipeline
from worldsim.embodiments.metaworld.tasks import task_text
from worldsim.pipelines.world_model import WorldModelPipeline
from worldsim.steering import OutcomePredictor, SteeredPolicy

pytestmark = pytest.mark.filterwarnings("ignore:Constant.*may be too high:UserWarning")  # Meta-World's experts

PUSH = "worldsim/MetaWorld-push-v3"
TASKS = [task_text("push-v3"), task_text("reach-v3")]
STATE_DIM = 39  # Meta-World's observation.state
RNG = np.random.default_rng(0)
FRAMES = RNG.integers(0, 255, (3, 32, 64, 3), dtype=np.uint8)  # two 32 x 32 views side by side, resized to 16 x 32
ACTIONS = RNG.uniform(-1, 1, (2, 4)).astype(np.float32)
STATES = RNG.normal(size=(3, STATE_DIM)).astype(np.float32)


def arm_pipeline() -> WorldModelPipeline:
    """An untrained Meta-World-like pipeline: 16 x 32 frames of two cameras, Meta-World's push and reach tasks, a
    39-D state predictor and outcome heads with a success output."""
    from worldsim.models.heads import OutcomeHeads
    from worldsim.models.state import StatePredictor

    base = two_camera_pipeline(tasks=TASKS)
    predictor = randomize(StatePredictor(in_channels=4, sample_size=[4, 8], state_dim=STATE_DIM, hidden_dim=8,
                                         state_mean=[0.0] * STATE_DIM, state_std=[1.0] * STATE_DIM,
                                         embodiment="metaworld"), seed=3)
    heads = randomize(OutcomeHeads(in_channels=4, sample_size=[4, 8], hidden_dim=8, embodiment="metaworld",
                                   termination_trained=False, success_trained=True), seed=4)
    return WorldModelPipeline(base.autoencoder, base.transformer, base.scheduler,
                              {**base.metadata, "embodiment": "metaworld"}, base.start_frames,
                              heads={"metaworld": heads}, state_predictors={"metaworld": predictor})


@pytest.fixture(scope="module")
def pipeline() -> WorldModelPipeline:
    return arm_pipeline()


class Recorder:
    """A batched follow-up policy that records what it observes and holds still."""

    def __init__(self):
        self.seen = []

    def reset(self, num_envs):
        self.seen.append(("reset", num_envs))

    def act(self, observation):
        self.seen.append(observation)
        return np.zeros((len(observation["observation.state"]), 4), np.float32)


def test_predictor_imagines_composed_views_and_states_deterministically(pipeline):
    candidates = RNG.uniform(-1, 1, (3, 2, 4)).astype(np.float32)
    predictor = OutcomePredictor(pipeline, task=TASKS[0], seed=7)
    assert predictor.layout.is_dict and predictor.layout.state_dim == STATE_DIM
    prediction = predictor.predict(FRAMES, ACTIONS, candidates, states=STATES)
    assert prediction.frames.shape == (3, 2, 16, 32, 3) and prediction.frames.dtype == np.uint8
    assert prediction.states.shape == (3, 2, STATE_DIM) and prediction.states.dtype == np.float32
    assert prediction.success_probabilities.shape == (3, 2) and prediction.scores.shape == (3,)
    again = OutcomePredictor(pipeline, task=TASKS[0], seed=7).predict(FRAMES, ACTIONS, candidates, states=STATES)
    np.testing.assert_array_equal(again.frames, prediction.frames)
    np.testing.assert_array_equal(again.states, prediction.states)
    np.testing.assert_array_equal(again.scores, prediction.scores)
    # the last real state seeds the state predictor: another last state, other predicted states
    moved = STATES.copy()
    moved[-1] += 1.0
    other = OutcomePredictor(pipeline, task=TASKS[0], seed=7).predict(FRAMES, ACTIONS, candidates, states=moved)
    assert not np.allclose(other.states, prediction.states)
    # the task is what the model imagines: another task (or the null task), other futures from the same noise
    reach = OutcomePredictor(pipeline, task=TASKS[1], seed=7).predict(FRAMES, ACTIONS, candidates, states=STATES)
    null = OutcomePredictor(pipeline, seed=7).predict(FRAMES, ACTIONS, candidates, states=STATES)
    assert not np.array_equal(reach.frames, prediction.frames) and not np.array_equal(null.frames, prediction.frames)
    # without states the imagination carries none
    assert OutcomePredictor(pipeline, seed=7).predict(FRAMES, ACTIONS, candidates).states is None


def test_predictor_scores_by_the_success_head_and_checks_tasks_and_states(pipeline):
    candidates = RNG.uniform(-1, 1, (2, 3, 4)).astype(np.float32)
    predictor = OutcomePredictor(pipeline, aggregate="last", value_key="success_probability", seed=1)
    prediction = predictor.predict(FRAMES, ACTIONS, candidates, states=STATES)
    np.testing.assert_allclose(prediction.scores, prediction.success_probabilities[:, -1], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown task 'fly'"):
        OutcomePredictor(pipeline, task="fly")
    with pytest.raises(ValueError, match="unknown task 'fly'"):
        predictor.task = "fly"
    with pytest.raises(ValueError, match="value_key"):
        OutcomePredictor(pipeline, value_key="return")
    with pytest.raises(ValueError, match=r"\(3, 39\)"):
        predictor.predict(FRAMES, ACTIONS, candidates, states=STATES[:, :5])
    with pytest.raises(ValueError, match="finite"):
        predictor.predict(FRAMES, ACTIONS, candidates, states=np.full_like(STATES, np.nan))
    follower = OutcomePredictor(pipeline, follow_policy=Recorder(), follow_steps=1)
    with pytest.raises(ValueError, match="pass the context frames' states"):
        follower.predict(FRAMES, ACTIONS, candidates)
    from tests.conftest import make_tiny_pipeline

    frame_only = OutcomePredictor(make_tiny_pipeline(), scorer=lambda frames, task: np.zeros(len(frames)))
    with pytest.raises(ValueError, match="no state predictor"):  # a frame-only model takes no states
        frame_only.encode(np.zeros((3, 16, 16, 3), np.uint8), np.zeros((2, 2), np.float32), states=STATES)


def test_predictor_scores_by_a_progress_measure_of_the_predicted_state(pipeline):
    candidates = RNG.uniform(-1, 1, (3, 2, 4)).astype(np.float32)
    seen, given = [], []

    def progress(states):  # the negated distance of state[4:7] to the origin, as a plug-in's state_progress
        seen.append(states.shape)
        given.append(-np.linalg.norm(states[:, 4:7], axis=1))
        return given[-1]

    predictor = OutcomePredictor(pipeline, value_key="state_progress", state_value=progress, seed=5)
    assert predictor.aggregate == "last"  # the default for a state value: where the chunk leaves the scene
    prediction = predictor.predict(FRAMES, ACTIONS, candidates, states=STATES)
    assert seen == [(3 * 2, STATE_DIM)]  # every imagined state of every candidate, in one call
    np.testing.assert_allclose(prediction.scores, -np.linalg.norm(prediction.states[:, -1, 4:7], axis=1), rtol=1e-5)
    assert prediction.best == int(np.argmax(prediction.scores))
    peak = OutcomePredictor(pipeline, value_key="state_progress", state_value=progress, aggregate="max", seed=5)
    np.testing.assert_allclose(peak.predict(FRAMES, ACTIONS, candidates, states=STATES).scores,
                               (-np.linalg.norm(prediction.states[..., 4:7], axis=2)).max(axis=1), rtol=1e-5)
    with pytest.raises(ValueError, match="needs state_value"):
        OutcomePredictor(pipeline, value_key="state_progress")
    with pytest.raises(ValueError, match="aggregate='value'"):
        OutcomePredictor(pipeline, value_key="state_progress", state_value=progress, aggregate="value")
    with pytest.raises(ValueError, match="pass the context frames' states"):
        predictor.predict(FRAMES, ACTIONS, candidates)
    # two samples per candidate: each candidate's score is the mean over its own samples (candidate-major rows)
    sampled = OutcomePredictor(pipeline, value_key="state_progress", state_value=progress, num_samples=2, seed=5)
    twice = sampled.predict(FRAMES, ACTIONS, candidates, states=STATES)
    assert seen[-1] == (3 * 2 * 2, STATE_DIM)  # K * samples futures of 2 frames
    last = given[-1].reshape(3, 2, 2)[:, :, -1]  # (candidate, sample), the last frame's value
    np.testing.assert_allclose(twice.scores, last.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(twice.score_spread, last.std(axis=1), rtol=1e-6, atol=1e-12)
    broken = OutcomePredictor(pipeline, value_key="state_progress", state_value=lambda states: np.zeros(2), seed=5)
    with pytest.raises(ValueError, match=r"expected \(6,\)"):
        broken.predict(FRAMES, ACTIONS, candidates, states=STATES)
    nan = OutcomePredictor(pipeline, value_key="state_progress", state_value=lambda states: np.full(len(states), np.nan))
    with pytest.raises(ValueError, match="6 non-finite values of 6"):
        nan.predict(FRAMES, ACTIONS, candidates, states=STATES)
    with pytest.raises(ValueError, match="state_value is used only with value_key='state_progress'"):
        OutcomePredictor(pipeline, value_key="reward", state_value=progress)
    with pytest.raises(ValueError, match="got int"):
        OutcomePredictor(pipeline, value_key="state_progress", state_value=3)
    from tests.conftest import make_tiny_pipeline

    with pytest.raises(ValueError, match="no state predictor"):
        OutcomePredictor(make_tiny_pipeline(), value_key="state_progress", state_value=progress)


def test_the_follow_up_policy_observes_the_views_and_the_predicted_state(pipeline):
    recorder = Recorder()
    predictor = OutcomePredictor(pipeline, task=TASKS[0], follow_policy=recorder, follow_steps=2, num_samples=2,
                                 seed=2)
    candidates = RNG.uniform(-1, 1, (2, 2, 4)).astype(np.float32)
    prediction = predictor.predict(FRAMES, ACTIONS, candidates, states=STATES)
    assert prediction.frames.shape == (2, 2 + 2, 16, 32, 3) and prediction.states.shape == (2, 4, STATE_DIM)
    assert recorder.seen[0] == ("reset", 4)  # K * samples imagined envs
    first = recorder.seen[1]
    assert set(first) == {*CAMERAS, "observation.state"}
    assert first[CAMERAS[0]].shape == (4, 16, 16, 3) and first["observation.state"].shape == (4, STATE_DIM)
    # what it observes after the chunk is the chunk's last imagined frame and predicted state (sample 0 of each)
    np.testing.assert_array_equal(np.concatenate([first[CAMERAS[0]], first[CAMERAS[1]]], axis=2)[::2],
                                  prediction.frames[:, 1])
    np.testing.assert_array_equal(first["observation.state"][::2], prediction.states[:, 1])


def test_steered_policy_gives_the_base_the_dict_and_the_predictor_frames_and_states(pipeline):
    seen, calls = [], []
    chunks = iter(np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 2, 4))

    def base(observation):  # a stochastic chunk policy that reads a Dict
        seen.append(observation)
        return next(chunks)

    predictor = OutcomePredictor(pipeline, scorer=lambda frames, task: np.arange(len(frames), dtype=float),
                                 task=TASKS[0])
    original = predictor.predict
    predictor.predict = lambda *args, **kwargs: calls.append(kwargs["states"]) or original(*args, **kwargs)
    policy = SteeredPolicy(base, predictor, num_candidates=3, context=2)
    observations = [{CAMERAS[0]: np.full((16, 16, 3), step, np.uint8), CAMERAS[1]: np.zeros((16, 16, 3), np.uint8),
                     "observation.state": np.full(STATE_DIM, step, np.float32)} for step in range(4)]
    frames = [np.full((16, 32, 3), step, np.uint8) for step in range(4)]
    actions = [policy.act(observations[step], frame=frames[step], state=observations[step]["observation.state"])
               for step in range(4)]
    assert seen[0] is observations[0] and policy.last_decision["best"] == 2  # the judge picks the last candidate
    np.testing.assert_array_equal(actions[2:], policy.last_decision["candidates"][2])
    assert len(calls) == 1 and calls[0].shape == (2, STATE_DIM)
    np.testing.assert_array_equal(calls[0][:, 0], [1.0, 2.0])  # the states of the two context frames
    np.testing.assert_array_equal(np.stack(policy.frames), np.stack(frames[2:]))


# ---------------------------------------------------------------------------------------------- Meta-World


@pytest.fixture(scope="module")
def metaworld():
    """The Meta-World plug-in, or a skip where metaworld is missing or MuJoCo cannot render."""
    pytest.importorskip("metaworld")  # MuJoCo's OpenGL backend is chosen in conftest.py
    from worldsim.embodiments import make_embodiment
    from worldsim.embodiments.metaworld.env import MetaWorldCameraEnv

    plugin = make_embodiment("metaworld")
    plugin.import_env_package()
    try:
        MetaWorldCameraEnv("reach-v3", image_size=8).reset(seed=0)
    except Exception as error:  # noqa: BLE001 - any GL failure means: no renderer on this machine
        pytest.skip(f"MuJoCo cannot render here (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {error}")
    return plugin


def test_metaworld_steering_chunk_is_the_expert_plus_noise(metaworld):
    from worldsim.embodiments.metaworld import CorruptedExpert, NoisyExpertChunks

    env = metaworld.make_env(PUSH, **metaworld.state_only_env_kwargs)
    observation, _ = metaworld.reset_start(env, 3)
    expert = CorruptedExpert(task="push-v3").expert_action(observation["observation.state"].astype(np.float64))
    exact = metaworld.steering_policy(0.0, 5, 0, env_id=PUSH)
    chunk = exact(observation)
    assert chunk.shape == (5, 4) and chunk.dtype == np.float32
    np.testing.assert_allclose(chunk, np.repeat(expert[None], 5, axis=0).astype(np.float32))
    np.testing.assert_array_equal(exact(observation["observation.state"]), chunk)  # the (39,) state alone works too
    noisy = metaworld.steering_policy(None, 5, 0, env_id=PUSH)  # the plug-in's steering_noise
    assert noisy.noise_std == metaworld.steering_noise == 1.0
    first, second = noisy(observation), noisy(observation)
    assert not np.allclose(first, second) and not np.allclose(first[0], first[1])  # new noise per call and per step
    assert np.all(np.abs(first) <= 1.0) and np.all(np.abs(second) <= 1.0)
    noisy.reset()
    np.testing.assert_array_equal(noisy(observation), first)  # seeded: reset replays the draws
    assert not np.allclose(metaworld.steering_policy(None, 5, 1, env_id=PUSH)(observation), first)
    # the follow-up policy is the noise-free expert, batched, reading the state from a batched Dict
    follow = metaworld.follow_policy(env_id=PUSH)
    follow.reset(2)
    states = np.stack([observation["observation.state"]] * 2)
    np.testing.assert_allclose(follow.act({"observation.state": states}), np.stack([expert, expert]), rtol=1e-6)
    with pytest.raises(ValueError, match="noise_std"):
        NoisyExpertChunks("push-v3", noise_std=-1.0)
    with pytest.raises(ValueError, match="chunk_length"):
        NoisyExpertChunks("push-v3", chunk_length=0)
    with pytest.raises(ValueError, match="fly-v3"):
        metaworld.steering_policy(1.0, 5, 0, env_id="worldsim/MetaWorld-fly-v3")
    with pytest.raises(ValueError, match="observation.state"):
        exact({CAMERAS[0]: np.zeros((8, 8, 3), np.uint8)})
    env.close()


def test_steer_eval_on_metaworld_steers_a_dict_policy_with_the_oracle(metaworld, pipeline):
    """End to end: K = 1 and K = 2 on two push starts; the steered policy reads the env's Dict, the predictor the
    composed views and states, the oracle's follow-up the real state; the model imagines the push task."""
    from worldsim.steering.evaluate import follow_policy_for, steer_evaluate, steer_table

    predictor = OutcomePredictor(pipeline, value_key="success_probability", follow_policy=follow_policy_for(
        metaworld, PUSH), follow_steps=1, seed=3)
    report = steer_evaluate(predictor, [2], num_states=2, horizon=6, num_context=2, chunk_length=3, oracle_follow=1,
                            progress=False, embodiment_plugin=metaworld, env_id=PUSH)
    results, settings = report["results"], report["settings"]
    assert sorted(results) == [1, 2] and results[1]["seconds_per_decision"] == 0.0
    assert settings["env_id"] == PUSH and settings["task"] == TASKS[0] == predictor.task
    assert settings["scorer"] == "heads (max success_probability)" and settings["embodiment"] == "metaworld"
    steered = results[2]
    assert len(steered["values"]) == 2 and steered["seconds_per_decision"] > 0
    assert steered["oracle"]["decisions"] == 2 * 2  # 6 steps in chunks of 3: two decisions per state
    video = report["video"]
    assert video["futures"].shape == (2, 3 + 1, 16, 32, 3) and video["real"].shape == (4, 16, 32, 3)
    assert "| 2 |" in steer_table(report)


def test_the_oracle_of_a_state_scored_predictor_measures_the_real_states(metaworld, pipeline, monkeypatch):
    """With value_key='state_progress' the oracle's real outcome of a chunk is the same progress measure of the real
    state the chunk ends in (aggregate 'last', no follow-up), so its Spearman compares like with like."""
    from worldsim.data.spaces import space_to_json
    from worldsim.evaluation.rank import model_layout
    from worldsim.steering.evaluate import _oracle_outcomes, steer_evaluate

    progress = lambda states: metaworld.state_progress(states, PUSH)  # noqa: E731
    env, probe, replay = (metaworld.make_env(PUSH) for _ in range(3))
    metaworld.reset_start(env, 4)
    metaworld.reset_start(probe, 4)
    for _ in range(3):
        env.step(np.array([0.5, 0.2, -0.3, 0.0], np.float32))
    candidates = np.stack([np.tile([[1.0, 0.0, -1.0, 0.0]], (3, 1)), np.tile([[-1.0, 0.5, 0.0, 1.0]], (3, 1))])
    layout, space = model_layout(pipeline, "metaworld"), space_to_json(env.action_space)
    real = _oracle_outcomes(metaworld, env, probe, candidates.astype(np.float32), 0, layout, space, PUSH,
                            state_value=progress, aggregate="last")
    snapshot = metaworld.get_state(env)
    for chunk, outcome in zip(candidates, real):  # replayed by hand from the same snapshot
        metaworld.reset_start(replay, 4)
        metaworld.set_state(replay, snapshot)
        for action in chunk:
            observation, *_ = replay.step(action.astype(np.float32))
        assert outcome == pytest.approx(float(progress(observation["observation.state"][None])[0]), abs=1e-6)
    assert real[0] != real[1]
    # the peak of the measure over the chunk and follow-up steps, as aggregate="max" scores an imagined future
    peak = _oracle_outcomes(metaworld, env, probe, candidates[:1].astype(np.float32), 2, layout, space, PUSH,
                            state_value=progress, aggregate="max")
    metaworld.reset_start(replay, 4)
    metaworld.set_state(replay, snapshot)
    seen = [replay.step(action.astype(np.float32))[0]["observation.state"] for action in candidates[0]]
    follower = metaworld.follow_policy(env_id=PUSH)
    follower.reset(1)
    for _ in range(2):
        seen.append(replay.step(follower.act(seen[-1][None])[0])[0]["observation.state"])
    assert peak[0] == pytest.approx(float(progress(np.stack(seen)).max()), abs=1e-6)
    for world in (env, probe, replay):
        world.close()
    # end to end: the oracle runs the chunk and the predictor's own follow-up steps (none here), whatever
    # oracle_follow says, scores them by the predictor's measure, and the settings say so
    calls = []

    def spy(*args, **kwargs):
        calls.append((args[4], kwargs))
        return _oracle_outcomes(*args, **kwargs)

    monkeypatch.setattr("worldsim.steering.evaluate._oracle_outcomes", spy)
    predictor = OutcomePredictor(pipeline, value_key="state_progress", state_value=progress, seed=3)
    report = steer_evaluate(predictor, [3], num_states=1, horizon=6, num_context=2, chunk_length=3, oracle_follow=4,
                            progress=False, embodiment_plugin=metaworld, env_id=PUSH)
    oracle = report["results"][3]["oracle"]
    assert report["settings"]["scorer"] == "predicted state (last state_progress)"
    assert report["settings"]["oracle_outcome"].startswith("real state (last state_progress")
    assert [follow for follow, _ in calls] == [0, 0]  # two decisions, no follow-up steps
    assert all(kwargs == {"state_value": progress, "aggregate": "last"} for _, kwargs in calls)
    assert oracle["decisions"] == 2 and oracle["oracle_gain"] > 0  # the candidates leave the hand in other places


def test_steer_eval_cli_takes_a_metaworld_task_by_name(metaworld, pipeline, tmp_path, capsys):
    from worldsim.cli.main import main

    pipeline.save_pretrained(tmp_path / "model")
    common = ["steer-eval", "--model", str(tmp_path / "model"), "--candidates", "2", "--num-states", "1",
              "--horizon", "2", "--context", "2", "--chunk-length", "2", "--device", "cpu"]
    assert main([*common, "--env-id", "reach-v3", "--out", str(tmp_path / "reach")]) == 0
    written = json.loads((tmp_path / "reach" / "report.json").read_text())
    assert written["settings"]["env_id"] == "worldsim/MetaWorld-reach-v3"
    assert written["settings"]["task"] == TASKS[1]
    assert written["settings"]["scorer"] == "heads (max success_probability)"  # the plug-in's imagined value
    assert main([*common, "--env-id", "fly-v3", "--out", str(tmp_path / "fly")]) == 2  # no such task
    # scored by the plug-in's progress measure of the predicted state instead of a head
    assert main([*common, "--env-id", "push-v3", "--value-key", "state_progress", "--out",
                 str(tmp_path / "progress")]) == 0
    written = json.loads((tmp_path / "progress" / "report.json").read_text())
    assert written["settings"]["scorer"] == "predicted state (last state_progress)"
    capsys.readouterr()
    assert main([*common, "--env-id", "door-open-v3", "--value-key", "state_progress", "--out",
                 str(tmp_path / "door")]) == 2
    assert "no progress measure of the state" in capsys.readouterr().err
