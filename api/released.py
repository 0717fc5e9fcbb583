"""``cops.import_checkpoint``: the authors' released COPS files as ``cops`` files, as
``cops import-checkpoint`` writes them (then ``cops.load`` opens the result)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cops.inference.released import ImportResult
from cops.inference.released import import_checkpoint as convert


def import_checkpoint(
    source: str | Path,
    out: str | Path,
    recipe: str | None = None,
    *,
    backbone_only: bool = False,
    overrides: Sequence[str] | None = None,
    data: str | Path | None = None,
) -> ImportResult:
    """Convert a released model (detectron2 ``.pth``, with the `recipe` it was trained with) to a
    checkpoint at `out`, or with `backbone_only` the DeepLab ImageNet backbone (``R-52.pkl``) to
    a backbone file; `data` is a prepared dataset whose classes to use. Nothing in `source` runs.
    """
    root = None if data is None else Path(data)
    return convert(Path(source), Path(out), recipe, backbone_only, list(overrides or []), root)
