"""State predictor: a frame's observation.state from its latent and the previous state; training, the pipeline folder,
the manifest and the allow-list."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from worldsim.cli.main import main
from worldsim.data.lerobot import Episode, LeRobotDatasetWriter
from worldsim.models.autoencoders import encode_frames
from worldsim.models.state import MIN_STATE_STD, StatePredictor
from worldsim.pipelines.loading import load_state_predictors, save_state_predictors, state_folder, state_folders
from worldsim.pipelines.world_model import WorldModelPipeline
from worldsim.training.config import StateConfig, load_config
from worldsim.training.train_state import rollout_states, train_state_predictor

SIZE, SQUARE = 16, 4


def square_episode(rng: np.random.Generator, length: int) -> Episode:
    """A bright 4 x 4 square stepping over the 4 x 4 grid of a dark 16 x 16 frame (one cell of the tiny autoencoder's
    latent each). State: the square's column and row in pixels (visible), a goal drawn per episode (not visible: only
    the previous state carries it) and a constant."""
    position = rng.integers(0, SIZE // SQUARE, 2) * SQUARE
    goal = rng.uniform(-1.0, 1.0)
    frames, states = [], []
    for _ in range(length):
        frame = np.full((SIZE, SIZE, 3), 20, np.uint8)
        frame[position[1]:position[1] + SQUARE, position[0]:position[0] + SQUARE] = (230, 200, 40)
        frames.append(frame)
        states.append([position[0], position[1], goal, 0.5])
        position = np.clip(position + rng.integers(-1, 2, 2) * SQUARE, 0, SIZE - SQUARE)
    zeros = np.zeros(length, bool)
    return Episode(frames=np.stack(frames), action=rng.uniform(0, 512, (length, 2)).astype(np.float32),
                   reward=np.zeros(length, np.float32), terminated=zeros, truncated=zeros,
                   state=np.asarray(states, np.float32))


@pytest.fixture(scope="module")
def square_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("state-data") / "squares"
    writer = LeRobotDatasetWriter(root, fps=10, robot_type="pusht")
    rng = np.random.default_rng(0)
    for _ in range(14):
        writer.add_episode(square_episode(rng, 30))
    writer.close()
    return root


@pytest.fixture(scope="module")
def trained(tiny_pipeline_path, square_dataset, tmp_path_factory):
    """The tiny pipeline with another embodiment's predictor already in it, then trained for the default one."""
    path = tmp_path_factory.mktemp("state-model") / "model"
    shutil.copytree(tiny_pipeline_path, path)
    save_state_predictors({"other": StatePredictor(in_channels=4, sample_size=4, state_dim=2, hidden_dim=8)}, path)
    report = train_state_predictor(path, [square_dataset], steps=400, batch_size=64, learning_rate=2e-3,
                                   hidden_dim=16, val_episodes=3, action_input=False, latent_noise=0.0,
                                   progress=False)
    return path, report


def test_predictor_learns_the_state_a_frame_shows_and_keeps_what_it_does_not(trained):
    _, report = trained
    held, loop = report["held_out"], report["closed_loop"]
    assert report["embodiment"] == "pusht" and report["state_dim"] == 4 and report["val_episodes"] == 3
    assert report["carried_dims"] == [2, 3]  # the goal and the constant never change within an episode
    assert report["val_frames"] == 3 * 29 and report["train_frames"] == 11 * 30
    copy = held["copy_previous"]
    # the square's position: well below repeating the previous state (about 2 px per frame)
    for dim in (0, 1):
        assert held["mae_per_dim"][dim] < 0.5 * copy["mae_per_dim"][dim], held
    assert held["mae_normalized"] < 0.5 * copy["mae_normalized"]
    # the goal and the constant are carried over from the previous state, exactly
    assert held["mae_per_dim"][2:] == [0.0, 0.0] and loop["final"]["mae_per_dim"][2:] == [0.0, 0.0]
    # fed its own states over whole held-out episodes, it still tracks the square; copying the first state does not
    assert loop["episodes"] == 3 and loop["mean_length"] == 30
    assert loop["mean"]["mae_normalized"] < 0.5 * loop["copy_first"]["mean"]["mae_normalized"], loop


