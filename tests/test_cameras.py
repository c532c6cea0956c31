"""Several cameras: composing and splitting views, non-square resizing, and multi-camera LeRobot datasets (synthetic
frames, no simulator needed)."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from worldsim.data import lerobot
from worldsim.data.cameras import compose_views, split_views
from worldsim.data.frame_cache import load_frame_cache, resize_frames
from worldsim.utils.shapes import size_pair
from worldsim.data.lerobot import Episode, LeRobotDataset, LeRobotDatasetWriter

SCENE, WRIST = "observation.images.scene", "observation.images.wrist"


# ---------------------------------------------------------------------------------------------- compose / split
def test_compose_then_split_is_the_identity():
    rng = np.random.default_rng(0)
    views = [rng.integers(0, 256, (5, 8, 6, 3), dtype=np.uint8) for _ in range(3)]
    frames = compose_views(views)
    assert frames.shape == (5, 8, 18, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[:, :, 6:12], views[1])  # left to right, in the given order
    for back, view in zip(split_views(frames, 3), views):
        np.testing.assert_array_equal(back, view)
    # any leading shape: one frame (H, W, 3) too
    assert [view.shape for view in split_views(frames[0], 3)] == [(8, 6, 3)] * 3
    assert compose_views([views[0]]) is views[0]


@pytest.mark.parametrize("views, match", [
    ([], "at least one view"),
    ([np.zeros((4, 4, 4))], "view 0"),
    ([np.zeros((2, 4, 4, 3), np.uint8), np.zeros((2, 4, 5, 3), np.uint8)], "view 1"),
    ([np.zeros((2, 4, 4, 3), np.uint8), np.zeros((2, 4, 4, 3), np.float32)], "view 1"),
    ([np.zeros((2, 4, 4, 3), np.uint8), np.zeros((3, 4, 4, 3), np.uint8)], "view 1"),
])
def test_compose_refuses_bad_views(views, match):
    with pytest.raises(ValueError, match=match):
        compose_views(views)


@pytest.mark.parametrize("frames, num_views, match", [
    (np.zeros((2, 4, 10, 3)), 3, "not divisible by num_views=3"),
    (np.zeros((2, 4, 10, 3)), 0, "num_views"),
    (np.zeros((2, 4, 10, 3)), 2.0, "num_views"),
    (np.zeros((2, 4, 10)), 2, r"\(\.\.\., H, W, 3\)"),
])
def test_split_refuses_bad_input(frames, num_views, match):
    with pytest.raises(ValueError, match=match):
        split_views(frames, num_views)


# ---------------------------------------------------------------------------------------------- resizing
def test_resize_frames_to_a_non_square_size():
    frames = np.random.default_rng(1).integers(0, 256, (3, 30, 40, 3), dtype=np.uint8)
    assert resize_frames(frames, (20, 50)).shape == (3, 20, 50, 3)
    assert resize_frames(frames, 16).shape == (3, 16, 16, 3)           # an int is still a square
    assert resize_frames(frames, (30, 40)) is frames                   # already that size: the input itself
    flat = np.full((2, 10, 20, 3), 77, np.uint8)
    assert np.all(resize_frames(flat, (5, 7)) == 77)                   # a uniform colour stays exact
    assert size_pair(64) == (64, 64) and size_pair((48, 96)) == (48, 96)


@pytest.mark.parametrize("size", [0, -3, (10,), (10, 0), (10.0, 5), "64", True, (3, 4, 5)])
def test_bad_frame_sizes_are_refused(size):
    with pytest.raises(ValueError, match="frame size"):
        resize_frames(np.zeros((1, 4, 4, 3), np.uint8), size)


# ---------------------------------------------------------------------------------------------- episodes
def camera_episode(length: int, offset: int, wrist_size=(16, 16)) -> Episode:
    """A 2-camera episode: the scene's red level and the wrist's blue level identify frame and camera."""
    scene = np.zeros((length, 16, 16, 3), np.uint8)
    wrist = np.zeros((length, *wrist_size, 3), np.uint8)
    for t in range(length):
        scene[t, :, :, 0] = (offset + t) * 7 % 256
        wrist[t, :, :, 2] = 255 - (offset + t) * 7 % 256
        wrist[t, t % wrist_size[0], :, 1] = 180
    return Episode(frames=None, images={SCENE: scene, WRIST: wrist},
                   action=np.full((length, 4), offset, np.float32), reward=np.zeros(length, np.float32),
                   terminated=np.zeros(length, bool), truncated=np.r_[np.zeros(length - 1, bool), True],
                   success=np.arange(length) == length - 1, state=np.full((length, 5), 0.5, np.float32),
                   task=f"task {offset % 2}", policy="synthetic")


def test_episode_images_checks():
    episode = camera_episode(4, 0)
    assert episode.frames is episode.images[SCENE] and episode.cameras == [SCENE, WRIST]
    scene, wrist = episode.images[SCENE], episode.images[WRIST]
    common = dict(action=np.zeros((4, 4), np.float32), reward=np.zeros(4, np.float32),
                  terminated=np.zeros(4, bool), truncated=np.zeros(4, bool))
    Episode(frames=scene.copy(), images={SCENE: scene, WRIST: wrist}, **common)  # an equal copy is fine
    with pytest.raises(ValueError, match="first camera"):
        Episode(frames=wrist, images={SCENE: scene, WRIST: wrist + 1}, **common)
    with pytest.raises(ValueError, match="has 3 frames"):
        Episode(frames=None, images={SCENE: scene, WRIST: wrist[:3]}, **common)
    with pytest.raises(ValueError, match="uint8"):
        Episode(frames=None, images={SCENE: scene.astype(np.float32)}, **common)
    with pytest.raises(ValueError, match="non-empty dict"):
        Episode(frames=None, images={}, **common)
    with pytest.raises(ValueError, match="video key"):
        Episode(frames=None, images={"": scene}, **common)
    with pytest.raises(ValueError, match="needs frames"):
        Episode(frames=None, **common)


# ---------------------------------------------------------------------------------------------- datasets
def write_cameras(root, lengths=(6, 9), wrist_size=(16, 16)):
    writer = LeRobotDatasetWriter(root, fps=10, robot_type="synthetic")
    offset = 0
    for length in lengths:
        writer.add_episode(camera_episode(length, offset, wrist_size))
        offset += length
    assert writer.video_keys == [SCENE, WRIST]
    return writer.close()


def test_multi_camera_round_trip(tmp_path):
    root = write_cameras(tmp_path / "ds", wrist_size=(12, 20))
    for relative in ("videos/observation.images.scene/chunk-000/file-000.mp4",
                     "videos/observation.images.wrist/chunk-000/file-001.mp4"):
        assert (root / relative).is_file(), relative
    assert not (root / "videos/observation.image").exists()
    info = json.loads((root / "meta/info.json").read_text())
    videos = [key for key, feature in info["features"].items() if feature["dtype"] == "video"]
    assert videos == [SCENE, WRIST]
    assert info["features"][WRIST]["shape"] == [12, 20, 3]
    stats = json.loads((root / "meta/stats.json").read_text())
    assert np.shape(stats[SCENE]["mean"]) == (3, 1, 1) and np.shape(stats[WRIST]["mean"]) == (3, 1, 1)
    assert stats[WRIST]["mean"][2][0][0] > 0.5 > stats[SCENE]["mean"][2][0][0]  # each camera its own statistics
    rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    for key in (SCENE, WRIST):
        assert rows[1][f"videos/{key}/file_index"] == 1 and rows[1][f"videos/{key}/to_timestamp"] == pytest.approx(0.9)

    dataset = LeRobotDataset(root)
    assert dataset.video_keys == [SCENE, WRIST] and dataset.video_key == SCENE
    assert dataset.frame_shape == (16, 16, 3) and dataset.camera_shape(WRIST) == (12, 20, 3)
    offset = 0
    for episode, length in enumerate((6, 9)):
        original = camera_episode(length, offset, (12, 20))
        for key in (SCENE, WRIST):
            frames = dataset.decode_episode(episode, key)
            assert frames.shape == original.images[key].shape
            assert np.abs(frames.astype(int) - original.images[key].astype(int)).mean() < 2.0
        np.testing.assert_array_equal(dataset.decode_episode(episode), dataset.decode_episode(episode, SCENE))
        offset += length
    assert [row["tasks"] for row in dataset.episodes] == [["task 0"], ["task 0"]]
    assert dataset.columns["next.success"].sum() == 2 and dataset.columns["observation.state"].shape == (15, 5)
    assert LeRobotDataset(root, video_key=WRIST).frame_shape == (12, 20, 3)
    with pytest.raises(ValueError, match="no camera 'observation.images.top'"):
        dataset.decode_episode(0, "observation.images.top")


def test_writer_refuses_other_cameras_or_sizes(tmp_path):
    writer = LeRobotDatasetWriter(tmp_path / "ds", fps=10)
    writer.add_episode(camera_episode(4, 0))
    swapped = camera_episode(4, 4)
    swapped.images = {WRIST: swapped.images[WRIST], SCENE: swapped.images[SCENE]}
    with pytest.raises(ValueError, match="cameras"):
        writer.add_episode(swapped)
    with pytest.raises(ValueError, match="camera 'observation.images.wrist' frame shape"):
        writer.add_episode(camera_episode(4, 4, wrist_size=(8, 8)))
    single = camera_episode(4, 4)
    single.images = None
    with pytest.raises(ValueError, match="cameras"):
        writer.add_episode(single)
    writer.add_episode(camera_episode(3, 4))  # the writer stays usable
    assert LeRobotDataset(writer.close()).num_episodes == 2


def test_a_failing_camera_leaves_no_partial_episode(tmp_path, monkeypatch):
    # the second camera's video fails to encode: the episode's first video and its data are removed, the committed
    # episodes stay readable, and the writer goes on
    writer = LeRobotDatasetWriter(tmp_path / "ds", fps=10)
    writer.add_episode(camera_episode(4, 0))
    original = lerobot.VideoWriter.write

    def failing(self, frames):
        if "observation.images.wrist" in str(self.path):
            raise OSError("disk full")
        return original(self, frames)

    monkeypatch.setattr(lerobot.VideoWriter, "write", failing)
    with pytest.raises(OSError, match="disk full"):
        writer.add_episode(camera_episode(5, 4))
    monkeypatch.setattr(lerobot.VideoWriter, "write", original)
    root = tmp_path / "ds"
    assert sorted(path.name for path in (root / "videos").rglob("*.mp4")) == ["file-000.mp4", "file-000.mp4"]
    assert not (root / "data/chunk-000/file-001.parquet").exists()
    assert LeRobotDataset(root).num_episodes == 1
    writer.add_episode(camera_episode(5, 4))
    assert LeRobotDataset(writer.close()).num_frames == 9


def test_composite_frame_cache(tmp_path):
    root = write_cameras(tmp_path / "ds", wrist_size=(12, 20))
    dataset = LeRobotDataset(root)
    cache = load_frame_cache(dataset, (8, 16), progress=False)
    assert cache.shape == (15, 8, 16, 3)
    for episode in range(2):
        rows = dataset.episode_slice(episode)
        expected = compose_views([resize_frames(dataset.decode_episode(episode, key), (8, 8))
                                  for key in (SCENE, WRIST)])
        np.testing.assert_array_equal(cache[rows], expected)
    scene, wrist = split_views(cache, 2)
    assert scene[..., 2].mean() < 10 and wrist[..., 2].mean() > 100  # scene left, wrist right (blue)
    assert len(list((root / "cache").glob("frames_8x16_*.npy"))) == 1
    # the cameras chosen and ordered, and one camera alone
    swapped = load_frame_cache(dataset, (8, 16), progress=False, video_keys=[WRIST, SCENE])
    np.testing.assert_array_equal(swapped[:, :, :8], cache[:, :, 8:])
    alone = load_frame_cache(dataset, 8, progress=False, video_keys=[WRIST])
    assert alone.shape == (15, 8, 8, 3)
    np.testing.assert_array_equal(alone, cache[:, :, 8:])
    with pytest.raises(ValueError, match="not divisible by the 2 cameras"):
        load_frame_cache(dataset, (8, 15), progress=False)
    with pytest.raises(ValueError, match="no camera 'observation.images.top'"):
        load_frame_cache(dataset, 8, progress=False, video_keys=["observation.images.top"])
    with pytest.raises(ValueError, match="repeats"):
        load_frame_cache(dataset, (8, 16), progress=False, video_keys=[SCENE, SCENE])


def test_single_camera_cache_keeps_its_name(tmp_path):
    writer = LeRobotDatasetWriter(tmp_path / "ds", fps=10)
    episode = camera_episode(5, 0)
    episode.images = None  # one camera: stored as observation.image, as before
    writer.add_episode(episode)
    dataset = LeRobotDataset(writer.close())
    assert dataset.video_keys == ["observation.image"]
    square = load_frame_cache(dataset, 8, progress=False)
    names = sorted(path.name for path in (dataset.root / "cache").glob("*.npy"))
    assert len(names) == 1 and names[0].startswith("frames_8_")
    # the same cache for (8, 8): no second file
    np.testing.assert_array_equal(load_frame_cache(dataset, (8, 8), progress=False), square)
    assert len(list((dataset.root / "cache").glob("*.npy"))) == 1
    assert load_frame_cache(dataset, (8, 12), progress=False).shape == (5, 8, 12, 3)
