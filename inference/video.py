"""Panoptic segmentation of a video, frame by frame, with thing ids kept across frames.

The input is a video file (whatever OpenCV reads: mp4, avi, mov, mkv…) or a folder of frames
read as one sequence in name order. Frames are streamed: one batch is in memory at a time, never
the whole video. Each frame is predicted on its own, its thing segments are given track ids by
:class:`~cops.inference.tracking.OverlapTracker` (tracking by overlap, a baseline), and it is
written as ``OUT/panoptic/<frame>.png`` (ids are track ids, so an instance has one id in every
PNG) with its entry in ``OUT/panoptic.json``; with ``overlay``, ``OUT/overlay.mp4`` shows the
frames with each track in a colour it keeps.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cops.datasets.panoptic_io import read_image
from cops.errors import CopsError
from cops.files import atomic_writer
from cops.inference.image_files import check_apart, find_images
from cops.inference.output_claims import OutputClaims
from cops.inference.outputs import PredictionWriter, render_overlay
from cops.inference.predictor import Predictor
from cops.inference.tracking import OverlapTracker

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"})
"""Suffixes `cops predict` reads as videos (compared case-insensitively)."""
OVERLAY_VIDEO = "overlay.mp4"
SEQUENCE_FPS = 10.0
"""Frame rate of the overlay video of a folder of frames (which has none of its own)."""


@dataclass
class Frame:
    """One frame to predict: its output name, index in the source and RGB pixels."""

    name: str
    index: int
    image: np.ndarray


@dataclass
class VideoPrediction:
    """What a video prediction wrote: frames, thing tracks started, the overlay video if any."""

    frames: int
    tracks: int
    fps: float
    overlay: Path | None = None


def video_frames(path: Path, every: int = 1, max_frames: int | None = None) -> Iterator[Frame]:
    """The frames of a video file, every `every`-th from the first, at most `max_frames`;
    skipped frames are not decoded."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise CopsError(f"{path}: OpenCV cannot open this video")
    try:
        index = taken = 0
        while (max_frames is None or taken < max_frames) and capture.grab():
            if index % every == 0:
                ok, bgr = capture.retrieve()
                if not ok:
                    raise CopsError(f"{path}: frame {index} cannot be decoded")
                taken += 1
                yield Frame(f"frame_{index:06d}", index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        capture.release()


def sequence_frames(folder: Path, every: int = 1, max_frames: int | None = None) -> Iterator[Frame]:
    """The image files of a folder (recursively, in name order) as frames of one sequence."""
    if not Path(folder).is_dir():
        raise CopsError(f"{folder}: --sequence expects a folder of frames")
    picked = find_images(folder)[::every][:max_frames]
    for position, (path, name) in enumerate(picked):
        yield Frame(name, position * every, read_image(path))


def _frame_info(source: Path, sequence: bool, every: int) -> tuple[int, float]:
    """Frames in the source (an estimate for video containers) and the overlay's frame rate."""
    if sequence:
        return len(find_images(source)), SEQUENCE_FPS / every
    capture = cv2.VideoCapture(str(source))
    try:
        if not capture.isOpened():
            raise CopsError(f"{source}: OpenCV cannot open this video")
        count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        fps = capture.get(cv2.CAP_PROP_FPS) or SEQUENCE_FPS * every
    finally:
        capture.release()
    return count, fps / every


class _OverlayVideo:
    """An mp4 of overlay frames, encoded into a hidden file and moved into place by the
    project's atomic writer only when :meth:`close` is called (constant memory)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.partial = path.with_name(f".{path.name}.partial.mp4")
        self.fps = fps
        self.writer: cv2.VideoWriter | None = None
        self.size = (0, 0)

    def add(self, rgb: np.ndarray) -> None:
        if self.writer is None:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            self.size = (rgb.shape[1], rgb.shape[0])
            self.writer = cv2.VideoWriter(str(self.partial), fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise CopsError(f"{self.path}: OpenCV cannot write an mp4 video here")
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> Path | None:
        if self.writer is None:
            return None
        self.writer.release()
        with open(self.partial, "rb") as source, atomic_writer(self.path) as target:
            shutil.copyfileobj(source, target)
        self.partial.unlink()
        return self.path

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.release()
        self.partial.unlink(missing_ok=True)


def _batches(frames: Iterator[Frame], size: int) -> Iterator[list[Frame]]:
    """Consecutive frames in lists of `size` (the last may be shorter)."""
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_video(
    source: Path,
    out: Path,
    predictor: Predictor,
    *,
    sequence: bool = False,
    every: int = 1,
    max_frames: int | None = None,
    overlay: bool = False,
    track_iou: float = 0.5,
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> VideoPrediction:
    """Predict and track every `every`-th frame (at most `max_frames`) of a video file, or of
    a folder of frames with `sequence`, into `out` (module doc for the files).

    `progress(advance, total)` follows the frames (`total` is the container's frame count,
    an estimate for some formats).
    """
    if every < 1 or (max_frames is not None and max_frames < 1) or batch_size < 1:
        raise CopsError("--every, --max-frames and --batch-size must be at least 1")
    source, out = Path(source), Path(out)
    if not sequence and source.is_dir():
        raise CopsError(f"{source}: a folder; add --sequence to read its images as video frames")
    check_apart(source, out)
    total, fps = _frame_info(source, sequence, every)
    total = -(-total // every)
    total = total if max_frames is None else min(total, max_frames)
    frames = (
        sequence_frames(source, every, max_frames)
        if sequence
        else video_frames(source, every, max_frames)
    )
    classes = predictor.classes
    tracker = OverlapTracker(predictor.category_ids.tolist(), predictor.isthing.tolist(), track_iou)
    video = None
    if overlay:  # replaces only an overlay video an earlier prediction run wrote
        OutputClaims(out, "panoptic.json", ["panoptic"]).claim([OVERLAY_VIDEO])
        video = _OverlayVideo(out / OVERLAY_VIDEO, fps)
    written = 0
    if progress is not None:
        progress(0, total)
    try:
        with PredictionWriter(out, classes) as writer:
            for batch in _batches(frames, batch_size):
                predictions = predictor.predict([f.image for f in batch])
                for frame, prediction in zip(batch, predictions, strict=True):
                    tracked = tracker.update(prediction)
                    writer.write(frame.name, tracked, image_id=frame.index, file_name=frame.name)
                    if video is not None:
                        video.add(render_overlay(frame.image, tracked, classes, tracker.tints))
                    written += 1
                if progress is not None:
                    progress(len(batch), max(total, written))
            if written == 0:
                raise CopsError(f"{source}: no frames could be read")
            # in place before the JSON, which marks the run complete (and its files its own)
            path = video.close() if video is not None else None
    except BaseException:
        if video is not None:
            video.discard()
        raise
    return VideoPrediction(written, tracker.tracks, fps, path)
