import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from worldsim.constants import ACTION, OBS_ENV_STATE
from worldsim.data.clips import ActionNormalizer, ClipDataset, clip_starts
from worldsim.data.frame_cache import load_frame_cache
from worldsim.data.lerobot import (
    DatasetError,
    Episode,
    LeRobotDataset,
    LeRobotDatasetWriter,
    RunningStats,
    copy_first_episodes,
)


def synthetic_episode(length: int, offset: int, size: int = 32) -> Episode:
    frames = np.zeros((length, size, size, 3), np.uint8)
    for t in range(length):
        frames[t, :, :, 0] = (offset + t) * 5 % 256  # frame t is identifiable by its red level
        frames[t, t % size, :, 1] = 200
    action = np.stack([np.arange(length) + offset, -np.arange(length)], 1).astype(np.float32)
    return Episode(frames=frames, action=action, reward=np.linspace(0, 1, length, dtype=np.float32),
                   terminated=np.r_[np.zeros(length - 1, bool), True], truncated=np.zeros(length, bool),
                   success=np.zeros(length, bool), task="synthetic")


def write_synthetic(root, lengths=(12, 9, 15)):
    writer = LeRobotDatasetWriter(root, fps=10, robot_type="synthetic")
    offset = 0
    for length in lengths:
        writer.add_episode(synthetic_episode(length, offset))
        offset += length
    return writer.close()


def test_round_trip_through_lerobot_layout(tmp_path):
    root = write_synthetic(tmp_path / "ds")
    for relative in ("meta/info.json", "meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet",
                     "data/chunk-000/file-000.parquet", "videos/observation.image/chunk-000/file-000.mp4"):
        assert (root / relative).is_file(), relative
    dataset = LeRobotDataset(root)
    assert dataset.num_episodes == 3 and dataset.num_frames == 36
    assert dataset.info["codebase_version"] == "v3.0"
    np.testing.assert_array_equal(dataset.episode_from, [0, 12, 21])
    offset = 0
    for episode, length in enumerate((12, 9, 15)):
        original = synthetic_episode(length, offset)
        frames = dataset.decode_episode(episode)
        assert frames.shape == original.frames.shape
        assert np.abs(frames.astype(int) - original.frames.astype(int)).mean() < 2.0  # lossy codec, near-exact
        np.testing.assert_array_equal(dataset.action[dataset.episode_slice(episode)], original.action)
        offset += length
    tasks = pq.read_table(root / "meta/tasks.parquet").to_pylist()
    assert tasks == [{"task": "synthetic", "task_index": 0}]


