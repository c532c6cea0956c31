"""Reading and writing datasets in the LeRobot v3.0 layout.

Layout (LeRobot ``CODEBASE_VERSION = "v3.0"``; several episodes share one file)::

    meta/info.json                    fps, features, path templates, totals
    meta/stats.json                   min / max / mean / std / count per feature
    meta/tasks.parquet                task string -> task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode: length, offsets, video timestamps
    data/chunk-000/file-000.parquet   one row per frame: action, observation.state, next.reward, ...
    videos/observation.image/chunk-000/file-000.mp4   the frames of all episodes, back to back

Frames and actions are aligned as stated in :mod:`worldsim.constants`: ``action[t]`` follows frame ``t``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
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
from worldsim.data.video import VideoWriter, decode_video

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"


class DatasetError(ValueError):
    """A dataset on disk is missing a file or is inconsistent; the message names the file and the field."""


@dataclass
class Episode:
    """One recorded episode, as the collector hands it to :class:`LeRobotDatasetWriter`.

    Attributes:
        frames: `np.ndarray` `(T, H, W, 3)` uint8, observation ``t`` for ``t = 0 .. T-1``.
        action: `np.ndarray` `(T, A)` float32; ``action[t]`` is applied after ``frames[t]``.
        reward: `np.ndarray` `(T,)` float32, reward of the transition ``t -> t + 1``.
        terminated: `np.ndarray` `(T,)` bool, the transition ``t -> t + 1`` ended the episode (task over).
        truncated: `np.ndarray` `(T,)` bool, the episode was cut by a time limit after step ``t``.
        success: `np.ndarray` `(T,)` bool or None, frame ``t + 1`` is a success state.
        state: `np.ndarray` `(T, S)` float32 or None, proprioceptive state (PushT: agent position, pixels).
        environment_state: `np.ndarray` `(T, E)` float32 or None, full env state where the env exposes it
            (PushT: agent x, y, block x, y, angle; what ``reset_to_state`` takes).
        task: natural-language task description.
    """

    frames: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    success: np.ndarray | None = None
    state: np.ndarray | None = None
    environment_state: np.ndarray | None = None
    task: str = ""

    def __post_init__(self):
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


class LeRobotDatasetWriter:
    """Writes episodes into a new LeRobot v3.0 dataset folder.

    Everything is written into a temporary folder beside ``root`` and moved into place by :meth:`close`, so an
    interrupted recording never leaves a half-written dataset at ``root``.

    Args:
        root: the dataset folder to create; must not exist yet.
        fps: frame rate of the recording (Hz).
        robot_type: free-form embodiment name stored in ``meta/info.json`` (e.g. ``"pusht"``).
        env_id: the Gymnasium id the data came from, stored in ``meta/info.json`` (``None`` if not from an env).
        action_space: JSON description of the env's action space (``{"type": "Box", "low": [...], ...}``).
        video_key: feature name of the camera stream.

    Raises:
        FileExistsError: ``root`` exists already.

    >>> writer = LeRobotDatasetWriter("data/pusht", fps=10, robot_type="pusht")  # doctest: +SKIP
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
        self.fps, self.robot_type, self.env_id, self.action_space = fps, robot_type, env_id, action_space
        self.video_key = video_key
        self._video = VideoWriter(self._tmp / VIDEO_PATH.format(video_key=video_key, chunk_index=0, file_index=0), fps)
        self._columns: dict[str, list] = {}
        self._episodes: list[dict] = []
        self._tasks: dict[str, int] = {}
        self._image_sample: list[np.ndarray] = []
        self._frame_shape: tuple | None = None
        self._action_dim: int | None = None
        self.total_frames = 0

    def add_episode(self, episode: Episode) -> None:
        """Appends one episode (frames go to the video, the rest to the data table).

        Raises:
            ValueError: the episode's frame size or action dimension differs from earlier episodes.
        """
        length = len(episode.frames)
        if self._frame_shape is None:
            self._frame_shape = episode.frames.shape[1:]
            self._action_dim = episode.action.shape[1]
        if episode.frames.shape[1:] != self._frame_shape:
            raise ValueError(f"frame shape {episode.frames.shape[1:]} differs from the dataset's {self._frame_shape}")
        if episode.action.shape[1] != self._action_dim:
            raise ValueError(f"action dimension {episode.action.shape[1]} differs from the dataset's {self._action_dim}")
        task_index = self._tasks.setdefault(episode.task, len(self._tasks))
        episode_index = len(self._episodes)
        start = self.total_frames
        self._video.write(episode.frames)
        self._image_sample.append(episode.frames[:: max(1, length // 8)])
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
        if self._episodes and set(columns) != set(self._columns):
            raise ValueError(f"episode fields {sorted(columns)} differ from earlier episodes' {sorted(self._columns)}")
        for key, values in columns.items():
            self._columns.setdefault(key, []).extend(values)
        self._episodes.append(
            {
                EPISODE_INDEX: episode_index,
                "tasks": [episode.task],
                "length": length,
                "data/chunk_index": 0,
                "data/file_index": 0,
                "dataset_from_index": start,
                "dataset_to_index": start + length,
                f"videos/{self.video_key}/chunk_index": 0,
                f"videos/{self.video_key}/file_index": 0,
                f"videos/{self.video_key}/from_timestamp": start / self.fps,
                f"videos/{self.video_key}/to_timestamp": (start + length) / self.fps,
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
            }
        )
        self.total_frames += length

    def close(self) -> Path:
        """Writes the tables and metadata, then moves the dataset into place.

        Returns:
            The dataset folder.

        Raises:
            ValueError: no episode was added.
        """
        if not self._episodes:
            self.abort()
            raise ValueError("no episode was recorded; nothing to write")
        self._video.close()
        data_path = self._tmp / DATA_PATH.format(chunk_index=0, file_index=0)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        table = {key: np.stack(values) if key in (ACTION, OBS_STATE, OBS_ENV_STATE) else values
                 for key, values in self._columns.items()}
        arrays = {}
        for key, values in table.items():
            if isinstance(values, np.ndarray) and values.ndim == 2:
                arrays[key] = pa.array(list(values), type=pa.list_(pa.float32()))
            else:
                arrays[key] = pa.array(values)
        pq.write_table(pa.table(arrays), data_path)

        episodes_path = self._tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self._episodes), episodes_path)

        tasks = sorted(self._tasks.items(), key=lambda item: item[1])
        tasks_table = pa.table({"task": [t for t, _ in tasks], TASK_INDEX: [i for _, i in tasks]})
        pandas_meta = {"index_columns": ["task"], "column_indexes": [], "columns": [
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
            {"name": TASK_INDEX, "field_name": TASK_INDEX, "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
        ]}
        tasks_table = tasks_table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
        pq.write_table(tasks_table, self._tmp / "meta" / "tasks.parquet")

        height, width, _ = self._frame_shape
        features = {
            self.video_key: {
                "dtype": "video",
                "shape": [height, width, 3],
                "names": ["height", "width", "channels"],
                "info": {"video.fps": self.fps, "video.codec": "h264", "video.pix_fmt": self._video.pix_fmt,
                         "video.height": height, "video.width": width, "video.channels": 3, "has_audio": False},
            },
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
        }
        stats = {ACTION: _stats(table[ACTION]), REWARD: _stats(np.asarray(table[REWARD])[:, None])}
        for key in (OBS_STATE, OBS_ENV_STATE):
            if key in table:
                features[key] = _feature("float32", (table[key].shape[1],))
                stats[key] = _stats(table[key])
        if SUCCESS in table:
            features[SUCCESS] = _feature("bool", (1,))
        pixels = np.concatenate(self._image_sample).reshape(-1, 3) / 255.0
        image_stats = _stats(pixels)
        stats[self.video_key] = {k: [[[v]] for v in values] if k != "count" else values
                                 for k, values in image_stats.items()}
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
        (self._tmp / "meta" / "info.json").write_text(json.dumps(info, indent=2))
        (self._tmp / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))
        os.replace(self._tmp, self.root)
        return self.root

    def abort(self) -> None:
        """Discards everything written so far."""
        self._video.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


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
        video_key: which camera stream to use; default: the first ``video`` feature in ``meta/info.json``.

    Attributes:
        fps (int): frame rate, Hz.
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
        try:
            self.info = json.loads(info_path.read_text())
        except json.JSONDecodeError as error:
            raise DatasetError(f"{info_path} is not valid JSON: {error}") from error
        version = self.info.get("codebase_version")
        if version != CODEBASE_VERSION:
            raise DatasetError(f"{info_path}: field 'codebase_version' is {version!r}, expected {CODEBASE_VERSION!r}")
        for field in ("fps", "features", "data_path", "total_frames", "total_episodes"):
            if field not in self.info:
                raise DatasetError(f"{info_path}: required field {field!r} missing")
        self.fps = int(self.info["fps"])
        features = self.info["features"]
        video_keys = [key for key, feature in features.items() if feature.get("dtype") == "video"]
        if video_key is None:
            if not video_keys:
                raise DatasetError(f"{info_path}: 'features' has no video feature")
            video_key = OBS_IMAGE if OBS_IMAGE in video_keys else video_keys[0]
        elif video_key not in video_keys:
            raise DatasetError(f"{info_path}: video feature {video_key!r} not in 'features' (videos: {video_keys})")
        self.video_key = video_key
        self.frame_shape = tuple(features[video_key]["shape"])
        if ACTION not in features:
            raise DatasetError(f"{info_path}: 'features' has no {ACTION!r}")
        self.action_dim = int(np.prod(features[ACTION]["shape"]))

        stats_path = self.root / "meta" / "stats.json"
        if not stats_path.is_file():
            raise DatasetError(f"dataset statistics file missing: {stats_path}")
        self.stats = json.loads(stats_path.read_text())

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
        if len(rows) != self.info["total_episodes"]:
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
            path = self.video_path(row[EPISODE_INDEX])
            if not path.is_file():
                raise DatasetError(f"video file missing: {path} (episode {row[EPISODE_INDEX]}, key {self.video_key!r})")

    def _read_data(self) -> None:
        files = sorted({(row["data/chunk_index"], row["data/file_index"]) for row in self.episodes})
        tables = []
        for chunk_index, file_index in files:
            path = self.root / self.info["data_path"].format(chunk_index=chunk_index, file_index=file_index)
            tables.append(_read_parquet(path, "data"))
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        data_path = self.root / self.info["data_path"].format(chunk_index=files[0][0], file_index=files[0][1])
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

    def video_path(self, episode_index: int) -> Path:
        row = self.episodes[episode_index]
        return self.root / self.info.get("video_path", VIDEO_PATH).format(
            video_key=self.video_key,
            chunk_index=row[f"videos/{self.video_key}/chunk_index"],
            file_index=row[f"videos/{self.video_key}/file_index"],
        )

    def decode_episode(self, episode_index: int) -> np.ndarray:
        """Decodes one episode's frames.

        Returns:
            `np.ndarray` of shape `(length, H, W, 3)`, uint8.

        Raises:
            IndexError: no such episode.
            ValueError: the video is truncated (names the file).
        """
        if not 0 <= episode_index < self.num_episodes:
            raise IndexError(f"episode {episode_index} out of range [0, {self.num_episodes})")
        row = self.episodes[episode_index]
        start = int(round(row[f"videos/{self.video_key}/from_timestamp"] * self.fps))
        return decode_video(self.video_path(episode_index), start, int(row["length"]))

    def episode_slice(self, episode_index: int) -> slice:
        return slice(int(self.episode_from[episode_index]), int(self.episode_to[episode_index]))
