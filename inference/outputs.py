"""Write panoptic predictions as COCO panoptic PNG + JSON, with optional colour overlays.

Layout under the output folder ``OUT``::

    OUT/panoptic/<name>.png    segment ids as COCO panoptic RGB (id = R + 256·G + 256²·B)
    OUT/panoptic.json          images, annotations (segments_info) and categories
    OUT/overlay/<name>.png     with overlay=True: the image, segment colours, borders, legend

Every file is written atomically; the JSON only by :meth:`PredictionWriter.close`, so a folder
with ``panoptic.json`` is complete and any COCO panoptic tool (panopticapi) can read it. Writing
into a folder that holds an earlier result removes its ``panoptic.json`` before the first PNG is
replaced: an interrupted re-run leaves no JSON that no longer matches the PNGs beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from cops.datasets.class_list import ClassList
from cops.datasets.panoptic_io import (
    segment_stats,
    write_image,
    write_panoptic_png,
)
from cops.files import atomic_write_json
from cops.inference.output_claims import OutputClaims
from cops.inference.result import PanopticPrediction

__all__ = ["PredictionWriter", "render_overlay"]

OVERLAY_DIR = "overlay"
_ALPHA = 0.5
"""Weight of the segment colour in the overlay blend."""
_BORDER = (255, 255, 255)
# Instance colours: the class colour mixed with a target at a weight (0 = the class colour).
# Greedy colouring over touching instances of a class picks the first entry no neighbour uses.
_TINTS = (
    ((0, 0, 0), 0.0),
    ((255, 255, 255), 0.45),
    ((0, 0, 0), 0.45),
    ((255, 255, 255), 0.25),
    ((0, 0, 0), 0.25),
    ((255, 255, 255), 0.65),
    ((0, 0, 0), 0.65),
    ((128, 128, 128), 0.5),
)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _touching_pairs(ids: np.ndarray) -> np.ndarray:
    """Distinct unordered pairs ``[P, 2]`` of different ids that touch (4-neighbourhood)."""
    pairs = [
        np.stack([ids[:, :-1].ravel(), ids[:, 1:].ravel()], axis=1),
        np.stack([ids[:-1, :].ravel(), ids[1:, :].ravel()], axis=1),
    ]
    pairs = np.concatenate(pairs)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(np.sort(pairs, axis=1), axis=0)


def _segment_colors(
    ids: np.ndarray,
    seg_class: dict[int, int],
    table: ClassList,
    tints: Mapping[int, int] | None = None,
) -> dict[int, np.ndarray]:
    """Colour per segment id: stuff its class colour, things a tint no touching twin shares
    (or the tint `tints` gives the id, as video tracks keep theirs)."""
    neighbours: dict[int, set[int]] = {i: set() for i in seg_class}
    for a, b in _touching_pairs(ids).tolist():
        if a in seg_class and b in seg_class and seg_class[a] == seg_class[b]:
            neighbours[a].add(b)
            neighbours[b].add(a)
    tint_of: dict[int, int] = {}
    colors = {}
    for seg_id in sorted(seg_class):
        base = np.asarray(table.colors[seg_class[seg_id]], dtype=np.float64)
        if not table.isthing[seg_class[seg_id]]:
            colors[seg_id] = base
            continue
        taken = {tint_of[n] for n in neighbours[seg_id] if n in tint_of}
        free = [t for t in range(len(_TINTS)) if t not in taken]
        tint_of[seg_id] = free[0] if free else seg_id % len(_TINTS)
        if tints is not None and seg_id in tints:
            tint_of[seg_id] = tints[seg_id] % len(_TINTS)
        target, weight = _TINTS[tint_of[seg_id]]
        colors[seg_id] = (1 - weight) * base + weight * np.asarray(target, dtype=np.float64)
    return colors


def _borders(ids: np.ndarray, things: np.ndarray, thickness: int) -> np.ndarray:
    """Mask of pixels on a border between two segments where one of them is a thing."""
    mask = np.zeros(ids.shape, dtype=bool)
    for axis in (0, 1):
        a = np.swapaxes(ids, 0, axis)
        t = np.swapaxes(things, 0, axis)
        edge = (a[:-1] != a[1:]) & (t[:-1] | t[1:])
        m = np.swapaxes(mask, 0, axis)
        m[:-1] |= edge
        m[1:] |= edge
    if thickness > 1:
        kernel = np.ones((thickness, thickness), dtype=np.uint8)
        mask = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    return mask


def _draw_legend(canvas: np.ndarray, entries: list[tuple[str, np.ndarray]]) -> None:
    """Draw class swatches and names in columns from the top-left corner, scaled to the image."""
    height, width = canvas.shape[:2]
    scale = float(np.clip(min(height, width) / 900.0, 0.35, 2.5))
    thick = max(1, round(scale * 1.5))
    (_, text_h), base = cv2.getTextSize("Ag", _FONT, scale, thick)
    line = text_h + base + max(2, round(6 * scale))
    pad = max(2, round(4 * scale))
    swatch = text_h + base
    rows = max(1, (height - 2 * pad) // line)
    x = pad
    for start in range(0, len(entries), rows):
        column = entries[start : start + rows]
        text_w = max(cv2.getTextSize(name, _FONT, scale, thick)[0][0] for name, _ in column)
        col_w = swatch + pad + text_w + 2 * pad
        x1, y1 = min(width, x + col_w), min(height, pad + line * len(column) + pad)
        box = canvas[0:y1, x:x1]
        box[:] = (box * 0.35).astype(np.uint8)
        for row, (name, color) in enumerate(column):
            top = pad + row * line
            fill = tuple(int(v) for v in color)
            cv2.rectangle(canvas, (x + pad, top), (x + pad + swatch, top + swatch), fill, -1)
            origin = (x + 2 * pad + swatch, top + text_h)
            cv2.putText(canvas, name, origin, _FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)
        x += col_w
        if x >= width:
            break


def render_overlay(
    image: np.ndarray,
    prediction: PanopticPrediction,
    classes: ClassList | Mapping[str, Any],
    tints: Mapping[int, int] | None = None,
) -> np.ndarray:
    """The image (uint8 RGB [H, W, 3]) blended with segment colours, thing borders and a legend.

    Stuff segments take their class colour, thing instances a tint of it that differs from every
    touching instance of the same class (or, for ids in `tints`, the tint given there); the
    legend lists the classes present.
    """
    table = classes if isinstance(classes, ClassList) else ClassList.from_dict(classes)
    ids = np.asarray(prediction.ids)
    if image.shape != (*ids.shape, 3) or image.dtype != np.uint8:
        raise ValueError(
            f"image: expected uint8 RGB of the prediction's size {ids.shape}, "
            f"got {image.dtype} {image.shape}"
        )
    values, inverse = np.unique(ids, return_inverse=True)
    inverse = inverse.reshape(ids.shape)
    by_id = {int(s["id"]): s for s in prediction.segments}
    seg_class = {
        v: table.class_of(by_id[v]["category_id"]) for v in values.tolist() if v and v in by_id
    }
    colors = _segment_colors(ids, seg_class, table, tints)
    shown = np.asarray([v in colors for v in values.tolist()])
    palette = np.asarray([colors.get(v, np.zeros(3)) for v in values.tolist()]).reshape(-1, 3)
    thing = np.asarray([v in seg_class and table.isthing[seg_class[v]] for v in values.tolist()])
    mask = shown[inverse]
    out = image.astype(np.float64)
    out[mask] = (1 - _ALPHA) * out[mask] + _ALPHA * palette[inverse[mask]]
    thickness = max(1, round(min(ids.shape) / 500))
    out[_borders(ids, thing[inverse], thickness)] = _BORDER
    canvas = np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    present = sorted(set(seg_class.values()))
    if present:
        _draw_legend(canvas, [(table.names[k], table.colors[k]) for k in present])
    return canvas


def _check_name(name: str) -> str:
    """An output name: a relative "/"-separated path without ".." (normalised: no "." parts)."""
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or "\\" in name or ".." in parts:
        raise ValueError(f"name {name!r}: expected a relative path like 'sub/image' using '/'")
    return "/".join(parts)


class PredictionWriter:
    """Collects predictions into ``OUT/<panoptic_dir>/*.png`` and ``OUT/<json_name>``.

    Use as a context manager (the JSON is written on a clean exit, not after an exception, so an
    interrupted run leaves no complete-looking result) or call :meth:`close` yourself.
    """

    def __init__(
        self,
        out: Path,
        classes: ClassList | Mapping[str, Any],
        overlay: bool = False,
        panoptic_dir: str = "panoptic",
        json_name: str = "panoptic.json",
    ) -> None:
        self.out = Path(out)
        self.table = classes if isinstance(classes, ClassList) else ClassList.from_dict(classes)
        self.overlay = overlay
        self.panoptic_dir = self.out / panoptic_dir
        self.json_path = self.out / json_name
        self._claims = OutputClaims(self.out, json_name, [panoptic_dir, OVERLAY_DIR])
        self._images: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []
        self._names: set[str] = set()
        self._closed = False
        self._old_json_removed = False

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True

    def claim(self, names: Iterable[str]) -> None:
        """Check, before anything is written, that writing `names` (and the JSON) replaces only
        earlier predictions (see :class:`~cops.inference.output_claims.OutputClaims`)."""
        folder = self.panoptic_dir.relative_to(self.out).as_posix()
        files = [self.json_path.name]
        for name in map(_check_name, names):
            files.append(f"{folder}/{name}.png")
            if self.overlay:
                files.append(f"{OVERLAY_DIR}/{name}.png")
        self._claims.claim(files)

    def write(
        self,
        name: str,
        prediction: PanopticPrediction,
        image: np.ndarray | None = None,
        image_id: Any = None,
        file_name: str | None = None,
    ) -> Path:
        """Write one prediction as ``<panoptic_dir>/<name>.png`` (and its overlay); return the PNG.

        `name` may contain "/" sub-folders. ``image_id`` defaults to `name`, ``file_name`` (the
        input image's, for the JSON's ``images``) to `name`. Segments not in ``prediction.ids``
        are left out; every id in the map must have a segment. Areas and boxes are recomputed
        from the map so that PNG and JSON always agree.
        """
        if self._closed:
            raise ValueError(f"{self.json_path}: the writer is closed")
        name = _check_name(name)
        if name in self._names:
            raise ValueError(f"name {name!r} was already written")
        if self.overlay and image is None:
            raise ValueError(f"{name}: overlay=True needs the input image")
        ids = np.asarray(prediction.ids)
        if ids.ndim != 2 or ids.dtype.kind not in "iu" or (ids.size and ids.min() < 0):
            raise ValueError(f"{name}: prediction.ids must be a non-negative integer map [H, W]")
        if ids.size and ids.max() >= 1 << 24:
            raise ValueError(f"{name}: segment ids must be below 2**24 (COCO panoptic RGB)")
        stats = segment_stats(ids)
        by_id = {int(s["id"]): s for s in prediction.segments}
        unknown = sorted(set(stats) - set(by_id))
        if unknown:
            raise ValueError(f"{name}: ids {unknown[:5]} in the map have no segment")
        segments_info = []
        for seg_id, (area, bbox) in stats.items():
            seg = by_id[seg_id]
            k = self.table.class_of(seg["category_id"])
            segments_info.append(
                {
                    "id": seg_id,
                    "category_id": self.table.category_ids[k],
                    "isthing": self.table.isthing[k],
                    "iscrowd": 0,
                    "area": area,
                    "bbox": bbox,
                    "score": float(seg.get("score", 1.0)),
                }
            )
        overlay = None
        if self.overlay:
            overlay = render_overlay(image, prediction, self.table)
        self.claim([name])
        if not self._old_json_removed:
            self.json_path.unlink(missing_ok=True)  # it would describe PNGs about to change
            self._old_json_removed = True
        png = self.panoptic_dir / f"{name}.png"
        write_panoptic_png(png, ids)
        if overlay is not None:
            write_image(self.out / OVERLAY_DIR / f"{name}.png", overlay)
        image_id = name if image_id is None else image_id
        height, width = ids.shape
        self._images.append(
            {
                "id": image_id,
                "file_name": name if file_name is None else file_name,
                "height": int(height),
                "width": int(width),
            }
        )
        self._annotations.append(
            {"image_id": image_id, "file_name": f"{name}.png", "segments_info": segments_info}
        )
        self._names.add(name)
        return png

    def close(self) -> Path:
        """Write the COCO panoptic JSON (once; later calls do nothing) and return its path."""
        if not self._closed:
            atomic_write_json(
                self.json_path,
                {
                    "images": self._images,
                    "annotations": self._annotations,
                    "categories": self.table.categories(),
                },
            )
            self._claims.settle()
            self._closed = True
        return self.json_path
