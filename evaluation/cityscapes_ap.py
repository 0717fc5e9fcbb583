"""Cityscapes' official instance-level AP (cityscapesscripts' evalInstanceLevelSemanticLabeling).

The paper reports Cityscapes AP with this evaluation, not COCO's mask AP: overlaps 0.5:0.95,
ground-truth instances under 100 pixels and crowd ("group") regions ignored, predictions on void
pixels not counted against them, per-class AP averaged over the 8 instance classes. Images are
kept as PNG bytes (ground truth as Cityscapes ``instanceIds`` maps, each predicted instance as a
binary mask); `results` writes them into a temporary folder in the layout the evaluation reads
and runs its own matching and averaging there.

The ground truth must be Cityscapes-encoded, as ``cops prepare-data cityscapes`` writes it:
segment id = label id for stuff and crowd regions, label id · 1000 + k for instances, category
id = Cityscapes label id.
"""

from __future__ import annotations

import contextlib
import copy
import io
import tempfile
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

INSTANCE_DIVISOR = 1000


def cityscapes_ap_applies(category_ids: Sequence[int], isthing: Sequence[bool]) -> bool:
    """Whether the classes are Cityscapes' (label ids as category ids, its 8 instance classes as
    the thing classes), so that the official instance evaluation can score them."""
    from cops.datasets.cityscapes import CITYSCAPES_CLASSES

    things = {int(c) for c, t in zip(category_ids, isthing, strict=True) if t}
    return things == {c.id for c in CITYSCAPES_CLASSES if c.isthing}


def cityscapes_scripts_missing() -> str | None:
    """None when cityscapesscripts can be imported, else what to install."""
    try:
        import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling  # noqa: F401
    except ImportError:
        return "Cityscapes AP needs cityscapesscripts: pip install 'cops[cityscapes]'"
    return None


def _png(array: np.ndarray) -> bytes:
    """Lossless PNG bytes of a uint8 or uint16 map."""
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise ValueError("could not encode a map as PNG")
    return data.tobytes()


def _check_encoding(gt_ids: np.ndarray, gt_segments: Sequence[dict[str, Any]], where: str) -> None:
    """Refuse ground truth whose ids are not Cityscapes' instanceIds encoding."""
    for seg in gt_segments:
        instance = seg.get("isthing") and not seg.get("iscrowd", 0)
        label = seg["id"] // INSTANCE_DIVISOR if instance else seg["id"]
        if label != seg["category_id"] or seg["id"] >= 2**16:
            raise ValueError(
                f"Cityscapes AP: image {where}: segment {seg['id']} (category "
                f"{seg['category_id']}) is not Cityscapes-encoded (label id, or label id · 1000 + "
                "k for instances); prepare the data with `cops prepare-data cityscapes`"
            )
    if gt_ids.max(initial=0) >= 2**16:
        raise ValueError(f"Cityscapes AP: image {where}: segment ids beyond 16 bits")


@contextlib.contextmanager
def _numpy_in1d(module: types.ModuleType) -> Iterator[None]:
    """Give `module` a numpy with ``in1d`` while it runs: numpy 2.4 removed it, and
    cityscapesscripts (2.3) still marks void pixels with it. Nothing else is changed."""
    if hasattr(np, "in1d"):
        yield
        return
    in1d = lambda a, b: np.isin(a, b).ravel()  # noqa: E731
    module.np = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np)}, in1d=in1d)
    try:
        yield
    finally:
        module.np = np


class CityscapesAP:
    """Accumulates images for the official Cityscapes instance evaluation (module doc)."""

    def __init__(self, thing_category_ids: Sequence[int]) -> None:
        self.category_ids = [int(c) for c in thing_category_ids]
        self._things = set(self.category_ids)
        self._images: list[tuple[str, bytes, list[tuple[bytes, int, float]]]] = []

    def add(
        self,
        gt_ids: np.ndarray,
        gt_segments: Sequence[dict[str, Any]],
        pred_ids: np.ndarray,
        pred_segments: Sequence[dict[str, Any]],
        image_id: object = None,
    ) -> None:
        """Record one image: its ground-truth map and each predicted thing instance's mask."""
        gt_ids, pred_ids = np.asarray(gt_ids), np.asarray(pred_ids)
        if gt_ids.shape != pred_ids.shape or gt_ids.ndim != 2:
            raise ValueError(
                f"Cityscapes AP: prediction shape {pred_ids.shape} differs from ground truth "
                f"{gt_ids.shape} (both must be [H, W])"
            )
        _check_encoding(gt_ids, gt_segments, repr(image_id))
        masks = [
            (_png((pred_ids == s["id"]).astype(np.uint8) * 255), int(s["category_id"]),
             float(s.get("score", 1.0)))
            for s in pred_segments
            if s["category_id"] in self._things
        ]  # fmt: skip
        self._images.append((str(image_id), _png(gt_ids.astype(np.uint16)), masks))

    def __iadd__(self, other: CityscapesAP) -> CityscapesAP:
        if not isinstance(other, CityscapesAP) or other.category_ids != self.category_ids:
            raise ValueError("only CityscapesAP accumulators over the same categories can merge")
        self._images.extend(other._images)
        return self

    def _write(self, root: Path) -> tuple[list[str], list[str]]:
        """The images in the evaluation's layout under `root`: (prediction lists, ground truths)."""
        predictions, truths = [], []
        for n, (_, gt_png, masks) in enumerate(sorted(self._images, key=lambda im: im[0])):
            (root / f"gt_{n}.png").write_bytes(gt_png)
            lines = []
            for j, (mask_png, label, score) in enumerate(masks):
                (root / f"pred_{n}_{j}.png").write_bytes(mask_png)
                lines.append(f"pred_{n}_{j}.png {label} {score!r}\n")
            (root / f"pred_{n}.txt").write_text("".join(lines), encoding="utf-8")
            predictions.append(str(root / f"pred_{n}.txt"))
            truths.append(str(root / f"gt_{n}.png"))
        return predictions, truths

    def results(self) -> dict[str, Any] | None:
        """AP and AP50 over the instance classes, and per-class AP (by category id), in percent.

        None when no image was added or no instance class has ground truth.
        """
        if not self._images:
            return None
        from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as official
        from cityscapesscripts.evaluation.instances2dict import instances2dict
        from cityscapesscripts.helpers.labels import name2label

        with tempfile.TemporaryDirectory(prefix="cops-cityscapes-ap-") as tmp:
            root = Path(tmp).resolve()
            predictions, truths = self._write(root)
            args = copy.copy(official.args)
            args.quiet, args.JSONOutput, args.colorized = True, False, False
            args.predictionPath = str(root)
            args.gtInstancesFile = str(root / "gtInstances.json")
            with contextlib.redirect_stdout(io.StringIO()), _numpy_in1d(official):
                official.setInstanceLabels(args)
                gt = instances2dict(truths)
                matches = official.matchGtWithPreds(predictions, truths, gt, args)
                averages = official.computeAverages(official.evaluateMatches(matches, args), args)
        if np.isnan(averages["allAp"]):
            return None
        per_class = {
            int(name2label[name].id): _percent(values["ap"])
            for name, values in averages["classes"].items()
        }
        return {
            "ap": _percent(averages["allAp"]),
            "ap50": _percent(averages["allAp50%"]),
            "per_class": per_class,
        }


def _percent(value: float) -> float | None:
    """A fraction in percent; None for NaN (a class without ground truth)."""
    return None if np.isnan(value) else 100.0 * float(value)
