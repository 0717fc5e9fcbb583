"""COCO panoptic primitives: RGB <-> id encoding, PNG/JSON reading and writing."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cops.errors import DatasetError
from cops.files import atomic_write_bytes, not_a_file

log = logging.getLogger(__name__)

VOID_ID = 0
_DENSE_LIMIT = 1 << 20


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Encode segment ids [H, W] as an RGB image [H, W, 3] (id = R + 256·G + 256²·B)."""
    ids = np.asarray(ids, dtype=np.int64)
    rgb = np.empty((*ids.shape, 3), dtype=np.uint8)
    rgb[..., 0] = ids % 256
    rgb[..., 1] = (ids // 256) % 256
    rgb[..., 2] = (ids // 65536) % 256
    return rgb


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """Decode an RGB panoptic image [H, W, 3] into segment ids [H, W] (int64)."""
    rgb = np.asarray(rgb).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def write_image(path: Path, image: np.ndarray, rgb: bool = True) -> None:
    """Encode an image (RGB unless `rgb=False`) by the path's extension; write atomically."""
    path = Path(path)
    array = image[..., ::-1] if (rgb and image.ndim == 3) else image
    ok, buf = cv2.imencode(path.suffix, np.ascontiguousarray(array))
    if not ok:
        raise DatasetError(f"{path}: could not encode image as {path.suffix}")
    atomic_write_bytes(path, buf.tobytes())


def write_panoptic_png(path: Path, ids: np.ndarray) -> None:
    """Write segment ids as a COCO panoptic RGB PNG, atomically."""
    write_image(Path(path), id2rgb(ids))


def _decode(path: Path, flags: int) -> np.ndarray:
    """Decode an image file with OpenCV `flags`; every failure is a DatasetError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: {not_a_file(path, 'image file')}")
    data = np.fromfile(path, dtype=np.uint8)
    try:
        image = cv2.imdecode(data, flags) if data.size else None
    except cv2.error as exc:  # e.g. a header announcing an image too large to decode
        reason = getattr(exc, "err", "") or str(exc).strip()
        raise DatasetError(f"{path}: cannot decode image (OpenCV: {reason})") from exc
    if image is None:
        raise DatasetError(f"{path}: not a readable image (corrupt or unsupported format)")
    if _truncated_jpeg(data):
        log.warning("%s: JPEG data is truncated or corrupt; using the part that decoded", path)
    return image


_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"


def _truncated_jpeg(data: np.ndarray) -> bool:
    """Whether `data` is a JPEG stream without its end marker (libjpeg still decodes it, filling
    the missing part grey, and only prints an anonymous warning)."""
    head, tail = data[:2].tobytes(), data[-64:].tobytes()
    return head == _JPEG_START and _JPEG_END not in tail


def read_image(path: Path) -> np.ndarray:
    """Read an image as RGB uint8 [H, W, 3]; a clear error names unreadable files."""
    return _decode(path, cv2.IMREAD_COLOR)[..., ::-1].copy()


_TO_RGBA = {1: cv2.COLOR_GRAY2RGBA, 3: cv2.COLOR_BGR2RGBA, 4: cv2.COLOR_BGRA2RGBA}


def read_panoptic_png(path: Path) -> np.ndarray:
    """Read a COCO panoptic PNG into segment ids [H, W] (int64).

    The PNG is decoded as stored (no colour conversion), widened to RGBA and viewed as
    little-endian 32-bit words, so the id R + 256·G + 256²·B comes out without per-channel
    arithmetic (about 3× faster than decoding to RGB and combining channels).
    """
    image = _decode(path, cv2.IMREAD_UNCHANGED)
    if image.dtype != np.uint8:
        raise DatasetError(f"{path}: panoptic PNGs must be 8-bit RGB, got {image.dtype} pixels")
    channels = 1 if image.ndim == 2 else image.shape[2]
    rgba = cv2.cvtColor(image, _TO_RGBA[channels])
    return (rgba.view("<u4")[..., 0] & 0xFFFFFF).astype(np.int64)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GREY, PNG_RGB, PNG_PALETTE, PNG_GREY_ALPHA, PNG_RGBA = 0, 2, 3, 4, 6
"""PNG colour types (the IHDR field)."""


def png_format(path: Path) -> tuple[int, int]:
    """Bit depth and colour type from a PNG header, to tell label formats apart before decoding."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise DatasetError(f"{path}: not a PNG file; label images must be lossless PNGs")
    return head[24], head[25]


def read_json(path: Path) -> Any:
    """Load a JSON file; missing or malformed files raise a DatasetError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); JSON must be UTF-8"
        ) from exc


def segment_stats(ids: np.ndarray) -> dict[int, tuple[int, list[int]]]:
    """Area and COCO bbox [x, y, w, h] of every non-void id in a segment-id map [H, W].

    No per-segment masks: ids below 2**20 are counted densely, others sorted once, so large maps
    with many segments stay fast.
    """
    ids = np.asarray(ids)
    height, width = ids.shape
    if ids.size and ids.min() >= 0 and ids.max() < _DENSE_LIMIT:
        counts = np.bincount(ids.ravel())
        values = np.flatnonzero(counts)
        lookup = np.zeros(counts.size, dtype=np.intp)
        lookup[values] = np.arange(values.size)
        inverse, areas = lookup[ids], counts[values]
    else:
        values, inverse = np.unique(ids, return_inverse=True)
        inverse = inverse.reshape(height, width)
        areas = np.bincount(inverse.ravel(), minlength=values.size)
    in_col = np.zeros((values.size, width), dtype=bool)
    in_col[inverse, np.arange(width)[None, :]] = True
    in_row = np.zeros((values.size, height), dtype=bool)
    in_row[inverse, np.arange(height)[:, None]] = True
    x0 = in_col.argmax(axis=1)
    x1 = width - 1 - in_col[:, ::-1].argmax(axis=1)
    y0 = in_row.argmax(axis=1)
    y1 = height - 1 - in_row[:, ::-1].argmax(axis=1)
    return {
        int(v): (int(a), [int(xa), int(ya), int(xb - xa + 1), int(yb - ya + 1)])
        for v, a, xa, xb, ya, yb in zip(values, areas, x0, x1, y0, y1, strict=True)
        if v != VOID_ID
    }
