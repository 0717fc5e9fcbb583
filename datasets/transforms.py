"""Joint image/label augmentation, normalisation, target generation and batch collation.

Transforms are called as ``transform(sample, rng)`` with a `numpy.random.Generator`; all randomness
comes from `rng`, so a dataset that seeds it per (seed, epoch, index) is reproducible in any
DataLoader worker and after a resume. Geometry uses the pixel-centre convention for both the image
(bilinear) and the labels (nearest), so the two stay aligned under any scale, crop and flip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from cops.datasets.panoptic_io import VOID_ID
from cops.datasets.prepared import IGNORE_LABEL
from cops.datasets.targets import TargetConfig, make_targets

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_FULL_RES_PAD = {"image": 0.0, "panoptic": VOID_ID, "semantic": IGNORE_LABEL, "weights": 0.0}
_STRIDE_PAD = {
    "semantic_s4": IGNORE_LABEL,
    "weights_s4": 0.0,
    "panoptic_s4": VOID_ID,
    "cut_targets": 0.0,
    "cut_weights": 0.0,
}


def _axis_map(
    out_size: int, offset: int, scale: float, scaled_size: int, src_size: int, flip: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest source index of every output position along one axis, and whether it is inside."""
    scaled = np.arange(out_size)[::-1] if flip else np.arange(out_size)
    scaled = scaled + offset
    inside = (scaled >= 0) & (scaled < scaled_size)
    src = np.clip(np.floor((scaled + 0.5) / scale).astype(np.int64), 0, src_size - 1)
    return src, inside


