"""Property-based tests (hypothesis): every bad input is refused with a clear error and changes nothing.

Each test draws inputs from a space much larger than the valid one (shapes, dtypes, NaN/inf, huge and negative
values, wrong embodiments, corrupted files) and checks the contract of docs/reliability.md: a valid input is
accepted; an invalid one raises ``ValueError`` (``DatasetError`` for datasets) whose message names the value or the
file, and the object's state afterwards is exactly what it was before.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from worldsim.data.lerobot import DatasetError, Episode, LeRobotDataset, LeRobotDatasetWriter
from worldsim.envs import WorldModelEnv, WorldModelVectorEnv
from worldsim.pipelines.world_model import WorldModelPipeline

from tests.test_data import synthetic_episode, write_synthetic

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int8, np.uint8, np.bool_, np.complex64,
                          np.str_, object])
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
special = st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30, -1.0, 0.0, 256.0, 511.9, 512.0, 512.5])


@st.composite
def actions(draw):
    """Anything a caller might pass as a PushT action: mostly malformed, sometimes valid."""
    kind = draw(st.sampled_from(["array", "valid", "special", "scalar", "list", "text", "none", "dict"]))
    if kind == "valid":
        return draw(hnp.arrays(np.float32, (2,), elements=st.floats(0, 512, width=32)))
    if kind == "special":
        value = draw(hnp.arrays(np.float64, (2,), elements=st.floats(0, 512)))
        value[draw(st.integers(0, 1))] = draw(special)
        return value
    if kind == "scalar":
        return draw(st.one_of(st.integers(-10, 600), st.floats(allow_nan=True, allow_infinity=True)))
    if kind == "list":
        return draw(st.lists(st.floats(-10, 600), min_size=0, max_size=4))
    if kind == "text":
        return draw(st.text(max_size=5))
    if kind == "none":
        return None
    if kind == "dict":
        return {"action": [1.0, 2.0]}
    dtype = draw(dtypes)
    shape = draw(shapes)
    if dtype in (np.str_, object):
        return np.full(shape, "x", dtype=dtype)
    return draw(hnp.arrays(dtype, shape))


def _valid_pusht_action(action) -> bool:
    try:
        array = np.asarray(action)
    except Exception:
        return False
    if array.dtype == object or array.shape != (2,) or array.dtype.kind not in "fiub":
        return False
    array = array.astype(np.float64)
    return bool(np.all(np.isfinite(array)) and np.all(array >= 0) and np.all(array.astype(np.float32) <= 512))


def _snapshot(env: WorldModelEnv) -> tuple:
    state = env._state
    return (state.num_steps, state.latents.clone(), state.action.clone(), env._generator.get_state().clone(),
            None if state.cache is None else state.cache.frames_seen, env._frame.copy())


def _same(a: tuple, b: tuple) -> bool:
    return all(torch.equal(x, y) if torch.is_tensor(x) else np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline_path):
    return WorldModelPipeline.from_pretrained(tiny_pipeline_path)


def test_env_step_refuses_every_bad_action_and_changes_nothing(pipeline):
    env = WorldModelEnv(pipeline)
    env.reset(seed=0)
    counts = {"accepted": 0, "refused": 0}

    @SETTINGS
    @given(actions())
    def check(action):
        before = _snapshot(env)
        if _valid_pusht_action(action):
            env.step(action)
            counts["accepted"] += 1
            return
        with pytest.raises(ValueError, match="action"):
            env.step(action)
        assert _same(before, _snapshot(env))
        counts["refused"] += 1

    check()
    print(f"env actions: {counts}")
    assert counts["refused"] > 20 and counts["accepted"] > 0


@st.composite
def contexts(draw):
    """options['context'] for reset: frame stacks and actions with random defects."""
    n = draw(st.integers(0, 4))
    side = draw(st.sampled_from([16, 24, 7]))
    width = draw(st.sampled_from([side, side, side + 1]))
    channels = draw(st.sampled_from([3, 3, 1, 4]))
    dtype = draw(st.sampled_from([np.uint8, np.uint8, np.float32, np.int64]))
    frames = np.zeros((n, side, width, channels), dtype=dtype)
    action_rows = draw(st.sampled_from([max(n - 1, 0), max(n - 1, 0), n, n + 2]))
    action_dim = draw(st.sampled_from([2, 2, 1, 3]))
    action = np.full((action_rows, action_dim), 100.0)
    if action.size and draw(st.booleans()):
        action.flat[draw(st.integers(0, action.size - 1))] = draw(st.sampled_from([np.nan, np.inf]))
    context = {"observation.image": frames, "action": action}
    if draw(st.integers(0, 9)) == 0:
        context = draw(st.sampled_from([None, [frames], {"frames": frames}, "frames"]))
    return context


def _valid_context(context) -> bool:
    if not isinstance(context, dict) or "observation.image" not in context:
        return False
    frames, action = context["observation.image"], context["action"]
    return (frames.dtype == np.uint8 and frames.ndim == 4 and len(frames) >= 1 and frames.shape[-1] == 3
            and frames.shape[1] == frames.shape[2] and action.shape == (len(frames) - 1, 2)
            and bool(np.all(np.isfinite(action))))


def test_env_reset_refuses_every_bad_context_and_keeps_the_episode(pipeline):
    env = WorldModelEnv(pipeline)
    env.reset(seed=0)
    env.step(np.array([100.0, 100.0], np.float32))
    counts = {"accepted": 0, "refused": 0}

    @SETTINGS
    @given(contexts())
    def check(context):
        if context is None:  # None means "no context": the bundled start set, a valid reset
            return
        before = _snapshot(env)
        if _valid_context(context):
            env.reset(seed=1, options={"context": context})
            counts["accepted"] += 1
            return
        with pytest.raises(ValueError, match="context"):
            env.reset(seed=1, options={"context": context})
        assert _same(before, _snapshot(env))
        counts["refused"] += 1

    check()
    print(f"reset contexts: {counts}")
    assert counts["refused"] > 20 and counts["accepted"] > 0


def test_vector_env_refuses_bad_batches_and_changes_nothing(pipeline):
    envs = WorldModelVectorEnv(pipeline, num_envs=3)
    envs.reset(seed=0)
    counts = {"refused": 0}

    @SETTINGS
    @given(st.lists(actions(), min_size=0, max_size=4))
    def check(batch):
        before = (envs._state.num_steps, envs._state.latents.clone(), envs._generator.get_state().clone())
        try:
            array = np.asarray(batch, dtype=np.float64)
            valid = array.shape == (3, 2) and all(_valid_pusht_action(row) for row in array)
        except (ValueError, TypeError):
            valid = False
        if valid:
            return  # valid batches are exercised by the vector env's own tests
        with pytest.raises(ValueError):
            envs.step(batch)
        after = (envs._state.num_steps, envs._state.latents, envs._generator.get_state())
        assert before[0] == after[0] and torch.equal(before[1], after[1]) and torch.equal(before[2], after[2])
        counts["refused"] += 1

    check()
    print(f"vector env batches: {counts}")
    assert counts["refused"] > 30


@st.composite
def episodes(draw):
    """Episode fields with random defects: lengths, dtypes, dimensions, NaN."""
    length = draw(st.integers(1, 6))
    frames = np.zeros((draw(st.sampled_from([length, length, length + 1, 0])), 16, 16,
                       draw(st.sampled_from([3, 3, 1]))), dtype=draw(st.sampled_from([np.uint8, np.uint8, np.float32])))
    action = np.full((draw(st.sampled_from([length, length, length - 1])), draw(st.sampled_from([2, 2, 3]))), 1.0)
    reward = np.zeros(draw(st.sampled_from([length, length, length + 2])), np.float32)
    if draw(st.booleans()) and action.size:
        action.flat[0] = draw(st.sampled_from([np.nan, np.inf, 5.0]))
    if draw(st.integers(0, 5)) == 0:
        reward[:] = np.nan
    return dict(frames=frames, action=action, reward=reward, terminated=np.zeros(len(reward), bool),
                truncated=np.zeros(len(reward), bool), task="t")


def test_dataset_writer_refuses_bad_episodes_and_keeps_the_dataset(tmp_path):
    writer = LeRobotDatasetWriter(tmp_path / "ds", fps=10)
    writer.add_episode(synthetic_episode(4, 0, size=16))
    counts = {"accepted": 0, "refused": 0}

    @SETTINGS
    @given(episodes())
    def check(fields):
        before = (writer.num_episodes, writer.total_frames, sorted(p.name for p in (tmp_path / "ds").rglob("*")))
        try:
            episode = Episode(**fields)
            writer.add_episode(episode)
            counts["accepted"] += 1
            return
        except ValueError as error:
            assert any(word in str(error) for word in ("frames", "action", "reward", "episode", "field")), error
        counts["refused"] += 1
        assert (writer.num_episodes, writer.total_frames,
                sorted(p.name for p in (tmp_path / "ds").rglob("*"))) == before

    check()
    print(f"episodes: {counts}")
    writer.close()
    dataset = LeRobotDataset(tmp_path / "ds")
    assert dataset.num_episodes == 1 + counts["accepted"] and counts["refused"] > 20


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("clean") / "ds")


@st.composite
def corruptions(draw):
    """One defect in one file of a valid dataset: deletion, truncation, a JSON edit or a parquet column edit."""
    kind = draw(st.sampled_from(["delete", "truncate", "info", "episodes", "data"]))
    if kind in ("delete", "truncate"):
        target = draw(st.sampled_from(["meta/info.json", "meta/stats.json", "meta/episodes/chunk-000/file-000.parquet",
                                       "data/chunk-000/file-001.parquet", "videos/observation.image/chunk-000/file-002.mp4"]))
        return kind, target, draw(st.floats(0.0, 0.95))
    if kind == "info":
        key = draw(st.sampled_from(["fps", "features", "data_path", "total_frames", "total_episodes", "codebase_version"]))
        value = draw(st.sampled_from(["delete", "ten", -1, None, [], 10**9, 2]))
        return kind, key, value
    column = draw(st.sampled_from(["length", "episode_index", "dataset_from_index"] if kind == "episodes"
                                  else ["episode_index", "action"]))
    return kind, column, draw(st.integers(0, 2))


def test_corrupted_datasets_are_refused_with_the_file_named(clean_dataset, tmp_path_factory):
    counts = {"refused": 0, "still_valid": 0}

    @SETTINGS
    @given(corruptions())
    def check(corruption):
        root = tmp_path_factory.mktemp("bad") / "ds"
        shutil.copytree(clean_dataset, root)
        kind, target, value = corruption
        if kind == "delete":
            (root / target).unlink()
        elif kind == "truncate":
            data = (root / target).read_bytes()
            (root / target).write_bytes(data[: int(len(data) * value)])
        elif kind == "info":
            info = json.loads((root / "meta/info.json").read_text())
            if value == "delete":
                info.pop(target)
            else:
                info[target] = value
            (root / "meta/info.json").write_text(json.dumps(info))
        else:
            path = root / ("meta/episodes/chunk-000/file-000.parquet" if kind == "episodes"
                           else "data/chunk-000/file-000.parquet")
            table = pq.read_table(path)
            rows = table.to_pylist()
            row = rows[min(value, len(rows) - 1)]
            row[target] = [1.0, 2.0, 3.0] if target == "action" else row[target] + 5
            pq.write_table(type(table).from_pylist(rows), path)
        try:
            dataset = LeRobotDataset(root)
            for episode in range(dataset.num_episodes):  # a truncated video is found when decoded
                dataset.decode_episode(episode)
        except (DatasetError, ValueError) as error:
            message = str(error)
            assert str(root) in message or "meta/" in message or ".mp4" in message or ".parquet" in message, message
            counts["refused"] += 1
            return
        # a defect the reader may tolerate: it must then still read the exact same data
        reference = LeRobotDataset(clean_dataset)
        np.testing.assert_array_equal(dataset.action, reference.action)
        assert dataset.num_episodes == reference.num_episodes
        counts["still_valid"] += 1

    check()
    print(f"corrupted datasets: {counts}")
    assert counts["refused"] > 30
