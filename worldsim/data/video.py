"""Video encoding and decoding with PyAV (FFmpeg), used by the LeRobot dataset reader and writer."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

VIDEO_PIX_FMT = "yuv444p"  # full chroma: 4:2:0 chroma subsampling smears small coloured objects (an agent a few pixels wide)


def _pyav():
    """The ``av`` module (PyAV), imported on first use so that code that never touches video files (imagination,
    the benchmark) runs where PyAV is not installed. Raises ImportError naming the package when it is missing."""
    try:
        import av
    except ImportError as error:  # pragma: no cover - av is a core dependency
        raise ImportError("reading or writing video files needs PyAV: pip install av") from error
    return av


class VideoWriter:
    """Appends RGB frames to one video file (H.264 in mp4 by default) with PyAV.

    Args:
        path: output file (``.mp4``).
        fps: frames per second (Hz).
        codec: FFmpeg encoder name.
        pix_fmt: pixel format; ``yuv444p`` keeps the colours of small objects (an agent a few pixels wide) that 4:2:0
            chroma subsampling smears at 96 x 96.
        crf: constant rate factor (lower is better quality).
    """

    def __init__(self, path: str | Path, fps: int, codec: str = "libx264", pix_fmt: str = VIDEO_PIX_FMT,
                 crf: int = 12):
        self.path = Path(path)
        self.fps, self.codec, self.pix_fmt, self.crf = fps, codec, pix_fmt, crf
        self._container = None
        self._stream = None
        self.num_frames = 0

    def _open(self, height: int, width: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = _pyav().open(str(self.path), mode="w")
        self._stream = self._container.add_stream(self.codec, rate=Fraction(self.fps))
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = self.pix_fmt
        self._stream.options = {"crf": str(self.crf), "g": "20"}

    def write(self, frames: np.ndarray) -> None:
        """Appends frames.

        Args:
            frames: `np.ndarray` of shape `(T, H, W, 3)` or `(H, W, 3)`, uint8 RGB.

        Raises:
            ValueError: wrong dtype or shape, or a size different from the first frames written.
        """
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        if self._container is None:
            self._open(frames.shape[1], frames.shape[2])
        elif (frames.shape[1], frames.shape[2]) != (self._stream.height, self._stream.width):
            raise ValueError(
                f"frame size {frames.shape[1:3]} differs from the video's {(self._stream.height, self._stream.width)}"
            )
        for frame in frames:
            video_frame = _pyav().VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in self._stream.encode(video_frame):
                self._container.mux(packet)
        self.num_frames += len(frames)

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None


def decode_video(path: str | Path, start_frame: int = 0, num_frames: int | None = None) -> np.ndarray:
    """Decodes frames ``[start_frame, start_frame + num_frames)`` of a video file.

    PyAV decodes; where PyAV is not installed, OpenCV's FFmpeg build does (``cv2.VideoCapture``, frame-accurate
    seeking; the same pixels for worldsim's H.264 files, tested).

    Args:
        path: video file.
        start_frame: index of the first frame to return (frames counted from 0 at timestamp 0).
        num_frames: how many frames; ``None`` decodes to the end.

    Returns:
        `np.ndarray` of shape `(num_frames, H, W, 3)`, uint8 RGB.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds fewer frames than asked for (truncated or wrong metadata), no video stream, or
            data FFmpeg cannot decode; the message names the file (and the range asked for and the count found).
        ImportError: neither PyAV nor OpenCV is installed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file missing: {path}")
    try:
        av = _pyav()
    except ImportError:
        frames = _decode_with_opencv(path, start_frame, num_frames)
    else:
        frames = _decode_with_pyav(av, path, start_frame, num_frames)
    if num_frames is not None and len(frames) != num_frames:
        raise ValueError(
            f"{path}: asked for frames [{start_frame}, {start_frame + num_frames}) but the video holds only "
            f"{len(frames)} of them (truncated video or wrong episode metadata)"
        )
    if not frames:
        raise ValueError(f"{path}: no frames decoded from frame {start_frame}")
    return np.stack(frames)


def _decode_with_pyav(av, path: Path, start_frame: int, num_frames: int | None) -> list[np.ndarray]:
    try:
        return _pyav_frames(av, path, start_frame, num_frames)
    except av.error.FFmpegError as error:  # a truncated or damaged file: FFmpeg finds no decoder, bad packets, ...
        raise ValueError(f"{path}: FFmpeg cannot decode this video ({type(error).__name__}: {error}); the file is "
                         "truncated or damaged") from error


def _pyav_frames(av, path: Path, start_frame: int, num_frames: int | None) -> list[np.ndarray]:
    frames = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: holds no video stream (a truncated or damaged file, or not a video)")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if start_frame > 0 and rate:
            # Seek to the key frame at or before the start, then decode forward.
            container.seek(int(start_frame / float(rate) / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            index = int(round(frame.time * float(rate))) if frame.time is not None and rate else len(frames)
            if index < start_frame:
                continue
            frames.append(frame.to_ndarray(format="rgb24"))
            if num_frames is not None and len(frames) == num_frames:
                break
    return frames


def _decode_with_opencv(path: Path, start_frame: int, num_frames: int | None) -> list[np.ndarray]:
    try:
        import cv2
    except ImportError as error:
        raise ImportError("decoding video needs PyAV (pip install av) or OpenCV (pip install opencv-python)") from error
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open this video")
    try:
        if start_frame > 0:
            capture.set(cv2.CAP_PROP_POS_FRAMES, start_frame)
        frames = []
        while num_frames is None or len(frames) < num_frames:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    return frames