def test_predictor_is_saved_in_the_pipeline_folder_under_the_manifest(trained):
    path, report = trained
    assert [folder.name for folder in state_folders(path)] == ["other", "pusht"]  # the other embodiment's is kept
    index = json.loads((path / "model_index.json").read_text())
    assert index["state"] == ["worldsim", "StatePredictor"]
    assert {"state/pusht/config.json", "state/pusht/diffusion_pytorch_model.safetensors",
            "state/other/config.json"} <= set(index["worldsim_files"])
    assert json.loads((path / "state" / "pusht" / "metrics.json").read_text())["held_out"] == report["held_out"]
    assert not list((path / "state").rglob("*.bin")) and not list((path / "state").glob(".*"))
    predictors = load_state_predictors(path)
    assert set(predictors) == {"other", "pusht"} and not predictors["pusht"].training
    predictor = predictors["pusht"]
    assert predictor.config.embodiment == "pusht" and predictor.config.state_std[3] == pytest.approx(MIN_STATE_STD)
    WorldModelPipeline.from_pretrained(path)  # the whole folder still checks out

    # imagined frames in, states out: the same latents the pipeline imagines
    pipeline = WorldModelPipeline.from_pretrained(path)
    frames = np.full((2, SIZE, SIZE, 3), 20, np.uint8)
    latents = encode_frames(pipeline.autoencoder, torch.from_numpy(frames))
    state = predictor.predict(latents, np.array([[3.0, 4.0, 0.25, 0.5], [8.0, 1.0, -0.5, 0.5]], np.float32))
    assert state.shape == (2, 4) and state.dtype == torch.float32 and torch.isfinite(state).all()
    np.testing.assert_allclose(state[:, 3].numpy(), 0.5, atol=1e-3)

    # a round trip through save_state_predictors gives the same predictions
    copy = path.parent / "copy"
    shutil.copytree(path, copy)
    save_state_predictors({"pusht": predictor}, copy)
    again = load_state_predictors(copy)["pusht"]
    previous = torch.tensor([[3.0, 4.0, 0.25, 0.5], [8.0, 1.0, -0.5, 0.5]])
    torch.testing.assert_close(again.predict(latents, previous), predictor.predict(latents, previous))


