"""``cops check-data``: every check of a prepared dataset, and its ground truth scored against
itself with our PQ (it must be 100), as one report by split and problem kind."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cops.datasets.conversion import ProgressFn, SplitPaths
from cops.datasets.data_check import (
    ERROR,
    KINDS,
    WARNING,
    Problem,
    check_index,
    check_pixels,
)
from cops.datasets.prepared import available_splits
from cops.errors import DatasetError
from cops.evaluation.panoptic_quality import pq_compute_files
from cops.files import atomic_write_json

EXAMPLES = 3
"""Example files per problem kind in the summary."""


@dataclass
class SplitReport:
    """One split's problems and figures."""

    split: str
    images: int = 0
    problems: list[Problem] = field(default_factory=list)
    void_fraction: float | None = None
    self_pq: float | None = None

    def count(self, severity: str) -> int:
        """Number of problems of `severity`."""
        return sum(p.severity == severity for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        """The split's entry of the ``--json`` file."""
        return {
            "images": self.images,
            "errors": self.count(ERROR),
            "warnings": self.count(WARNING),
            "void_fraction": self.void_fraction,
            "self_pq": self.self_pq,
            "problems": [
                {"kind": p.kind, "severity": p.severity, "file": p.file, "message": p.message}
                for p in self.problems
            ],
        }


@dataclass
class DataCheckReport:
    """The report of `check_dataset`: one entry per split checked."""

    root: Path
    splits: list[SplitReport]

    @property
    def errors(self) -> int:
        """Problems of error severity over all splits."""
        return sum(s.count(ERROR) for s in self.splits)

    @property
    def warnings(self) -> int:
        """Problems of warning severity over all splits."""
        return sum(s.count(WARNING) for s in self.splits)

    def by_kind(self) -> list[tuple[str, str, str, int, list[Problem]]]:
        """(split, kind, severity, count, first examples) rows, errors first, in KINDS order."""
        rows = []
        order = {kind: i for i, kind in enumerate(KINDS)}
        for report in self.splits:
            grouped: dict[str, list[Problem]] = defaultdict(list)
            for problem in report.problems:
                grouped[problem.kind].append(problem)
            for kind in sorted(grouped, key=lambda k: (KINDS[k][0] != ERROR, order[k])):
                found = grouped[kind]
                rows.append((report.split, kind, KINDS[kind][0], len(found), found[:EXAMPLES]))
        return rows

    def to_json(self) -> dict[str, Any]:
        """The machine-readable report (``--json``)."""
        return {
            "root": str(self.root),
            "ok": self.errors == 0,
            "errors": self.errors,
            "warnings": self.warnings,
            "splits": {s.split: s.to_json() for s in self.splits},
        }


def _self_pq(paths: SplitPaths, workers: int) -> tuple[float | None, Problem | None]:
    """The split's ground truth scored against itself; a problem unless it is PQ 100."""
    try:
        result = pq_compute_files(paths.json, paths.json, paths.panoptic, paths.panoptic, workers)
    except DatasetError as exc:
        return None, Problem("self-pq", str(paths.json), f"PQ could not be computed: {exc}")
    pq = result["all"]["pq"]
    if pq is not None and abs(pq - 100.0) > 1e-9:
        return pq, Problem("self-pq", str(paths.json), f"PQ {pq:.4f} against itself; expected 100")
    return pq, None


def check_split(
    paths: SplitPaths, workers: int = 1, progress: ProgressFn | None = None
) -> SplitReport:
    """All checks of one split: the JSON, every image and PNG, then the self-PQ when all
    else is free of errors."""
    index = check_index(paths)
    report = SplitReport(paths.split, images=index.images, problems=list(index.problems))
    if any(p.kind == "json" for p in index.problems):
        return report
    pixels = check_pixels(index, workers, progress)
    report.problems += pixels.problems
    if pixels.pixels:
        report.void_fraction = pixels.void / pixels.pixels
    if not report.count(ERROR):
        report.self_pq, problem = _self_pq(paths, workers)
        if problem is not None:
            report.problems.append(problem)
    return report


def check_dataset(
    root: Path,
    split: str | None = None,
    *,
    workers: int = 1,
    progress: ProgressFn | None = None,
    json_out: Path | None = None,
) -> DataCheckReport:
    """Check `split` (default: every split) of the prepared dataset `root`; with `json_out`,
    also write the report there as JSON."""
    root = Path(root)
    splits = [split] if split is not None else available_splits(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found")
    if not splits or not SplitPaths(root, splits[0]).json.is_file():
        there = ", ".join(available_splits(root)) or "none"
        raise DatasetError(
            f"{root}: no panoptic_{split or '<split>'}.json, so no prepared split to check "
            f"(splits there: {there})"
        )
    report = DataCheckReport(
        root, [check_split(SplitPaths(root, s), workers, progress) for s in splits]
    )
    if json_out is not None:
        atomic_write_json(json_out, report.to_json())
    return report