def test_writer_stats_equal_numpy_over_every_episode(tmp_path):
    # the writer merges per-episode moments (so a long recording stays linear); the result must equal numpy's
    # statistics over all frames, and the image statistics over the frames it samples (every length // 8-th)
    lengths = (12, 9, 15, 40)
    root = write_synthetic(tmp_path / "ds", lengths)
    stats = json.loads((root / "meta/stats.json").read_text())
    episodes, offset = [], 0
    for length in lengths:
        episodes.append(synthetic_episode(length, offset))
        offset += length
    action = np.concatenate([e.action for e in episodes]).astype(np.float64)
    reward = np.concatenate([e.reward for e in episodes]).astype(np.float64)
    for key, values in ((ACTION, action), ("next.reward", reward[:, None])):
        np.testing.assert_allclose(stats[key]["mean"], values.mean(0), rtol=1e-12)
        np.testing.assert_allclose(stats[key]["std"], values.std(0), rtol=1e-9)
        np.testing.assert_array_equal(stats[key]["min"], values.min(0))
        np.testing.assert_array_equal(stats[key]["max"], values.max(0))
        assert stats[key]["count"] == [len(values)]
    pixels = np.concatenate([e.frames[:: max(1, len(e.frames) // 8)] for e in episodes]).reshape(-1, 3) / 255.0
    image = stats["observation.image"]
    np.testing.assert_allclose(np.ravel(image["mean"]), pixels.mean(0), rtol=1e-10)
    np.testing.assert_allclose(np.ravel(image["std"]), pixels.std(0), rtol=1e-8, atol=1e-12)
    assert image["count"] == [len(pixels)]


def test_running_stats_merge_and_refusals():
    rng = np.random.default_rng(0)
    rows = rng.normal(300.0, 5.0, size=(1000, 3))  # a large mean: the naive sum-of-squares formula loses digits here
    moments = RunningStats()
    for part in np.array_split(rows, [1, 7, 500, 999]):
        moments.update(part)
    merged = moments.as_dict()
    np.testing.assert_allclose(merged["std"], rows.std(0), rtol=1e-10)
    np.testing.assert_allclose(merged["mean"], rows.mean(0), rtol=1e-13)
    with pytest.raises(ValueError, match="width 2 differ"):
        moments.update(rows[:4, :2])
    assert moments.as_dict() == merged  # the refused rows left the statistics unchanged
    with pytest.raises(ValueError, match="no rows"):
        RunningStats().as_dict()


def test_writer_leaves_nothing_when_aborted_before_the_first_episode(tmp_path):
    writer = LeRobotDatasetWriter(tmp_path / "ds", fps=10)
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_writer_keeps_completed_episodes_when_aborted(tmp_path):
    writer = LeRobotDatasetWriter(tmp_path / "ds", fps=10)
    writer.add_episode(synthetic_episode(5, 0))
    writer.add_episode(synthetic_episode(7, 5))
    writer.abort()
    dataset = LeRobotDataset(tmp_path / "ds")
    assert dataset.num_episodes == 2 and dataset.num_frames == 12
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temporary folder left beside it


def test_clip_alignment_action_t_produces_frame_t_plus_1(tmp_path):
    dataset = LeRobotDataset(write_synthetic(tmp_path / "ds"))
    frames = load_frame_cache(dataset, 32, progress=False)
    clips = ClipDataset(frames, dataset.action, dataset.episode_from, dataset.episode_to, num_frames=4)
    assert len(clips) == (12 - 3) + (9 - 3) + (15 - 3)  # clips never cross episode boundaries
    item = clips[5]
    start = item["index"]
    # frame t of the clip is dataset frame start + t, and its action is the action recorded with that frame
    np.testing.assert_array_equal(item["action"].numpy()[:, 0], np.arange(start, start + 4))
    reds = item["frames"].numpy()[:, 0, 0, 0].astype(int)
    assert np.all(np.abs(reds - (np.arange(start, start + 4) * 5 % 256)) <= 3)


def test_real_pusht_alignment(pusht_dataset):
    """In real PushT data, action[t] (the agent's target) is reached in frame t + 1, not in frame t."""
    dataset = LeRobotDataset(pusht_dataset)
    agent = dataset.columns[OBS_ENV_STATE][:, :2]
    closer = []
    for episode in range(dataset.num_episodes):
        s = dataset.episode_slice(episode)
        action, position = dataset.action[s], agent[s]
        before = np.linalg.norm(position[:-1] - action[:-1], axis=1)
        after = np.linalg.norm(position[1:] - action[:-1], axis=1)
        closer.append(after < before)
    assert np.mean(np.concatenate(closer)) > 0.8


def test_action_normalizer_round_trip():
    normalizer = ActionNormalizer([0, 0], [512, 512])
    actions = np.array([[0, 512], [256, 128]], np.float32)
    normalized = normalizer.normalize(actions)
    np.testing.assert_allclose(normalized, [[-1, 1], [0, -0.5]])
    np.testing.assert_allclose(normalizer.unnormalize(normalized), actions, atol=1e-4)
    with pytest.raises(ValueError, match="below min"):
        ActionNormalizer([1.0], [0.0])


def test_clip_starts_errors_when_episodes_too_short():
    with pytest.raises(ValueError, match="no episode has 10 frames"):
        clip_starts(np.array([0]), np.array([5]), 10)


def _edit_parquet(path, column, function):
    table = pq.read_table(path)
    values = function(table[column].to_pylist())
    index = table.column_names.index(column)
    pq.write_table(table.set_column(index, column, pa.array(values, type=table.schema.field(column).type)), path)


def test_corrupt_datasets_name_file_and_field(tmp_path):
    root = write_synthetic(tmp_path / "ds")
    dataset_copy = lambda name: __import__("shutil").copytree(root, tmp_path / name)

    missing_video = dataset_copy("missing_video")
    (missing_video / "videos/observation.image/chunk-000/file-000.mp4").unlink()
    with pytest.raises(DatasetError, match=r"video file missing: .*file-000\.mp4"):
        LeRobotDataset(missing_video)

    bad_length = dataset_copy("bad_length")
    _edit_parquet(bad_length / "meta/episodes/chunk-000/file-000.parquet", "length", lambda v: [v[0] + 1, *v[1:]])
    with pytest.raises(DatasetError, match=r"file-000\.parquet.*'length'"):
        LeRobotDataset(bad_length)

    bad_rows = dataset_copy("bad_rows")
    _edit_parquet(bad_rows / "data/chunk-000/file-000.parquet", "episode_index", lambda v: [1 if i == 0 else x for i, x in enumerate(v)])
    with pytest.raises(DatasetError, match=r"data/chunk-000/file-000\.parquet: episode 0 has 11 rows.*'length'"):
        LeRobotDataset(bad_rows)

    bad_dim = dataset_copy("bad_dim")
    info = json.loads((bad_dim / "meta/info.json").read_text())
    info["features"][ACTION]["shape"] = [3]
    (bad_dim / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"column 'action' has dimension 2, meta/info.json says 3"):
        LeRobotDataset(bad_dim)

    gap = dataset_copy("gap")
    _edit_parquet(gap / "meta/episodes/chunk-000/file-000.parquet", "episode_index", lambda v: [0, 1, 3])
    with pytest.raises(DatasetError, match=r"'episode_index' has gaps"):
        LeRobotDataset(gap)

    no_info = dataset_copy("no_info")
    (no_info / "meta/info.json").unlink()
    with pytest.raises(DatasetError, match=r"metadata file missing: .*info\.json"):
        LeRobotDataset(no_info)


def test_truncated_video_is_reported(tmp_path):
    root = write_synthetic(tmp_path / "ds")
    video = root / "videos/observation.image/chunk-000/file-002.mp4"
    video.write_bytes(video.read_bytes()[: len(video.read_bytes()) // 3])
    dataset = LeRobotDataset(root)
    with pytest.raises(ValueError, match=r"file-002\.mp4"):
        dataset.decode_episode(2)


def test_writer_refuses_existing_folder(tmp_path):
    (tmp_path / "ds").mkdir()
    with pytest.raises(FileExistsError, match="exists already"):
        LeRobotDatasetWriter(tmp_path / "ds", fps=10)


def test_opencv_decoder_gives_pyav_frames(tmp_path, monkeypatch):
    """Where PyAV is missing, OpenCV decodes the same frames (episodes start mid-file in older datasets)."""
    import worldsim.data.video as video

    writer = video.VideoWriter(tmp_path / "v.mp4", fps=10)
    frames = np.concatenate([synthetic_episode(15, 0).frames, synthetic_episode(12, 15).frames])
    writer.write(frames)
    writer.close()
    expected = video.decode_video(tmp_path / "v.mp4", 9, 14)

    def no_pyav():
        raise ImportError("no av")

    monkeypatch.setattr(video, "_pyav", no_pyav)
    np.testing.assert_array_equal(video.decode_video(tmp_path / "v.mp4", 9, 14), expected)
    with pytest.raises(ValueError, match=r"asked for frames \[20, 40\)"):
        video.decode_video(tmp_path / "v.mp4", 20, 20)


def test_copy_first_episodes_is_the_source_cut_at_an_episode(tmp_path):
    source_root = write_synthetic(tmp_path / "ds", (12, 9, 15, 7))
    (source_root / "cache").mkdir()
    (source_root / "cache" / "frames.npy").write_bytes(b"x" * 100)
    source = LeRobotDataset(source_root)
    copy = LeRobotDataset(copy_first_episodes(source_root, tmp_path / "head", 2))
    assert copy.num_episodes == 2 and copy.num_frames == 21 and copy.info["splits"] == {"train": "0:2"}
    np.testing.assert_array_equal(copy.action, source.action[:21])
    np.testing.assert_array_equal(copy.columns["next.reward"], source.columns["next.reward"][:21])
    for episode in range(2):  # the video files are the source's, byte for byte: the same decoded frames
        np.testing.assert_array_equal(copy.decode_episode(episode), source.decode_episode(episode))
    assert not (tmp_path / "head" / "cache").exists()
    assert not (tmp_path / "head" / "data/chunk-000/file-002.parquet").exists()
    stats = json.loads((tmp_path / "head" / "meta/stats.json").read_text())
    assert stats["action"]["count"] == [21] and stats["action"]["max"] == source.action[:21].max(0).tolist()
    assert stats["observation.image"] == source.stats["observation.image"]  # sampled image statistics: the source's
    # the whole dataset copied gives the recorder's own statistics back
    whole = json.loads((copy_first_episodes(source_root, tmp_path / "all", 4) / "meta/stats.json").read_text())
    for key in ("action", "next.reward"):
        for moment in ("min", "max", "mean", "std", "count"):
            np.testing.assert_allclose(whole[key][moment], source.stats[key][moment], rtol=1e-9, err_msg=key)


def test_copy_first_episodes_refuses_bad_requests_and_leaves_nothing(tmp_path):
    source_root = write_synthetic(tmp_path / "ds", (12, 9))
    for bad in (0, 3, 1.5, True):
        with pytest.raises(ValueError, match=rf"num_episodes must be an integer in \[1, 2\].*got {bad!r}"):
            copy_first_episodes(source_root, tmp_path / "out", bad)
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="taken exists already"):
        copy_first_episodes(source_root, tmp_path / "taken", 1)
    with pytest.raises(DatasetError, match="dataset folder missing"):
        copy_first_episodes(tmp_path / "nowhere", tmp_path / "out", 1)
    # a layout with two episodes in one data file cannot be cut between them
    data = source_root / "data/chunk-000"
    pq.write_table(pa.concat_tables([pq.read_table(data / "file-000.parquet"), pq.read_table(data / "file-001.parquet")]),
                   data / "file-000.parquet")
    (data / "file-001.parquet").unlink()
    _edit_parquet(source_root / "meta/episodes/chunk-000/file-000.parquet", "data/file_index", lambda v: [0 for _ in v])
    assert LeRobotDataset(source_root).num_frames == 21  # a readable dataset in LeRobot's shared-file layout
    with pytest.raises(DatasetError, match=r"file-000\.parquet holds frames of episodes on both sides of episode 1"):
        copy_first_episodes(source_root, tmp_path / "out", 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "taken"]


def test_pack_gpu_data_keeps_one_fraction_of_episodes_within_the_budget(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("pack_gpu_data", Path(__file__).parents[1] / "tools/pack_gpu_data.py")
    pack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack)
    whole = write_synthetic(tmp_path / "small", (10, 10))
    cut = [write_synthetic(tmp_path / name, (12,) * 10) for name in ("a", "b")]
    sizes = [pack.episode_bytes(LeRobotDataset(root)) for root in cut]
    fixed = sum(pack.episode_bytes(LeRobotDataset(whole))) + sum(
        pack.meta_bytes(LeRobotDataset(root)) for root in (whole, *cut))
    budget = fixed + sum(sum(size[:6]) for size in sizes) + 1  # room for 6 episodes of each, not for 7 of both
    pack.main(["--out", str(tmp_path / "out"), "--budget-mb", str(budget / pack.MB), "--whole", str(whole),
               "--cut", *map(str, cut)])
    assert LeRobotDataset(tmp_path / "out" / "small").num_episodes == 2
    assert [LeRobotDataset(tmp_path / "out" / name).num_episodes for name in ("a", "b")] == [6, 6]
    assert "keep 60% of their episodes" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # the folder exists now
        pack.main(["--out", str(tmp_path / "out"), "--budget-mb", "10", "--cut", str(cut[0])])
    with pytest.raises(SystemExit):  # not even the whole dataset fits
        pack.main(["--out", str(tmp_path / "out2"), "--budget-mb", str(fixed / 2 / pack.MB), "--whole", str(whole)])
    with pytest.raises(SystemExit):  # a missing dataset
        pack.main(["--out", str(tmp_path / "out2"), "--budget-mb", "10", "--cut", str(tmp_path / "nowhere")])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a", "b", "out", "small"]  # nothing half-written


def test_episode_files_names_the_data_and_video_files_of_an_episode(tmp_path):
    dataset = LeRobotDataset(write_synthetic(tmp_path / "ds"))
    assert dataset.episode_files(1) == {dataset.root / "data/chunk-000/file-001.parquet",
                                        dataset.root / "videos/observation.image/chunk-000/file-001.mp4"}
    with pytest.raises(IndexError, match=r"episode 3 out of range \[0, 3\)"):
        dataset.episode_files(3)