def test_closed_loop_rollout_feeds_back_its_own_states(trained):
    path, _ = trained
    predictor = load_state_predictors(path)["pusht"]
    latents = [torch.randn(5, 4, 4, 4), torch.randn(2, 4, 4, 4)]
    first = np.array([[3, 4, 0.1, 0.5], [1, 1, -0.2, 0.5]], np.float32)
    rolled = rollout_states(predictor, latents, first)
    assert [r.shape for r in rolled] == [(5, 4), (2, 4)]
    np.testing.assert_array_equal(rolled[0][0], first[0])
    step = predictor.predict(latents[0][1:2], first[:1])
    np.testing.assert_allclose(rolled[0][1], step[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(rolled[0][2], predictor.predict(latents[0][2:3], step).numpy()[0], rtol=1e-5)
    with pytest.raises(ValueError, match="first_states"):
        rollout_states(predictor, latents, first[:1])


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("where", ["config", "index"])
def test_a_state_folder_naming_another_class_is_refused(trained, tmp_path, where):
    path = tmp_path / "model"
    shutil.copytree(trained[0], path)
    if where == "config":
        _edit_json(path / "state" / "pusht" / "config.json", lambda c: c.__setitem__("_class_name", "OutcomeHeads"))
    else:
        _edit_json(path / "model_index.json", lambda index: index.__setitem__("state", ["os", "system"]))
    with pytest.raises(ValueError, match="state"):
        load_state_predictors(path)
    with pytest.raises(ValueError, match="state"):
        WorldModelPipeline.from_pretrained(path)


def test_tampered_or_unlisted_state_files_are_refused(trained, tmp_path):
    path = tmp_path / "model"
    shutil.copytree(trained[0], path)
    weights = path / "state" / "pusht" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + bytes(byte ^ 0xFF for byte in weights.read_bytes()[-8:]))
    with pytest.raises(ValueError, match="SHA-256"):
        load_state_predictors(path)
    shutil.rmtree(path)
    shutil.copytree(trained[0], path)
    shutil.copytree(path / "state" / "other", path / "state" / "copied")  # added without rewriting the manifest
    with pytest.raises(ValueError, match="not in model_index.json"):
        load_state_predictors(path)
    with pytest.raises(ValueError, match="cannot name"):
        state_folder(path, "../escape")


def test_wrong_shapes_and_settings_raise():
    predictor = StatePredictor(in_channels=4, sample_size=[4, 6], state_dim=3, hidden_dim=8,
                               state_mean=[0.0, 1.0, 2.0], state_std=[1.0, 0.0, 2.0])
    assert predictor(torch.zeros(2, 4, 4, 6), torch.zeros(2, 3)).shape == (2, 3)
    assert predictor.scale[1] == MIN_STATE_STD  # a dimension that never changed
    # untrained, it repeats the previous state exactly
    np.testing.assert_allclose(predictor.predict(torch.randn(1, 4, 4, 6), [[5.0, 1.0, -3.0]]).numpy(), [[5, 1, -3]])
    carrying = StatePredictor(in_channels=4, sample_size=4, state_dim=3, hidden_dim=8, carried_dims=[1])
    torch.nn.init.normal_(carrying.head[-1].weight)  # as if trained: it changes the state
    moved = carrying.predict(torch.randn(2, 4, 4, 4), [[5.0, 1.25, -3.0], [0.0, -7.5, 2.0]]).numpy()
    np.testing.assert_array_equal(moved[:, 1], [1.25, -7.5])
    assert np.all(moved[:, [0, 2]] != [[5.0, -3.0], [0.0, 2.0]])
    clipped = StatePredictor(in_channels=4, sample_size=4, state_dim=3, hidden_dim=8, state_min=[0.0, -1.0, 2.0],
                             state_max=[1.0, 1.0, 2.0])
    torch.nn.init.normal_(clipped.head[-1].bias, std=100.0)  # a predictor that runs away
    bounded = clipped.predict(torch.randn(8, 4, 4, 4), torch.zeros(8, 3)).numpy()
    assert bounded.min(0).tolist() >= [0.0, -1.0, 2.0] and bounded.max(0).tolist() <= [1.0, 1.0, 2.0]
    for latents, previous, match in ((torch.zeros(2, 3, 4, 6), torch.zeros(2, 3), "latents"),
                                     (torch.zeros(2, 4, 4, 4), torch.zeros(2, 3), "latents"),
                                     (torch.zeros(4, 6), torch.zeros(2, 3), "latents"),
                                     (torch.zeros(2, 4, 4, 6), torch.zeros(2, 4), "previous_state"),
                                     (torch.zeros(2, 4, 4, 6), torch.zeros(3, 3), "previous_state"),
                                     (torch.zeros(2, 4, 4, 6), torch.zeros(3), "previous_state")):
        with pytest.raises(ValueError, match=match):
            predictor(latents, previous)
    with pytest.raises(ValueError, match="NaN"):
        predictor.predict(torch.zeros(1, 4, 4, 6), [[0.0, float("nan"), 0.0]])
    assert StatePredictor(in_channels=4, sample_size=[3, 5], state_dim=2)(torch.zeros(1, 4, 3, 5),
                                                                          torch.zeros(1, 2)).shape == (1, 2)
    for bad in ({"state_mean": [0.0, 1.0]}, {"state_std": [1.0, -1.0, 1.0]}, {"state_names": ["x"]},
                {"state_dim": 0}, {"sample_size": [4, 0]}, {"state_mean": [0.0, float("inf"), 0.0]},
                {"carried_dims": [3]}, {"carried_dims": [1, 1]}, {"state_min": [0.0, 0.0]},
                {"state_min": [0.0, 2.0, 0.0], "state_max": [1.0, 1.0, 1.0]}):
        with pytest.raises(ValueError):
            StatePredictor(**{"state_dim": 3, **bad})
    with pytest.raises(ValueError, match="previous_state_noise"):
        StateConfig(previous_state_noise=-0.1)
    with pytest.raises(ValueError, match="hidden_dim"):
        load_config(None, ["hidden_dim=0"], schema=StateConfig)


def test_train_state_cli_and_refusals(tiny_pipeline_path, square_dataset, tmp_path, capsys):
    output = tmp_path / "predictor"
    assert main(["train-state", "--model", str(tiny_pipeline_path), "--dataset", str(square_dataset),
                 "--val-dataset", str(square_dataset), "--output", str(output), "--steps", "5", "batch_size=8",
                 "hidden_dim=8"]) == 0
    printed = capsys.readouterr().out
    assert "copy the previous state" in printed and "closed loop over 14 held-out episodes" in printed
    report = json.loads((output / "metrics.json").read_text())
    assert report["config"]["batch_size"] == 8 and report["steps"] == 5 and report["val_frames"] == 14 * 29
    assert not (tiny_pipeline_path / "state").exists()  # --output leaves the model alone
    stateless = LeRobotDatasetWriter(tmp_path / "stateless", fps=10, robot_type="pusht")
    episode = square_episode(np.random.default_rng(1), 4)
    episode.state = None
    stateless.add_episode(episode)
    stateless.close()
    with pytest.raises(ValueError, match="observation.state"):
        train_state_predictor(tiny_pipeline_path, [tmp_path / "stateless"], steps=1, val_episodes=0,
                              output=tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="unknown embodiment"):
        train_state_predictor(tiny_pipeline_path, [square_dataset], embodiment="nowhere", output=tmp_path / "x",
                              progress=False)
    with pytest.raises(TypeError, match="hidden"):
        train_state_predictor(tiny_pipeline_path, [square_dataset], hiden_dim=3, progress=False)


def test_a_multi_camera_model_reads_the_state_from_its_composed_frames(tmp_path):
    """Two cameras side by side (a 16 x 32 frame, a 4 x 8 latent); the square is seen only by the second one."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from tests.conftest import randomize, tiny_autoencoder, tiny_transformer

    torch.manual_seed(0)
    cameras = ["observation.images.scene", "observation.images.wrist"]
    metadata = {"embodiment": "pusht", "env_id": None, "fps": 10, "image_size": [16, 32], "camera_keys": cameras,
                "window_size": 4, "num_inference_steps": 2, "context_noise": 0.05, "outcome_heads": False,
                "action_space": {"type": "Box", "low": [0.0, 0.0], "high": [512.0, 512.0], "shape": [2],
                                 "dtype": "float32"},
                "action_normalizer": {"min": [0.0, 0.0], "max": [512.0, 512.0]}}
    WorldModelPipeline(tiny_autoencoder(), randomize(tiny_transformer(sample_size=[4, 8])),
                       FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000), metadata, None
                       ).save_pretrained(tmp_path / "model")
    writer = LeRobotDatasetWriter(tmp_path / "data", fps=10, robot_type="pusht")
    rng = np.random.default_rng(0)
    for _ in range(8):
        episode = square_episode(rng, 20)
        writer.add_episode(Episode(frames=None, images={cameras[0]: np.full_like(episode.frames, 20),
                                                        cameras[1]: episode.frames},
                                   action=episode.action, reward=episode.reward, terminated=episode.terminated,
                                   truncated=episode.truncated, state=episode.state))
    writer.close()
    report = train_state_predictor(tmp_path / "model", [tmp_path / "data"], steps=300, batch_size=64,
                                   learning_rate=2e-3, hidden_dim=16, val_episodes=2, action_input=False,
                                   latent_noise=0.0, progress=False)  # what the frames alone tell
    held = report["held_out"]
    assert all(held["mae_per_dim"][dim] < 0.5 * held["copy_previous"]["mae_per_dim"][dim] for dim in (0, 1)), held
    predictor = load_state_predictors(tmp_path / "model")["pusht"]
    assert predictor.config.sample_size == [4, 8] and predictor.latent_size == (4, 8)


def test_train_state_settings_come_from_defaults_file_flags_and_overrides(tmp_path):
    from worldsim.cli.main import build_parser
    from worldsim.cli.training import _verb_config

    args = build_parser().parse_args(["train-state", "--model", "m", "--dataset", "d"])
    assert _verb_config(args, StateConfig) == StateConfig() and args.embodiment is None
    preset = tmp_path / "state.yaml"
    preset.write_text("steps: 50\nprevious_state_noise: 0.3\nhidden_dim: 8\n")
    args = build_parser().parse_args(["train-state", "--model", "m", "--dataset", "d", "--config", str(preset),
                                      "--hidden-dim", "16", "--embodiment", "arm", "seed=3"])
    assert _verb_config(args, StateConfig) == StateConfig(steps=50, previous_state_noise=0.3, hidden_dim=16, seed=3)
    assert args.embodiment == "arm"
    args = build_parser().parse_args(["train-state", "--model", "m", "--dataset", "d", "--steps", "5", "steps=6"])
    with pytest.raises(ValueError, match="both"):
        _verb_config(args, StateConfig)


@pytest.fixture(scope="module")
def odometer_dataset(tmp_path_factory):
    """The squares plus a fifth state dimension no frame shows but the action sets: the previous action's first
    coordinate divided by 512 (an arm's commanded velocity, say)."""
    root = tmp_path_factory.mktemp("state-data") / "odometer"
    writer = LeRobotDatasetWriter(root, fps=10, robot_type="pusht")
    rng = np.random.default_rng(1)
    for _ in range(14):
        episode = square_episode(rng, 30)
        commanded = np.concatenate([[0.0], episode.action[:-1, 0] / 512.0]).astype(np.float32)
        episode.state = np.concatenate([episode.state, commanded[:, None]], axis=1)
        writer.add_episode(episode)
    writer.close()
    return root


def test_a_predictor_that_reads_the_action_learns_what_only_the_action_tells(tiny_pipeline_path, odometer_dataset,
                                                                            tmp_path):
    settings = dict(steps=400, batch_size=64, learning_rate=2e-3, hidden_dim=16, val_episodes=3, progress=False)
    blind = train_state_predictor(tiny_pipeline_path, [odometer_dataset], output=tmp_path / "blind",
                                  action_input=False, latent_noise=0.0, **settings)
    acting = train_state_predictor(tiny_pipeline_path, [odometer_dataset], output=tmp_path / "acting",
                                   action_input=True, latent_noise=0.5, **settings)
    # the commanded value is uniform in [0, 1) (mean error about 1/3 without the action); the action gives it
    assert blind["held_out"]["mae_per_dim"][4] > 0.2, blind["held_out"]
    assert acting["held_out"]["mae_per_dim"][4] < 0.5 * blind["held_out"]["mae_per_dim"][4], acting["held_out"]
    assert acting["closed_loop"]["mean"]["mae_per_dim"][4] < 0.5 * blind["closed_loop"]["mean"]["mae_per_dim"][4]
    assert acting["config"]["action_input"] and acting["config"]["latent_noise"] == 0.5
    assert acting["imagined_frames"] == 0

    # trained on imagined frames only: the tiny model's frames are noise, so what it learns of the commanded value
    # comes from the actions paired with them, which must be the ones that produced each imagined frame
    imagined = train_state_predictor(tiny_pipeline_path, [odometer_dataset], output=tmp_path / "imagined",
                                     action_input=True, imagined_fraction=1.0, imagined_horizon=6,
                                     imagined_context=2, **settings)
    assert imagined["imagined_frames"] == 11 * 6 and imagined["imagined_seconds"] > 0  # 3 episodes held out
    assert imagined["imagined_cached_datasets"] == 0
    # a second run with other predictor settings reads the same imagined frames from the dataset's cache
    again = train_state_predictor(tiny_pipeline_path, [odometer_dataset], output=tmp_path / "again",
                                  action_input=True, imagined_fraction=1.0, imagined_horizon=6, imagined_context=2,
                                  **{**settings, "steps": 20})
    assert again["imagined_cached_datasets"] == 1 and again["imagined_frames"] == 11 * 6
    assert imagined["held_out"]["mae_per_dim"][4] < 0.5 * blind["held_out"]["mae_per_dim"][4], imagined["held_out"]
    with pytest.raises(ValueError, match="imagined_horizon"):
        train_state_predictor(tiny_pipeline_path, [odometer_dataset], output=tmp_path / "long",
                              imagined_fraction=0.5, imagined_horizon=40, **settings)

    predictor = StatePredictor.from_pretrained(tmp_path / "acting")
    assert predictor.action_dim == 2 and len(predictor.config.action_mean) == 2
    assert StatePredictor.from_pretrained(tmp_path / "blind").action_dim == 0
    latents, previous = torch.randn(3, 4, 4, 4), torch.zeros(3, 5)
    with pytest.raises(ValueError, match="reads the action"):
        predictor.predict(latents, previous)
    with pytest.raises(ValueError, match="reads the action"):
        predictor.predict(latents, previous, np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        predictor.predict(latents, previous, np.full((3, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="reads no action"):
        StatePredictor.from_pretrained(tmp_path / "blind").predict(latents, previous, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="action"):
        rollout_states(predictor, [latents], previous[:1].numpy())  # no actions for a predictor that reads them

    # in a pipeline, every imagined step hands the predictor the action that produced the frame
    model = tmp_path / "model"
    shutil.copytree(tiny_pipeline_path, model)
    save_state_predictors({"pusht": predictor}, model)
    pipeline = WorldModelPipeline.from_pretrained(model)
    frames = np.full((2, 2, SIZE, SIZE, 3), 20, np.uint8)
    start = np.array([[4.0, 8.0, 0.3, 0.5, 0.1], [0.0, 4.0, -0.2, 0.5, 0.9]], np.float32)
    state = pipeline.encode_context(frames, np.full((2, 1, 2), 256.0, np.float32), observation_state=start)
    action = np.array([[500.0, 10.0], [20.0, 300.0]], np.float32)
    stepped = pipeline.step(state.clone(), action, generator=torch.Generator().manual_seed(0))
    expected = predictor.predict(stepped.frame_latents, start, action)
    torch.testing.assert_close(stepped.observation_state, expected)
    assert stepped.observation_state[0, 4] > stepped.observation_state[1, 4] + 0.3  # 500 / 512 against 20 / 512
    # a NaN action is refused before the rollout's cache moves: the state can still be stepped
    with pytest.raises(ValueError, match="NaN"):
        pipeline.step(state, np.array([[np.nan, 1.0], [2.0, 3.0]], np.float32))
    assert not state.is_stale
    pipeline.step(state, action)
    # a predictor must read the embodiment's action width
    wide = StatePredictor(in_channels=4, sample_size=4, state_dim=5, action_dim=3)
    with pytest.raises(ValueError, match="3 action dimensions"):
        WorldModelPipeline(pipeline.autoencoder, pipeline.transformer, pipeline.scheduler, pipeline.metadata,
                           state_predictors={"pusht": wide})


def test_imagined_pairs_are_cached_under_a_digest_of_what_they_depend_on(tiny_pipeline_path, odometer_dataset,
                                                                           tmp_path, monkeypatch):
    from worldsim.data.lerobot import LeRobotDataset
    from worldsim.evaluation import fidelity
    from worldsim.training.train_state import dataset_states, imagined_pairs

    pipeline = WorldModelPipeline.from_pretrained(tiny_pipeline_path)
    dataset = LeRobotDataset(odometer_dataset)
    states = dataset_states(dataset)

    def pairs(seed=0):
        return imagined_pairs(pipeline, dataset, states, 4, 2, np.random.default_rng(0), seed=seed, progress=False,
                              cache_dir=tmp_path / "cache")

    first = pairs()
    assert not first["cached"] and len(list((tmp_path / "cache").glob("imagined_*.npy"))) == 1
    calls = []
    imagine = fidelity.imagine_windows
    monkeypatch.setattr(fidelity, "imagine_windows", lambda *args, **kwargs: calls.append(1) or imagine(*args, **kwargs))
    again = pairs()
    assert again["cached"] and not calls  # read back, not imagined
    for key in ("latents", "previous", "target", "action"):
        np.testing.assert_array_equal(again[key], first[key])
    # another seed or other weights imagine afresh, into another file
    other = pairs(seed=1)
    assert not other["cached"] and len(calls) == 1 and not np.array_equal(other["latents"], first["latents"])
    with torch.no_grad():
        next(pipeline.transformer.parameters()).add_(0.01)
    assert not pairs()["cached"] and len(calls) == 2
    files = sorted((tmp_path / "cache").glob("imagined_*.npy"))
    assert len(files) == 3 and not list((tmp_path / "cache").glob("*.partial.npy"))
    # a cache file that does not hold the windows asked for is refused, naming it
    for path in files:
        np.save(path, np.zeros((2, 3, 4, 4, 4), np.float16))
    with pytest.raises(ValueError, match="delete the file"):
        pairs()


def test_state_settings_refuse_negative_latent_noise_and_action_stats_without_actions():
    with pytest.raises(ValueError, match="latent_noise"):
        StateConfig(latent_noise=-0.5)
    with pytest.raises(ValueError, match="imagined_fraction"):
        StateConfig(imagined_fraction=1.5)
    with pytest.raises(ValueError, match="imagined_horizon"):
        StateConfig(imagined_horizon=0)
    with pytest.raises(ValueError, match="rounds to no imagined frame"):
        StateConfig(batch_size=8, imagined_fraction=0.05)
    with pytest.raises(ValueError, match="action_dim"):
        StatePredictor(state_dim=2, action_mean=[0.0])
    with pytest.raises(ValueError, match="action_dim"):
        StatePredictor(state_dim=2, action_dim=-1)
    with pytest.raises(ValueError, match="action_std"):
        StatePredictor(state_dim=2, action_dim=2, action_std=[1.0])
