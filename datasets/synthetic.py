"""The embedded synthetic street-scene dataset: generated, not downloaded, in the prepared format.

Image ``i`` of split ``s`` is drawn from the seed ``(seed, crc32(s), i)``, so the data is the same
whatever the number of workers or the order of generation. Scenes come from
:func:`cops.datasets.street_scene.generate_scene`; things smaller than
:func:`~cops.datasets.street_scene.min_thing_area` after occlusion are void, so every listed
segment is visible and every non-void id in a PNG is listed.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cops.datasets.conversion import (
    ConvertedImage,
    ProgressFn,
    SplitPaths,
    SplitSummary,
    convert_split,
)
from cops.datasets.panoptic_io import write_image
from cops.datasets.street_scene import SYNTHETIC_CATEGORIES, generate_scene, render_scene
from cops.errors import DatasetError

__all__ = [
    "PRESETS",
    "SYNTHETIC_CATEGORIES",
    "Preset",
    "generate_scene",
    "prepare_synthetic",
    "scene_seed",
]

MIN_SIZE = 8
"""Smallest accepted image height or width, in pixels."""


@dataclass(frozen=True)
class Preset:
    """Default image size and split sizes of a named preset."""

    height: int
    width: int
    num_train: int
    num_val: int


PRESETS: dict[str, Preset] = {
    "tiny": Preset(height=64, width=128, num_train=16, num_val=8),
    "default": Preset(height=256, width=512, num_train=200, num_val=50),
}


def scene_seed(seed: int, split: str, index: int) -> tuple[int, int, int]:
    """The generator seed of image `index` of `split`: independent of workers and order."""
    return (seed, zlib.crc32(split.encode("utf-8")), index)


@dataclass(frozen=True)
class _SceneJob:
    """Generate and write one image of a split (picklable, for the worker pool)."""

    seed: int
    height: int
    width: int

    def __call__(self, index: int, *, paths: SplitPaths) -> ConvertedImage:
        scene = render_scene(scene_seed(self.seed, paths.split, index), self.height, self.width)
        name = f"{paths.split}_{index:06d}.png"
        write_image(paths.images / name, scene.bgr, rgb=False)
        # Same bytes as write_panoptic_png(path, scene.ids), without encoding every pixel's id.
        write_image(paths.panoptic / name, scene.panoptic_bgr(), rgb=False)
        return ConvertedImage(
            image={"id": index, "file_name": name, "height": self.height, "width": self.width},
            annotation={"image_id": index, "file_name": name, "segments_info": scene.segments},
        )


def _positive(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DatasetError(f"synthetic {name}={value!r}: expected an integer >= {minimum}")
    return value


def prepare_synthetic(
    out: Path,
    *,
    preset: str = "default",
    num_train: int | None = None,
    num_val: int | None = None,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    splits: Sequence[str] = ("train", "val"),
    workers: int = 1,
    progress: ProgressFn | None = None,
) -> list[SplitSummary]:
    """Generate the synthetic dataset under `out` in the prepared format; one summary per split.

    The preset gives the image size and split sizes; explicit arguments override it.
    """
    if preset not in PRESETS:
        raise DatasetError(
            f"synthetic preset {preset!r}: expected one of {', '.join(sorted(PRESETS))}"
        )
    base = PRESETS[preset]
    height = _positive("height", base.height if height is None else height, MIN_SIZE)
    width = _positive("width", base.width if width is None else width, MIN_SIZE)
    counts = {
        "train": _positive("num_train", base.num_train if num_train is None else num_train),
        "val": _positive("num_val", base.num_val if num_val is None else num_val),
    }
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DatasetError(f"synthetic seed={seed!r}: expected an integer >= 0")
    _positive("workers", workers)
    if not splits or len(set(splits)) != len(splits) or not set(splits) <= counts.keys():
        raise DatasetError(
            f"synthetic splits {list(splits)!r}: expected distinct names among train, val"
        )
    summaries = []
    for split in splits:
        paths = SplitPaths(Path(out), split)
        info = {
            "description": f"COPS synthetic street scenes, split {split}",
            "generator": {"preset": preset, "seed": seed, "height": height, "width": width},
        }
        job = _SceneJob(seed, height, width)
        summaries.append(
            convert_split(
                paths,
                range(counts[split]),
                job,
                SYNTHETIC_CATEGORIES,
                workers=workers,
                progress=progress,
                info=info,
            )
        )
    return summaries
