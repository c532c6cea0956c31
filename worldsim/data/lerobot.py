"""Reading and writing datasets in the LeRobot v3.0 layout.

Layout (LeRobot ``CODEBASE_VERSION = "v3.0"``; several episodes share one file)::

    meta/info.json                    fps, features, path templates, totals
    meta/stats.json                   min / max / mean / std / count per feature
    meta/tasks.parquet                task string -> task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode: length, offsets, video timestamps
    data/chunk-000/file-000.parquet   one row per frame: action, observation.state, next.reward, ...
    videos/observation.image/chunk-000/file-000.mp4   the frames of all episodes, back to back

Several cameras: each camera is its own ``video`` feature in ``meta/info.json`` (LeRobot names them
``observation.images.<camera>``, e.g. ``observation.images.scene`` and ``observation.images.wrist``), with its own
statistics in ``meta/stats.json``, its own videos under ``videos/<key>/...`` and its own ``videos/<key>/...``
columns in each ``meta/episodes`` row. The features' order is the camera order: :attr:`LeRobotDataset.video_keys`,
the order :func:`~worldsim.data.frame_cache.load_frame_cache` composes the views side by side in.

Frames and actions are aligned as stated in :mod:`worldsim.constants`: ``action[t]`` follows frame ``t``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from worldsim.constants import (
    ACTION,
    CODEBASE_VERSION,
    DONE,
    EPISODE_INDEX,
    FRAME_INDEX,
    INDEX,
    OBS_ENV_STATE,
    OBS_IMAGE,
    OBS_STATE,
    REWARD,
    SUCCESS,
    TASK_INDEX,
    TIMESTAMP,
)
from worldsim.data.video import VIDEO_PIX_FMT, VideoWriter, decode_video
from worldsim.utils.files import read_json_object, write_text_atomic

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"


def _count(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


#: required ``meta/info.json`` fields: (check, what was expected)
INFO_FIELDS = {
    "fps": (lambda v: _count(v, 1), "a positive integer"),
    "features": (lambda v: isinstance(v, dict) and all(isinstance(f, dict) for f in v.values()), "an object"),
    "data_path": (lambda v: isinstance(v, str) and "{file_index" in v, "a path template"),
    "total_frames": (lambda v: _count(v, 0), "a non-negative integer"),
    "total_episodes": (lambda v: _count(v, 0), "a non-negative integer"),
}


class DatasetError(ValueError):
    """A dataset on disk is missing a file or is inconsistent; the message names the file and the field."""


@dataclass
class Episode:
    """One recorded episode, as the collector hands it to :class:`LeRobotDatasetWriter`.

    Single-camera episodes set ``frames`` only; the writer stores them under its ``video_key``. Multi-camera
    episodes set ``images``, every camera by its LeRobot video key in camera order, and ``frames`` is then the first
    camera (pass ``frames=None`` to take it from ``images``)::

        Episode(frames=None, images={"observation.images.scene": scene, "observation.images.wrist": wrist}, ...)

    Attributes:
        frames: `np.ndarray` `(T, H, W, 3)` uint8, observation ``t`` for ``t = 0 .. T-1`` (of the first camera when
            ``images`` is given).
        action: `np.ndarray` `(T, A)` float32; ``action[t]`` is applied after ``frames[t]``.
        reward: `np.ndarray` `(T,)` float32, reward of the transition ``t -> t + 1``.
        terminated: `np.ndarray` `(T,)` bool, the transition ``t -> t + 1`` ended the episode (task over).
        truncated: `np.ndarray` `(T,)` bool, the episode was cut by a time limit after step ``t``.
        success: `np.ndarray` `(T,)` bool or None, frame ``t + 1`` is a success state.
        state: `np.ndarray` `(T, S)` float32 or None, proprioceptive state (e.g. an agent's position).
        environment_state: `np.ndarray` `(T, E)` float32 or None, full env state where the env exposes it
            (e.g. agent and object poses: what a state reset takes).
        task: natural-language task description.
        policy: name of the policy that produced the episode (stored in the episode's ``meta/episodes`` row as
            ``policy``; ranking from logged episodes groups episodes by it), or ``""``.
        images: ``{video key: (T, H_k, W_k, 3) uint8}``, every camera of a multi-camera episode in camera order (each
            camera may have its own size), or None for a single-camera episode.

    Raises:
        ValueError: a field of the wrong shape, dtype or length, a non-finite number, ``images`` that is empty or has
            a bad key or array, or ``frames`` that is not ``images``' first camera (the message names the field).
    """

    frames: np.ndarray | None
    action: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    success: np.ndarray | None = None
    state: np.ndarray | None = None
    environment_state: np.ndarray | None = None
    task: str = ""
    policy: str = ""
    images: dict[str, np.ndarray] | None = None

    def __post_init__(self):
        if self.images is not None:
            self._check_images()
        elif self.frames is None:
            raise ValueError("an episode needs frames, or images with at least one camera")
        self.frames = np.asarray(self.frames)
        length = len(self.frames)
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (T, H, W, 3), got {self.frames.dtype} {self.frames.shape}")
        if length == 0:
            raise ValueError("an episode needs at least one frame")
        for name in ("action", "reward", "terminated", "truncated", "success", "state", "environment_state"):
            value = getattr(self, name)
            if value is not None and len(value) != length:
                raise ValueError(f"episode field {name!r} has length {len(value)}, frames have {length}")
        if self.action.ndim != 2:
            raise ValueError(f"action must be (T, A), got shape {self.action.shape}")
        for name in ("action", "reward", "state", "environment_state"):
            value = getattr(self, name)
            if value is not None and not np.all(np.isfinite(np.asarray(value, np.float64))):
                bad = int(np.argwhere(~np.isfinite(np.asarray(value, np.float64)))[0][0])
                raise ValueError(f"episode field {name!r} is not finite at step {bad}: {np.asarray(value)[bad]!r}")

    def _check_images(self) -> None:
        """Checks ``images`` and sets ``frames`` to its first camera when it is None (see the class docstring)."""
        if not isinstance(self.images, dict) or not self.images:
            raise ValueError(f"episode images must be a non-empty dict {{video key: (T, H, W, 3) uint8}}, got "
                             f"{type(self.images).__name__} {self.images!r:.80}")
        images, length = {}, None
        for key, value in self.images.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"episode images: every key must be a non-empty video key string, got {key!r}")
            value = np.asarray(value)
            if value.ndim != 4 or value.shape[-1] != 3 or value.dtype != np.uint8:
                raise ValueError(f"episode images[{key!r}] must be uint8 (T, H, W, 3), got {value.dtype} "
                                 f"{value.shape}")
            if length is not None and len(value) != length:
                raise ValueError(f"episode images[{key!r}] has {len(value)} frames, the first camera has {length}")
            length = len(value)
            images[key] = value
        self.images = images
        first_key, first = next(iter(images.items()))
        if self.frames is None:
            self.frames = first
        elif self.frames is not first and (np.shape(self.frames) != first.shape
                                           or not np.array_equal(self.frames, first)):
            raise ValueError(f"episode frames must be the first camera's images ({first_key!r}, {first.shape}) when "
                             f"images are given; pass frames=None to take them from images")

    @property
    def cameras(self) -> list[str] | None:
        """The video keys of a multi-camera episode in camera order, or None for a single-camera one."""
        return None if self.images is None else list(self.images)


def _feature(dtype: str, shape: tuple, names=None) -> dict:
    return {"dtype": dtype, "shape": list(shape), "names": names}


def _stats(values: np.ndarray) -> dict:
    values = values.astype(np.float64)
    return {
        "min": values.min(0).tolist(),
        "max": values.max(0).tolist(),
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "count": [int(len(values))],
    }


class RunningStats:
    """LeRobot's per-feature statistics (min, max, mean, std, count) of rows that arrive in batches.

    Batches are merged with the pairwise update of Chan, Golub and LeVeque (1979) in float64, so adding an episode
    costs time in its own length, not in the dataset's: a writer that commits after every episode stays linear in
    the recording. The result equals :func:`_stats` over all rows to float64 rounding.
    """

    def __init__(self):
        self.count = 0
        self.mean = self.m2 = self.min = self.max = None

    def update(self, values: np.ndarray) -> None:
        """Adds rows.

        Args:
            values: `(N,)` or `(N, D)` numbers (any real dtype); a `(N,)` array is one feature.

        Raises:
            ValueError: the feature width differs from the rows added before.
        """
        values = np.asarray(values, np.float64)
        values = values.reshape(len(values), -1)
        if len(values) == 0:
            return
        if self.mean is not None and values.shape[1] != self.mean.shape[0]:
            raise ValueError(f"rows of width {values.shape[1]} differ from the earlier rows' {self.mean.shape[0]}")
        count, mean = len(values), values.mean(0)
        m2 = ((values - mean) ** 2).sum(0)
        if self.count == 0:
            self.count, self.mean, self.m2 = count, mean, m2
            self.min, self.max = values.min(0), values.max(0)
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * count / total)
        self.min, self.max = np.minimum(self.min, values.min(0)), np.maximum(self.max, values.max(0))
        self.count = total

    def as_dict(self) -> dict:
        """``{"min", "max", "mean", "std": lists of D floats, "count": [N]}`` (population std, as numpy's).

        Raises:
            ValueError: no rows were added.
        """
        if self.count == 0:
            raise ValueError("no rows were added")
        return {"min": self.min.tolist(), "max": self.max.tolist(), "mean": self.mean.tolist(),
                "std": np.sqrt(self.m2 / self.count).tolist(), "count": [int(self.count)]}


class LeRobotDatasetWriter:
    """Writes episodes into a new LeRobot v3.0 dataset folder, committing each episode as it is added.

    Crash safety: each episode gets its own video and data file (``file_index`` = episode index, as LeRobot v3
    allows), written under a temporary name and renamed into place; then the metadata is rewritten, each file
    atomically, with ``meta/info.json`` last: it is the commit record (its ``total_episodes`` says which episodes
    exist). Until the first episode is committed everything lives in a temporary folder beside ``root``, which
    then moves to ``root`` in one rename. So a recording stopped at any point (an exception, Ctrl-C, SIGKILL, a
    power cut) leaves either no dataset or a readable one with every completed episode. A multi-camera episode's
    videos (one per camera) are all in place before its commit.

    Cameras: the first episode fixes them. A single-camera episode (``Episode.images`` None) is stored under
    ``video_key``; a multi-camera one under its ``images`` keys, one ``video`` feature each, in that order. Every
    later episode must have the same cameras with the same frame sizes.

    Args:
        root: the dataset folder to create; must not exist yet.
        fps: frame rate of the recording (Hz).
        robot_type: free-form embodiment name stored in ``meta/info.json`` (the embodiment plug-in's name).
        env_id: the Gymnasium id the data came from, stored in ``meta/info.json`` (``None`` if not from an env).
        action_space: JSON description of the env's action space (``{"type": "Box", "low": [...], ...}``).
        video_key: feature name of the camera stream of single-camera episodes.

    Attributes:
        video_keys (list[str] | None): the dataset's cameras in order, fixed by the first episode (None before it).

    Raises:
        FileExistsError: ``root`` exists already.

    >>> writer = LeRobotDatasetWriter("data/grid", fps=10, robot_type="minigrid")  # doctest: +SKIP
    >>> writer.add_episode(episode); writer.close()                              # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | Path,
        fps: int,
        robot_type: str = "unknown",
        env_id: str | None = None,
        action_space: dict | None = None,
        video_key: str = OBS_IMAGE,
    ):
        self.root = Path(root)
        if self.root.exists():
            raise FileExistsError(f"dataset folder {self.root} exists already; choose a new --out")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.partial-", dir=self.root.parent))
        self._folder = self._tmp  # where files go: the temporary folder until the first commit, then root
        self.fps, self.robot_type, self.env_id, self.action_space = fps, robot_type, env_id, action_space
        self.video_key = video_key
        self.pix_fmt = VIDEO_PIX_FMT
        self._columns: dict[str, list] = {}  # the first episode's columns (their names and widths)
        self._stats: dict[str, RunningStats] = {}  # per statistics key, over every committed episode
        self._episodes: list[dict] = []
        self._tasks: dict[str, int] = {}
        self._frame_shapes: dict[str, tuple] = {}  # per camera, fixed by the first episode
        self._action_dim: int | None = None
        self.total_frames = 0
        self.closed = False

    @property
    def num_episodes(self) -> int:
        """Episodes committed so far."""
        return len(self._episodes)

    @property
    def video_keys(self) -> list[str] | None:
        """The dataset's cameras (video keys) in order, or None before the first episode."""
        return list(self._frame_shapes) or None

    def _cameras_of(self, episode: Episode) -> dict[str, np.ndarray]:
        """``{video key: (T, H, W, 3) uint8}`` of an episode: its ``images``, or its ``frames`` under
        :attr:`video_key`."""
        return dict(episode.images) if episode.images is not None else {self.video_key: episode.frames}

    def _columns_of(self, episode: Episode, episode_index: int, task_index: int) -> dict[str, list]:
        length, start = len(episode.frames), self.total_frames
        done = np.logical_or(episode.terminated, episode.truncated)
        done[-1] = True
        columns = {
            ACTION: list(episode.action.astype(np.float32)),
            EPISODE_INDEX: [episode_index] * length,
            FRAME_INDEX: list(range(length)),
            TIMESTAMP: list((np.arange(length) / self.fps).astype(np.float32)),
            INDEX: list(range(start, start + length)),
            TASK_INDEX: [task_index] * length,
            REWARD: list(episode.reward.astype(np.float32)),
            DONE: list(done.astype(bool)),
            "next.terminated": list(episode.terminated.astype(bool)),
            "next.truncated": list(episode.truncated.astype(bool)),
        }
        if episode.success is not None:
            columns[SUCCESS] = list(episode.success.astype(bool))
        if episode.state is not None:
            columns[OBS_STATE] = list(episode.state.astype(np.float32))
        if episode.environment_state is not None:
            columns[OBS_ENV_STATE] = list(episode.environment_state.astype(np.float32))
        return columns

    def add_episode(self, episode: Episode) -> None:
        """Writes one episode (its video and data files) and commits it (metadata, ``meta/info.json`` last).

        Raises:
            ValueError: the episode's frame size, action dimension or fields differ from earlier episodes; nothing is
                written and the writer stays usable.
            RuntimeError: the writer was closed.
        """
        if self.closed:
            raise RuntimeError(f"the writer of {self.root} is closed")
        cameras = self._cameras_of(episode)
        frame_shapes = self._frame_shapes or {key: frames.shape[1:] for key, frames in cameras.items()}
        action_dim = self._action_dim or episode.action.shape[1]
        if list(cameras) != list(frame_shapes):
            raise ValueError(f"episode cameras {list(cameras)} differ from the dataset's {list(frame_shapes)}")
        for key, frames in cameras.items():
            if frames.shape[1:] != frame_shapes[key]:
                shape_of = f"camera {key!r} frame shape" if len(cameras) > 1 else "frame shape"
                raise ValueError(f"{shape_of} {frames.shape[1:]} differs from the dataset's {frame_shapes[key]}")
        if episode.action.shape[1] != action_dim:
            raise ValueError(f"action dimension {episode.action.shape[1]} differs from the dataset's {action_dim}")
        episode_index = len(self._episodes)
        task_index = self._tasks.get(episode.task, len(self._tasks))
        columns = self._columns_of(episode, episode_index, task_index)
        if self._episodes and set(columns) != set(self._columns):
            raise ValueError(f"episode fields {sorted(columns)} differ from earlier episodes' {sorted(self._columns)}")
        for key in (OBS_STATE, OBS_ENV_STATE):
            if self._episodes and key in columns and len(columns[key][0]) != len(self._columns[key][0]):
                raise ValueError(f"{key} width {len(columns[key][0])} differs from the dataset's "
                                 f"{len(self._columns[key][0])}")

        # 1. this episode's own files (a video per camera, then the data), each under a temporary name and renamed
        #    into place; none is referenced until the commit below
        length, start = len(episode.frames), self.total_frames
        data_path = self._folder / DATA_PATH.format(chunk_index=0, file_index=episode_index)
        written: list[Path] = []
        try:
            for key, frames in cameras.items():
                video_path = self._folder / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=episode_index)
                partial_video = video_path.with_name(video_path.stem + ".partial.mp4")
                written += [partial_video, video_path]
                video = VideoWriter(partial_video, self.fps, pix_fmt=self.pix_fmt)
                video.write(frames)
                video.close()
                os.replace(partial_video, video_path)
            _write_parquet_atomic(_table(columns), data_path)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            data_path.unlink(missing_ok=True)
            raise

        # 2. commit: the metadata of every episode so far, info.json last
        self._frame_shapes, self._action_dim = frame_shapes, action_dim
        self._tasks.setdefault(episode.task, task_index)
        if not self._columns:
            self._columns = columns
        for key in (ACTION, REWARD, OBS_STATE, OBS_ENV_STATE):
            if key in columns:
                self._stats.setdefault(key, RunningStats()).update(np.asarray(columns[key], np.float64))
        # the image statistics sample about 8 frames per episode and camera
        for key, frames in cameras.items():
            pixels = frames[:: max(1, length // 8)].reshape(-1, 3) / 255.0
            self._stats.setdefault(key, RunningStats()).update(pixels)
        row = {
            EPISODE_INDEX: episode_index,
            "tasks": [episode.task],
            "policy": episode.policy,
            "length": length,
            "data/chunk_index": 0,
            "data/file_index": episode_index,
            "dataset_from_index": start,
            "dataset_to_index": start + length,
        }
        for key in cameras:
            row.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": episode_index,
                        f"videos/{key}/from_timestamp": 0.0, f"videos/{key}/to_timestamp": length / self.fps})
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        self._episodes.append(row)
        self.total_frames += length
        self._write_metadata()
        if self._folder == self._tmp:
            os.replace(self._tmp, self.root)  # the first commit: the dataset appears at root in one step
            self._folder = self.root

    def _write_metadata(self) -> None:
        """Episodes, tasks and stats (each atomically), then ``meta/info.json``, the commit record."""
        folder = self._folder
        _write_parquet_atomic(pa.Table.from_pylist(self._episodes),
                              folder / EPISODES_PATH.format(chunk_index=0, file_index=0))
        tasks = sorted(self._tasks.items(), key=lambda item: item[1])
        tasks_table = pa.table({"task": [t for t, _ in tasks], TASK_INDEX: [i for _, i in tasks]})
        pandas_meta = {"index_columns": ["task"], "column_indexes": [], "columns": [
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
            {"name": TASK_INDEX, "field_name": TASK_INDEX, "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
        ]}
        tasks_table = tasks_table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
        _write_parquet_atomic(tasks_table, folder / "meta" / "tasks.parquet")

        features = {}
        for key, (height, width, _) in self._frame_shapes.items():  # the cameras first, in camera order
            features[key] = {
                "dtype": "video",
                "shape": [height, width, 3],
                "names": ["height", "width", "channels"],
                "info": {"video.fps": self.fps, "video.codec": "h264", "video.pix_fmt": self.pix_fmt,
                         "video.height": height, "video.width": width, "video.channels": 3, "has_audio": False},
            }
        features.update({
            ACTION: _feature("float32", (self._action_dim,)),
            EPISODE_INDEX: _feature("int64", (1,)),
            FRAME_INDEX: _feature("int64", (1,)),
            TIMESTAMP: _feature("float32", (1,)),
            INDEX: _feature("int64", (1,)),
            TASK_INDEX: _feature("int64", (1,)),
            REWARD: _feature("float32", (1,)),
            DONE: _feature("bool", (1,)),
            "next.terminated": _feature("bool", (1,)),
            "next.truncated": _feature("bool", (1,)),
        })
        stats = {key: moments.as_dict() for key, moments in self._stats.items() if key not in self._frame_shapes}
        for key in (OBS_STATE, OBS_ENV_STATE):
            if key in self._columns:
                features[key] = _feature("float32", (len(self._columns[key][0]),))
        if SUCCESS in self._columns:
            features[SUCCESS] = _feature("bool", (1,))
        for key in self._frame_shapes:  # LeRobot's image statistics: per channel, shaped (3, 1, 1)
            image_stats = self._stats[key].as_dict()
            stats[key] = {k: [[[v]] for v in values] if k != "count" else values for k, values in image_stats.items()}
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self._episodes),
            "total_frames": self.total_frames,
            "total_tasks": len(self._tasks),
            "chunks_size": 1000,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self._episodes)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": features,
            "worldsim": {"env_id": self.env_id, "action_space": self.action_space},
        }
        write_text_atomic(folder / "meta" / "stats.json", json.dumps(stats, indent=2))
        write_text_atomic(folder / "meta" / "info.json", json.dumps(info, indent=2))

    def close(self) -> Path:
        """Ends the recording; every added episode is already on disk.

        Returns:
            The dataset folder.

        Raises:
            ValueError: no episode was added (nothing is left on disk).
        """
        if not self._episodes:
            self.abort()
            raise ValueError("no episode was recorded; nothing to write")
        self.closed = True
        return self.root

    def abort(self) -> None:
        """Stops the recording: keeps the committed episodes (a readable dataset at ``root``) or, if there are none,
        removes the temporary folder so that nothing is left."""
        self.closed = True
        if self._folder == self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _table(columns: dict[str, list]) -> pa.Table:
    """A parquet table of per-frame columns (vector columns as ``list<float32>``)."""
    arrays = {}
    for key, values in columns.items():
        if key in (ACTION, OBS_STATE, OBS_ENV_STATE):
            arrays[key] = pa.array([np.asarray(v, np.float32) for v in values], type=pa.list_(pa.float32()))
        else:
            arrays[key] = pa.array(values)
    return pa.table(arrays)


