"""The prepared data a recipe reads: check that its splits are there, and generate the embedded
synthetic dataset when (and only when) that cannot overwrite or mix with anything."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from pathlib import Path

from cops.console import console, split_progress, state
from cops.datasets.conversion import SplitPaths
from cops.datasets.data_check import require_clean_index
from cops.datasets.prepared import PanopticDataset, available_splits
from cops.errors import DatasetError
from cops.files import staging_dir
from cops.recipes.schema import Recipe


def ensure_dataset(recipe: Recipe, *, may_generate: bool = True) -> None:
    """Check that the splits the recipe uses are prepared under ``data.root``.

    The synthetic dataset is generated only where that cannot overwrite or mix with anything:
    when `may_generate` (``data.root`` is the recipe's own, not a folder the user gave with
    ``--data``) and the folder does not exist yet. It is generated into a hidden sibling folder
    that is renamed to ``data.root`` once complete, so an interrupted generation leaves nothing
    that looks like a dataset. Any other missing split is a one-line error naming the file, and
    so is the first error of the JSON checks of ``cops check-data`` (no image is decoded).
    """
    data = recipe.data
    root = Path(data.root)
    needed = [data.train_split, data.val_split] if recipe.train.val_every else [data.train_split]
    splits = list(dict.fromkeys(needed))
    if data.dataset == "synthetic" and may_generate and not os.path.lexists(root):
        _generate_synthetic(recipe, root)
    missing = [s for s in splits if not SplitPaths(root, s).json.is_file()]
    if missing:
        raise DatasetError(missing_split_message(root, missing[0], data.dataset))
    for split in splits:
        require_clean_index(SplitPaths(root, split))


def missing_split_message(root: Path, split: str, dataset: str) -> str:
    """Why split `split` cannot be opened under `root`, the splits there are, and what to do."""
    json_path = SplitPaths(root, split).json
    if not root.is_dir():
        where = f"{root}: folder not found"
    else:
        present = available_splits(root)
        listed = f"splits there: {', '.join(present)}" if present else "no prepared split there"
        where = f"{root}: no split '{split}' ({json_path.name} missing; {listed})"
    return (
        f"{where}; create it with `cops prepare-data {dataset} ... --out {root}` or point "
        "--data at a prepared dataset"
    )


def _generate_synthetic(recipe: Recipe, root: Path) -> None:
    """Generate the recipe's synthetic train and val splits into a new folder `root`."""
    from cops.datasets.synthetic import prepare_synthetic

    if not state.quiet:
        console.print(f"Generating the synthetic dataset in {root}")
    cfg = recipe.data.synthetic
    daemon = multiprocessing.current_process().daemon  # daemonic workers cannot start a pool
    with staging_dir(root.parent, root.name) as staging, split_progress() as progress:
        prepare_synthetic(
            staging / "data",
            preset=cfg.preset,
            num_train=cfg.num_train,
            num_val=cfg.num_val,
            seed=cfg.seed,
            height=cfg.height,
            width=cfg.width,
            workers=1 if daemon else max(1, min(8, os.cpu_count() or 1)),
            progress=progress,
        )
        os.rename(staging / "data", root)


def open_split(recipe: Recipe, data: Path | None, split: str) -> PanopticDataset:
    """The prepared split `split` to evaluate on, from `data` or the recipe's ``data.root``.

    Only the recipe's own root may get the synthetic dataset generated (see
    :func:`ensure_dataset`); a `data` folder the user gave is read, never written.
    """
    root = Path(data) if data is not None else Path(recipe.data.root)
    wanted = dataclasses.replace(
        recipe,
        data=dataclasses.replace(recipe.data, root=str(root), train_split=split, val_split=split),
        train=dataclasses.replace(recipe.train, val_every=0),
    )
    ensure_dataset(wanted, may_generate=data is None or root == Path(recipe.data.root))
    return PanopticDataset(root, split)
