"""Which files of an output folder earlier prediction runs wrote, so that a run overwrites those
and nothing else: not a dataset's ground truth, not a user's image that happens to sit there.

A finished run's predictions JSON (segments with a ``score``, which ground truth never has) lists
its files. While a run writes, and after it if its JSON does not list every file earlier runs
left, a hidden record in the folder lists every file claimed, written before the first of them:
a run killed halfway (whose old JSON is gone) has claimed what it left.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from cops.errors import CopsError
from cops.files import atomic_write_text

RECORD = ".cops-outputs"
"""The record of a folder's own outputs, one path relative to the folder per line."""


def _listed_by_predictions(out: Path, json_name: str, folders: Iterable[str]) -> set[str]:
    """The files an earlier predictions JSON `json_name` in `out` describes (with itself), or
    nothing if there is none or it is not one of ours."""
    try:
        data = json.loads((out / json_name).read_text(encoding="utf-8"))
        annotations = data["annotations"]
        if not all("score" in s for a in annotations for s in a["segments_info"]):
            return set()
        names = [str(a["file_name"]) for a in annotations]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return {json_name} | {f"{folder}/{name}" for folder in folders for name in names}


class OutputClaims:
    """The files of `out` this kind of writer may overwrite, and the claiming of new ones."""

    def __init__(self, out: Path, json_name: str, folders: Iterable[str]) -> None:
        self.out = Path(out)
        self._json_name = json_name
        self._folders = list(folders)
        self._own: set[str] | None = None
        self._recorded: set[str] = set()

    def own(self) -> set[str]:
        """Paths (relative to the folder) that earlier runs wrote, read once."""
        if self._own is None:
            record = self.out / RECORD
            listed = record.read_text(encoding="utf-8").splitlines() if record.is_file() else []
            self._recorded = set(listed)
            self._own = set(listed) | _listed_by_predictions(
                self.out, self._json_name, self._folders
            )
        return self._own

    def claim(self, relatives: Iterable[str]) -> None:
        """Record `relatives` as this writer's before any is written; a `CopsError` naming the
        first one that exists without being an earlier output (nothing is recorded then)."""
        own = self.own()
        new = sorted({r for r in relatives if r not in own})
        foreign = [r for r in new if (self.out / r).exists() or (self.out / r).is_symlink()]
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            raise CopsError(
                f"{self.out / foreign[0]}: exists and is not an output of an earlier prediction "
                f"run{more}; refusing to overwrite it; choose another --out"
            )
        own.update(new)
        if own != self._recorded:  # new files, or ones only the JSON (removed next) listed
            atomic_write_text(self.out / RECORD, "".join(f"{r}\n" for r in sorted(own)))
            self._recorded = set(own)

    def settle(self) -> None:
        """After the JSON is written: drop the record if the JSON lists every claimed file
        that exists (claimed files a run did not write, unreadable inputs', are no concern)."""
        present = {r for r in self.own() if (self.out / r).exists()}
        if present <= _listed_by_predictions(self.out, self._json_name, self._folders):
            (self.out / RECORD).unlink(missing_ok=True)
            self._recorded = set()