def _write_parquet_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def frame_stats(columns: dict) -> dict:
    """``meta/stats.json`` entries (LeRobot's min, max, mean, std, count) of the per-frame numeric columns.

    Args:
        columns: ``{key: (N,) or (N, D) array-like}``; ``action`` and ``next.reward`` are required, the state
            columns optional, any other key ignored.

    Returns:
        ``{key: {"min", "max", "mean", "std": lists of D floats, "count": [N]}}`` for action, reward and states.

    Raises:
        KeyError: ``action`` or ``next.reward`` is missing.
    """
    stats = {ACTION: _stats(np.asarray(columns[ACTION], np.float64)),
             REWARD: _stats(np.asarray(columns[REWARD], np.float64).reshape(-1, 1))}
    for key in (OBS_STATE, OBS_ENV_STATE):
        if key in columns:
            stats[key] = _stats(np.asarray(columns[key], np.float64))
    return stats


def _read_parquet(path: Path, what: str) -> pa.Table:
    if not path.is_file():
        raise DatasetError(f"{what} file missing: {path}")
    try:
        return pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for corrupt files
        raise DatasetError(f"{what} file {path} cannot be read: {error}") from error


class LeRobotDataset:
    """A LeRobot v3.0 dataset folder, read and checked for consistency.

    Loads the metadata and the per-frame table (actions, rewards, states) into memory; frames stay in the videos
    and are decoded on demand (:meth:`decode_episode`) or once into a :class:`~worldsim.data.frame_cache.FrameCache`.

    Args:
        root: the dataset folder.
        video_key: which camera stream to use; default: the first ``video`` feature in ``meta/info.json``
            (``observation.image`` where there is one).

    Attributes:
        fps (int): frame rate, Hz.
        video_keys (list[str]): every camera (``video`` feature) in ``meta/info.json``'s feature order: the camera
            order of a multi-camera dataset.
        video_key (str): the chosen camera (the first of :attr:`video_keys` by default); :meth:`decode_episode` and
            :meth:`video_path` use it unless told another.
        frame_shape (tuple): ``(H, W, 3)`` of :attr:`video_key`'s frames; :meth:`camera_shape` gives any camera's.
        action (`np.ndarray` `(N, A)` float32): every frame's action, N = total frames.
        episode_index (`np.ndarray` `(N,)` int64), frame_index (`np.ndarray` `(N,)` int64).
        episode_from, episode_to (`np.ndarray` `(E,)` int64): the frame range ``[from, to)`` of each episode.
        stats (dict): ``meta/stats.json``.

    Raises:
        DatasetError: a missing file, or metadata that disagrees with the data (episode lengths, action dimension,
            episode indices with gaps, wrong codebase version); the message names the file and the field.
    """

    def __init__(self, root: str | Path, video_key: str | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder missing: {self.root}")
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise DatasetError(f"dataset metadata file missing: {info_path}")
        self.info = read_json_object(info_path, DatasetError)
        version = self.info.get("codebase_version")
        if version != CODEBASE_VERSION:
            raise DatasetError(f"{info_path}: field 'codebase_version' is {version!r}, expected {CODEBASE_VERSION!r}")
        for field, (valid, expected) in INFO_FIELDS.items():
            if field not in self.info:
                raise DatasetError(f"{info_path}: required field {field!r} missing")
            if not valid(self.info[field]):
                raise DatasetError(f"{info_path}: field {field!r} is {self.info[field]!r}, expected {expected}")
        self.fps = self.info["fps"]
        features = self.info["features"]
        video_keys = [key for key, feature in features.items() if feature.get("dtype") == "video"]
        if video_key is None:
            if not video_keys:
                raise DatasetError(f"{info_path}: 'features' has no video feature")
            video_key = OBS_IMAGE if OBS_IMAGE in video_keys else video_keys[0]
        elif video_key not in video_keys:
            raise DatasetError(f"{info_path}: video feature {video_key!r} not in 'features' (videos: {video_keys})")
        self.video_keys = video_keys
        self.video_key = video_key
        self.frame_shape = tuple(features[video_key]["shape"])
        if ACTION not in features:
            raise DatasetError(f"{info_path}: 'features' has no {ACTION!r}")
        self.action_dim = int(np.prod(features[ACTION]["shape"]))

        stats_path = self.root / "meta" / "stats.json"
        if not stats_path.is_file():
            raise DatasetError(f"dataset statistics file missing: {stats_path}")
        self.stats = read_json_object(stats_path, DatasetError)

        self._read_episodes()
        self._read_data()

    def _read_episodes(self) -> None:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetError(f"episode metadata missing: no {self.root / 'meta/episodes/chunk-*/file-*.parquet'}")
        rows = []
        for path in files:
            rows.extend(_read_parquet(path, "episode metadata").to_pylist())
        rows.sort(key=lambda row: row[EPISODE_INDEX])
        indices = [row[EPISODE_INDEX] for row in rows]
        if indices != list(range(len(rows))):
            missing = sorted(set(range(max(indices) + 1)) - set(indices))
            raise DatasetError(f"{files[0].parent.parent}: field 'episode_index' has gaps or repeats (missing {missing[:10]})")
        committed = self.info["total_episodes"]
        if len(rows) > committed:
            # meta/info.json is the writer's commit record: rows after it are an episode whose recording was
            # interrupted between writing the episode table and info.json; they are not part of the dataset.
            warnings.warn(f"{self.root}: meta/episodes holds {len(rows)} episodes, meta/info.json commits "
                          f"{committed}; ignoring the {len(rows) - committed} uncommitted (interrupted recording)")
            rows = rows[:committed]
        if len(rows) != committed:
            raise DatasetError(
                f"{self.root / 'meta/info.json'}: field 'total_episodes' is {self.info['total_episodes']} "
                f"but meta/episodes holds {len(rows)}"
            )
        self.episodes = rows
        self.episode_from = np.array([row["dataset_from_index"] for row in rows], dtype=np.int64)
        self.episode_to = np.array([row["dataset_to_index"] for row in rows], dtype=np.int64)
        lengths = np.array([row["length"] for row in rows], dtype=np.int64)
        bad = np.nonzero(self.episode_to - self.episode_from != lengths)[0]
        if len(bad):
            raise DatasetError(
                f"{files[0]}: episode {bad[0]} field 'length' is {lengths[bad[0]]} but "
                f"dataset_to_index - dataset_from_index is {self.episode_to[bad[0]] - self.episode_from[bad[0]]}"
            )
        for row in rows:
            for key in self.video_keys:
                if f"videos/{key}/file_index" not in row:
                    raise DatasetError(f"{files[0]}: episode {row[EPISODE_INDEX]} has no 'videos/{key}/...' columns "
                                       f"for the video feature {key!r}")
                path = self.video_path(row[EPISODE_INDEX], key)
                if not path.is_file():
                    raise DatasetError(f"video file missing: {path} (episode {row[EPISODE_INDEX]}, key {key!r})")

    def _read_data(self) -> None:
        files = sorted({(row["data/chunk_index"], row["data/file_index"]) for row in self.episodes})
        tables = []
        for chunk_index, file_index in files:
            path = self.root / self.info["data_path"].format(chunk_index=chunk_index, file_index=file_index)
            tables.append(_read_parquet(path, "data"))
        data_path = self.root / self.info["data_path"].format(chunk_index=files[0][0], file_index=files[0][1])
        try:
            table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise DatasetError(f"{data_path.parent}: the data files' columns disagree: {error}") from error
        for column in (ACTION, EPISODE_INDEX, FRAME_INDEX):
            if column not in table.column_names:
                raise DatasetError(f"{data_path}: column {column!r} missing")
        if table.num_rows != self.info["total_frames"]:
            raise DatasetError(
                f"{self.root / 'meta/info.json'}: field 'total_frames' is {self.info['total_frames']} "
                f"but the data files hold {table.num_rows} rows"
            )
        index = np.asarray(table[INDEX].to_numpy() if INDEX in table.column_names else np.arange(table.num_rows))
        order = np.argsort(index, kind="stable")
        self.episode_index = table[EPISODE_INDEX].to_numpy()[order].astype(np.int64)
        self.frame_index = table[FRAME_INDEX].to_numpy()[order].astype(np.int64)
        self.action = self._matrix(table, ACTION, order, data_path)
        if self.action.shape[1] != self.action_dim:
            raise DatasetError(
                f"{data_path}: column {ACTION!r} has dimension {self.action.shape[1]}, meta/info.json says "
                f"{self.action_dim}"
            )
        counts = np.bincount(self.episode_index, minlength=len(self.episodes))
        lengths = self.episode_to - self.episode_from
        bad = np.nonzero(counts[: len(lengths)] != lengths)[0]
        if len(bad) or len(counts) != len(lengths):
            episode = int(bad[0]) if len(bad) else len(lengths)
            raise DatasetError(
                f"{data_path}: episode {episode} has {counts[episode] if episode < len(counts) else 0} rows but "
                f"meta/episodes field 'length' says {lengths[episode] if episode < len(lengths) else 0}"
            )
        self.columns = {}
        for name in (REWARD, DONE, SUCCESS, "next.terminated", "next.truncated"):
            if name in table.column_names:
                self.columns[name] = table[name].to_numpy(zero_copy_only=False)[order]
        for name in (OBS_STATE, OBS_ENV_STATE):
            if name in table.column_names:
                self.columns[name] = self._matrix(table, name, order, data_path)
        count = (self.stats.get(ACTION) or {}).get("count")
        if count != [self.num_frames] and REWARD in self.columns:
            # stats.json is written just before info.json; after an interrupted recording it can describe one
            # episode more than was committed. Recompute it from the committed data instead of trusting it.
            warnings.warn(f"{self.root / 'meta/stats.json'} counts {count} frames, the dataset has "
                          f"{self.num_frames}; recomputing the statistics from the data")
            self.stats.update(frame_stats({ACTION: self.action, REWARD: self.columns[REWARD],
                                           **{k: self.columns[k] for k in (OBS_STATE, OBS_ENV_STATE)
                                              if k in self.columns}}))

    @staticmethod
    def _matrix(table: pa.Table, column: str, order: np.ndarray, path: Path) -> np.ndarray:
        values = table[column].to_pylist()
        try:
            matrix = np.asarray(values, dtype=np.float32)
        except ValueError as error:
            raise DatasetError(f"{path}: column {column!r} has rows of different lengths") from error
        if matrix.ndim == 1:
            matrix = matrix[:, None]
        return matrix[order]

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        return len(self.action)

    @property
    def env_id(self) -> str | None:
        return (self.info.get("worldsim") or {}).get("env_id")

    @property
    def action_space(self) -> dict | None:
        """The env's action space as stored by worldsim's collector, or ``None`` for foreign datasets."""
        return (self.info.get("worldsim") or {}).get("action_space")

    def _camera(self, video_key: str | None) -> str:
        """``video_key``, checked, or :attr:`video_key` for None.

        Raises:
            ValueError: not one of :attr:`video_keys`.
        """
        if video_key is None:
            return self.video_key
        if video_key not in self.video_keys:
            raise ValueError(f"{self.root}: no camera {video_key!r}; its cameras: {self.video_keys}")
        return video_key

    def camera_shape(self, video_key: str | None = None) -> tuple[int, int, int]:
        """``(H, W, 3)`` of a camera's frames (None: :attr:`video_key`), from ``meta/info.json``.

        Raises:
            ValueError: an unknown camera.
        """
        return tuple(self.info["features"][self._camera(video_key)]["shape"])

    def video_path(self, episode_index: int, video_key: str | None = None) -> Path:
        """The video file holding episode ``episode_index``'s frames of camera ``video_key`` (None:
        :attr:`video_key`).

        Raises:
            ValueError: an unknown camera.
        """
        video_key = self._camera(video_key)
        row = self.episodes[episode_index]
        return self.root / self.info.get("video_path", VIDEO_PATH).format(
            video_key=video_key,
            chunk_index=row[f"videos/{video_key}/chunk_index"],
            file_index=row[f"videos/{video_key}/file_index"],
        )

    def episode_files(self, episode_index: int) -> set[Path]:
        """The files holding episode ``episode_index``: its data file and each camera's video file (absolute paths;
        in layouts that pack episodes together, files other episodes share).

        Raises:
            IndexError: no such episode.
        """
        if not 0 <= episode_index < self.num_episodes:
            raise IndexError(f"episode {episode_index} out of range [0, {self.num_episodes})")
        row = self.episodes[episode_index]
        data = self.root / self.info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                         file_index=row["data/file_index"])
        return {data, *(self.video_path(episode_index, key) for key in self.video_keys)}

    def decode_episode(self, episode_index: int, video_key: str | None = None) -> np.ndarray:
        """Decodes one episode's frames of one camera.

        Args:
            episode_index: the episode, ``0 <= episode_index < num_episodes``.
            video_key: the camera, one of :attr:`video_keys`; None: :attr:`video_key`.

        Returns:
            `np.ndarray` of shape `(length, H, W, 3)`, uint8.

        Raises:
            IndexError: no such episode.
            ValueError: an unknown camera, or the video is truncated (names the file).
        """
        if not 0 <= episode_index < self.num_episodes:
            raise IndexError(f"episode {episode_index} out of range [0, {self.num_episodes})")
        video_key = self._camera(video_key)
        row = self.episodes[episode_index]
        start = int(round(row[f"videos/{video_key}/from_timestamp"] * self.fps))
        return decode_video(self.video_path(episode_index, video_key), start, int(row["length"]))

    @property
    def episode_policies(self) -> list[str]:
        """The name of the policy that produced each episode (``""`` where the recording did not name one)."""
        return [str(row.get("policy") or "") for row in self.episodes]

    @property
    def episode_tasks(self) -> list[str]:
        """The task text of each episode (its ``meta/episodes`` row's first ``tasks`` entry; ``""`` where none was
        recorded)."""
        return [str((row.get("tasks") or [""])[0] or "") for row in self.episodes]

    def episode_slice(self, episode_index: int) -> slice:
        return slice(int(self.episode_from[episode_index]), int(self.episode_to[episode_index]))


