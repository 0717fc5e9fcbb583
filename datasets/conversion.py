"""The shared conversion driver: every converter turns source items into prepared-format files.

Prepared format (DESIGN §3) under OUT:
``images/{split}/<name>``, ``panoptic/{split}/<name>.png`` and ``panoptic_{split}.json``.
A split is converted into a hidden staging folder inside OUT and moved into place only once it is
complete, so a failed or interrupted run leaves an existing split as it was and never leaves a
split that looks complete but is not.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from cops.errors import CopsError, DatasetError
from cops.files import atomic_write_json, staging_dir
from cops.parallel import fork_pool

T = TypeVar("T")

ProgressFn = Callable[[str, int, int], None]
"""Progress callback ``progress(split, done, total)``, first called with done=0."""


@dataclass(frozen=True)
class Category:
    """One panoptic category as written into the prepared JSON."""

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int]
    supercategory: str = ""

    def to_json(self) -> dict[str, Any]:
        """COCO panoptic category entry."""
        return {
            "id": self.id,
            "name": self.name,
            "supercategory": self.supercategory or self.name,
            "isthing": int(self.isthing),
            "color": list(self.color),
        }


def default_color(category_id: int) -> tuple[int, int, int]:
    """A deterministic colour for categories that come without one."""
    r, g, b = np.random.default_rng(category_id).integers(0, 256, 3)
    return int(r), int(g), int(b)


@dataclass(frozen=True)
class SplitPaths:
    """Where one split of a prepared dataset lives."""

    root: Path
    split: str

    @property
    def images(self) -> Path:
        return self.root / "images" / self.split

    @property
    def panoptic(self) -> Path:
        return self.root / "panoptic" / self.split

    @property
    def json(self) -> Path:
        return self.root / f"panoptic_{self.split}.json"


@dataclass
class ConvertedImage:
    """What one conversion job returns: the COCO image entry and its panoptic annotation."""

    image: dict[str, Any]
    annotation: dict[str, Any]


@dataclass
class SplitSummary:
    """Counts shown to the user after a split is converted."""

    split: str
    images: int = 0
    segments: Counter = field(default_factory=Counter)
    crowd: int = 0

    def to_json(self) -> dict[str, Any]:
        """The split's entry of ``summary.json``."""
        return {"images": self.images, "segments": dict(self.segments), "crowd": self.crowd}


SUMMARY = "summary.json"
"""Per-split counts of a prepared dataset, beside its split JSONs."""


def record_summary(root: Path, summary: SplitSummary) -> None:
    """Put `summary` into ``ROOT/summary.json``, keeping the entries of the other splits."""
    path = Path(root) / SUMMARY
    try:
        entries = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        entries = {}
    if not isinstance(entries, dict):
        entries = {}
    entries[summary.split] = summary.to_json()
    atomic_write_json(path, entries)


def _run_jobs(
    fn: Callable[[T], ConvertedImage], tasks: Sequence[T], workers: int
) -> Iterable[ConvertedImage]:
    """Yield results in task order, in `workers` processes (inline when workers <= 1)."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(fn, tasks)
        return
    chunk = max(1, min(16, len(tasks) // (workers * 4)))
    with fork_pool(workers) as pool:
        yield from pool.imap(fn, tasks, chunksize=chunk)


def convert_split(
    paths: SplitPaths,
    tasks: Sequence[T],
    convert_one: Callable[..., ConvertedImage],
    categories: Sequence[Category],
    workers: int = 1,
    progress: ProgressFn | None = None,
    info: dict[str, Any] | None = None,
) -> SplitSummary:
    """Run ``convert_one(task, paths=staged)`` over `tasks`, then put the split in place.

    `convert_one` (picklable) writes one item's image and panoptic PNG under the `SplitPaths` it
    is given, a staging copy of `paths`, and returns their entries. Only when every item and the
    JSON are written does the new split replace the old one (:func:`_replace_split`).
    `progress(split, done, total)` is called once before the first item and after each item.
    """
    names = {c.id: c.name for c in categories}
    summary = SplitSummary(split=paths.split)
    with staging_dir(paths.root, f"staging-{paths.split}") as staging:
        staged = SplitPaths(staging, paths.split)
        staged.images.mkdir(parents=True)
        staged.panoptic.mkdir(parents=True)
        job = functools.partial(convert_one, paths=staged)
        if progress is not None:
            progress(paths.split, 0, len(tasks))
        images, annotations = [], []
        for done, result in enumerate(_run_jobs(job, tasks, workers), start=1):
            images.append(result.image)
            annotations.append(result.annotation)
            summary.images += 1
            for seg in result.annotation["segments_info"]:
                summary.segments[names[seg["category_id"]]] += 1
                summary.crowd += int(seg.get("iscrowd", 0))
            if progress is not None:
                progress(paths.split, done, len(tasks))
        atomic_write_json(
            staged.json,
            {
                "info": info or {"description": f"COPS prepared dataset, split {paths.split}"},
                "images": images,
                "annotations": annotations,
                "categories": [c.to_json() for c in categories],
            },
        )
        _replace_split(staged, paths, staging / "old")
    record_summary(paths.root, summary)
    return summary


def _replace_split(new: SplitPaths, old: SplitPaths, trash: Path) -> None:
    """Move the complete split `new` over `old`, whose folders go to `trash` (same filesystem).

    The old JSON is removed first and the new one renamed into place last, so the split never
    looks complete with the folders of the other version.
    """
    old.json.unlink(missing_ok=True)
    for kind in ("images", "panoptic"):
        source, target = getattr(new, kind), getattr(old, kind)
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(target):
            (trash / kind).mkdir(parents=True)
            os.rename(target, trash / kind / old.split)
        os.rename(source, target)
    os.replace(new.json, old.json)


LINK_MODES = ("copy", "symlink", "hardlink")


def place_file(src: Path, dst: Path, link: str) -> None:
    """Copy, symlink or hard-link `src` to `dst`, replacing `dst` atomically (re-runs overwrite).

    Symlinks point at the absolute source path, so the prepared folder can be moved but not the
    source; hard links need both on one filesystem.
    """
    if link not in LINK_MODES:
        raise CopsError(f"link mode {link!r}: expected one of {', '.join(LINK_MODES)}")
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        if link == "copy":
            shutil.copyfile(src, tmp)
        elif link == "symlink":
            os.symlink(src.resolve(), tmp)
        else:
            os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        hint = " (try link='copy')" if link != "copy" else ""
        raise DatasetError(f"{src}: could not {link} to {dst}: {exc.strerror}{hint}") from exc