def _resample(
    image: np.ndarray,
    panoptic: np.ndarray,
    scaled_size: tuple[int, int],
    offset: tuple[int, int],
    out_size: tuple[int, int],
    flip: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Resize to `scaled_size`, take the window at `offset` of `out_size`, optionally mirror.

    Returns the image, the panoptic ids (void outside the resized image) and the row/column masks
    of output positions inside the resized image.
    """
    (src_h, src_w), (sh, sw), (oy, ox), (oh, ow) = panoptic.shape, scaled_size, offset, out_size
    scale_y, scale_x = sh / src_h, sw / src_w
    rows, rows_in = _axis_map(oh, oy, scale_y, sh, src_h, False)
    cols, cols_in = _axis_map(ow, ox, scale_x, sw, src_w, flip)
    labels = panoptic[np.ix_(rows, cols)]
    labels[~rows_in] = VOID_ID
    labels[:, ~cols_in] = VOID_ID
    # Source pixel centre (x + 0.5) lands on scale·(x + 0.5) in the resized image, then shifts.
    tx = 0.5 * scale_x - 0.5 - ox
    ty = 0.5 * scale_y - 0.5 - oy
    if flip:
        matrix = np.array([[-scale_x, 0.0, ow - 1 - tx], [0.0, scale_y, ty]])
    else:
        matrix = np.array([[scale_x, 0.0, tx], [0.0, scale_y, ty]])
    warped = cv2.warpAffine(
        image, matrix, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return warped, labels, rows_in, cols_in


class _Finish:
    """Shared tail of both transforms: normalise, zero the padding, make targets, to tensors."""

    def __init__(self, targets: TargetConfig, mean: Sequence[float], std: Sequence[float]) -> None:
        self.targets = targets
        self.mean = np.asarray(mean, dtype=np.float32) * 255.0
        self.inv_std = 1.0 / (np.asarray(std, dtype=np.float32) * 255.0)

    def finish(
        self,
        sample: dict[str, Any],
        image: np.ndarray,
        panoptic: np.ndarray,
        rows_in: np.ndarray,
        cols_in: np.ndarray,
    ) -> dict[str, Any]:
        normalised = (image.astype(np.float32) - self.mean) * self.inv_std
        normalised[~rows_in] = 0.0
        normalised[:, ~cols_in] = 0.0
        targets = make_targets(panoptic, sample["segments"], self.targets)
        div = self.targets.size_divisibility
        if div:  # bottom/right, as the targets: the normalised mean (0) and void
            pad = [(0, -size % div) for size in panoptic.shape]
            normalised = np.pad(normalised, [*pad, (0, 0)])
            panoptic = np.pad(panoptic, pad, constant_values=VOID_ID)
        out = {key: sample[key] for key in ("segments", "image_id", "file_name") if key in sample}
        out["orig_size"] = tuple(sample["panoptic"].shape)
        out["image"] = torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))
        out["panoptic"] = torch.from_numpy(panoptic)
        out.update({key: torch.from_numpy(value) for key, value in targets.items()})
        return out


def shortest_edge_size(
    height: int, width: int, shortest: int, longest: int | None
) -> tuple[int, int]:
    """The size after resizing the shorter side to `shortest`, the longer side to at most
    `longest`, rounded ``int(x + 0.5)`` (detectron2's ResizeShortestEdge, as the original)."""
    scale = shortest / min(height, width)
    if longest is not None and max(height, width) * scale > longest:
        scale = longest / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


class TrainTransform(_Finish):
    """Random scale, random crop, random horizontal flip.

    Scale: with `shortest_edges` (the paper) the shorter side becomes one of them at random, the
    longer at most `max_size`; otherwise the image is scaled by a factor drawn uniformly from
    `scale_range`. Crop: with `clip_crop` (the paper) the window is ``min(crop_size, image)`` at
    a random offset and the targets' ``size_divisibility`` pads it bottom/right (boundary weight
    1 there); otherwise it is `crop_size` at a random offset, void where it overhangs any side.
    """

    def __init__(
        self,
        crop_size: tuple[int, int],
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip: bool = True,
        targets: TargetConfig = TargetConfig(),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        *,
        shortest_edges: Sequence[int] | None = None,
        max_size: int | None = None,
        clip_crop: bool = False,
    ) -> None:
        super().__init__(targets, mean, std)
        if len(crop_size) != 2 or min(crop_size) < 1:
            raise ValueError(f"crop_size must be (height, width) > 0, got {crop_size}")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
        if shortest_edges is not None and (not shortest_edges or min(shortest_edges) < 1):
            raise ValueError(f"shortest_edges must be positive sizes, got {shortest_edges}")
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.flip = flip
        self.shortest_edges = None if shortest_edges is None else [int(s) for s in shortest_edges]
        self.max_size = max_size
        self.clip_crop = clip_crop

    def _scaled_size(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        """The resized image's size before cropping."""
        if self.shortest_edges is not None:
            shortest = self.shortest_edges[int(rng.integers(len(self.shortest_edges)))]
            return shortest_edge_size(height, width, shortest, self.max_size)
        scale = rng.uniform(*self.scale_range)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Augment one raw sample (scale, crop and flip as the class doc says)."""
        height, width = sample["panoptic"].shape
        scaled = self._scaled_size(height, width, rng)
        if self.clip_crop:
            window = tuple(min(s, c) for s, c in zip(scaled, self.crop_size, strict=True))
        else:
            window = self.crop_size
        offset = tuple(
            int(rng.integers(min(0, s - c), max(0, s - c) + 1))
            for s, c in zip(scaled, window, strict=True)
        )
        flip = self.flip and bool(rng.random() < 0.5)
        image, panoptic, rows_in, cols_in = _resample(
            sample["image"], sample["panoptic"], scaled, offset, window, flip
        )
        return self.finish(sample, image, panoptic, rows_in, cols_in)


class EvalTransform(_Finish):
    """No augmentation; optionally resize so the shorter side is `short_side` pixels."""

    def __init__(
        self,
        targets: TargetConfig = TargetConfig(),
        short_side: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(targets, mean, std)
        if short_side is not None and short_side < 1:
            raise ValueError(f"short_side must be positive, got {short_side}")
        self.short_side = short_side

    def __call__(
        self, sample: dict[str, Any], rng: np.random.Generator | None = None
    ) -> dict[str, Any]:
        """Normalise (and resize) one raw sample; `rng` is accepted for interface parity only."""
        height, width = sample["panoptic"].shape
        size = (height, width)
        if self.short_side is not None:
            scale = self.short_side / min(height, width)
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
        image, panoptic, rows_in, cols_in = _resample(
            sample["image"], sample["panoptic"], size, (0, 0), size, False
        )
        return self.finish(sample, image, panoptic, rows_in, cols_in)


def _pad_to(tensor: torch.Tensor, height: int, width: int, value: float) -> torch.Tensor:
    """Pad the last two dims at the bottom/right to (height, width) with `value`."""
    pad = (0, width - tensor.shape[-1], 0, height - tensor.shape[-2])
    return torch.nn.functional.pad(tensor, pad, value=value)


def collate_panoptic(
    batch: Sequence[dict[str, Any]], size_divisibility: int = 32, stride: int = 4
) -> dict[str, Any]:
    """Stack transformed samples of any sizes, padding at the bottom/right.

    Images are padded to the batch's largest height/width rounded up to `size_divisibility` (32:
    the backbone's coarsest stride, so every feature map aligns with the stride-`stride` targets),
    with 0 (the normalised mean), panoptic with void, semantic with 255 and all weights with 0.
    Stride maps are padded to the padded size / `stride`. ``image_sizes`` [B, 2] holds each image's
    size before padding; other keys become lists.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    if size_divisibility % stride:
        raise ValueError(f"size_divisibility {size_divisibility} is not a multiple of {stride}")
    sizes = [tuple(s["image"].shape[-2:]) for s in batch]
    height = -(-max(h for h, _ in sizes) // size_divisibility) * size_divisibility
    width = -(-max(w for _, w in sizes) // size_divisibility) * size_divisibility
    out: dict[str, Any] = {"image_sizes": torch.tensor(sizes, dtype=torch.int64)}
    for key in batch[0]:
        values = [s[key] for s in batch]
        if key in _FULL_RES_PAD:
            out[key] = torch.stack([_pad_to(v, height, width, _FULL_RES_PAD[key]) for v in values])
        elif key in _STRIDE_PAD:
            h, w = height // stride, width // stride
            out[key] = torch.stack([_pad_to(v, h, w, _STRIDE_PAD[key]) for v in values])
        else:
            out[key] = values
    return out