def copy_first_episodes(root: str | Path, out: str | Path, num_episodes: int) -> Path:
    """Copies the first ``num_episodes`` episodes of a LeRobot v3.0 dataset into a new dataset folder.

    For a smaller copy of a recording (a data-scaling study, or the part of a dataset that fits an upload to a GPU
    machine). The episodes' data and video files are copied byte for byte, so frames and actions are the source's
    exactly; the cached frames and latents (``cache/``) are not copied, they are rebuilt where the copy is used.
    ``meta/episodes`` keeps the first rows, ``meta/info.json`` gets the new totals and split, ``meta/tasks.parquet``
    is copied whole (task indices stay valid). ``meta/stats.json`` gets the kept frames' statistics of action,
    reward and states, as the recorder computes them; its other entries (the image statistics, which the recorder
    samples from the frames, and in datasets from elsewhere such columns as ``timestamp``) are the source's. Like
    LeRobot's dataset editing, the copy is a new folder; the source is only read. The copy appears at ``out`` in one
    rename, so an interrupted or refused copy leaves no dataset (``out``'s parent folders may have been created).

    Args:
        root: the source dataset folder.
        out: the new dataset folder; must not exist.
        num_episodes: how many episodes to keep, from episode 0; ``1 <= num_episodes <=`` the source's episodes.

    Returns:
        ``out``, a dataset :class:`LeRobotDataset` reads.

    Raises:
        DatasetError: the source is not a readable dataset (see :class:`LeRobotDataset`); a data or video file
            holds frames of both a kept and a dropped episode (a layout that packs episodes into shared files
            cannot be cut at this episode); or the first episodes' frames are not the first rows of the data.
        ValueError: ``num_episodes`` is not an integer (a bool, float or string) or is out of range.
        FileExistsError: ``out`` exists.
    """
    source = LeRobotDataset(root)
    if isinstance(num_episodes, bool) or not isinstance(num_episodes, (int, np.integer)) \
            or not 1 <= num_episodes <= source.num_episodes:
        raise ValueError(f"num_episodes must be an integer in [1, {source.num_episodes}] (the episodes of "
                         f"{source.root}), got {num_episodes!r}")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"dataset folder {out} exists already; choose a new folder for the copy")
    num_episodes = int(num_episodes)

    def files_of(episodes: range) -> set[Path]:  # relative to the dataset folder
        return {path.relative_to(source.root) for episode in episodes for path in source.episode_files(episode)}

    kept = files_of(range(num_episodes))
    shared = kept & files_of(range(num_episodes, source.num_episodes))
    if shared:
        raise DatasetError(f"{source.root}: {sorted(map(str, shared))[0]} holds frames of episodes on both sides of "
                           f"episode {num_episodes}; this dataset cannot be cut there")
    frames = int(source.episode_to[num_episodes - 1])
    if frames != int((source.episode_to - source.episode_from)[:num_episodes].sum()):
        raise DatasetError(f"{source.root}: the first {num_episodes} episodes are not the first frames of the data "
                           f"(meta/episodes 'dataset_from_index' / 'dataset_to_index')")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        for relative in sorted(kept) + [Path("meta/tasks.parquet")]:
            (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.root / relative, tmp / relative)
        # the source's episode rows with their own schema (LeRobot's float32 statistics columns stay float32)
        tables = [_read_parquet(path, "episode metadata")
                  for path in sorted((source.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))]
        episodes = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        episodes = episodes.sort_by(EPISODE_INDEX).slice(0, num_episodes)
        for column in ("meta/episodes/chunk_index", "meta/episodes/file_index"):  # now all in one file
            if column in episodes.column_names:
                episodes = episodes.set_column(episodes.column_names.index(column), column,
                                               pa.array(np.zeros(num_episodes, np.int64)))
        _write_parquet_atomic(episodes, tmp / EPISODES_PATH.format(chunk_index=0, file_index=0))
        keep = source.episode_index < num_episodes
        stats = dict(source.stats)
        stats[ACTION] = _stats(np.asarray(source.action[keep], np.float64))
        for key in (REWARD, OBS_STATE, OBS_ENV_STATE):
            if key in source.columns:
                stats[key] = _stats(np.asarray(source.columns[key][keep], np.float64).reshape(frames, -1))
        info = dict(source.info, total_episodes=num_episodes, total_frames=frames,
                    splits={"train": f"0:{num_episodes}"})
        write_text_atomic(tmp / "meta" / "stats.json", json.dumps(stats, indent=2))
        write_text_atomic(tmp / "meta" / "info.json", json.dumps(info, indent=2))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
