"""Turn the authors' released COPS files into ``cops`` files (``cops import-checkpoint``).

A released model (detectron2 ``.pth``) becomes a normal COPS checkpoint of a recipe: our network's
weights, the recipe, and the class metadata of the recipe's dataset in train-id order (the order of
the original's contiguous ids). The DeepLab ImageNet backbone (``.pkl``) becomes a backbone state
dict for ``--weights`` or ``model.backbone_weights``. Reading and renaming live in
:mod:`cops.models.original_import`; this module picks the classes and writes the result.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cops.datasets.class_list import ClassList
from cops.datasets.class_tables import builtin_categories, category_info
from cops.datasets.conversion import SplitPaths
from cops.datasets.panoptic_io import read_json
from cops.datasets.prepared import CategoryInfo
from cops.errors import CopsError
from cops.files import check_writable
from cops.models.backbone import BackboneInitWarning, ResNetBackbone
from cops.models.checkpoint import Checkpoint, save_state_dict
from cops.models.network import SemanticBoundaryNet
from cops.models.original_import import convert_backbone, convert_original, read_original_file
from cops.models.weights_only import check_finite
from cops.recipes.schema import Recipe, load_recipe

__all__ = [
    "ImportResult",
    "import_backbone",
    "import_checkpoint",
    "import_released_model",
    "recipe_classes",
]

PHASE = "imported"
"""The ``phase`` recorded in checkpoints made from released weights."""


@dataclass
class ImportResult:
    """What an import wrote and what of the input it did not carry over (with reasons)."""

    out: Path
    tensors: int
    dropped: dict[str, str]


def recipe_classes(recipe: Recipe, data_root: Path | None = None) -> ClassList:
    """Class metadata of a recipe's dataset: the built-in table (Cityscapes, COCO panoptic,
    synthetic), or the categories of the prepared dataset `data_root` when one is given."""
    if data_root is None:
        return category_info(builtin_categories(recipe.data.dataset)).classes
    source = SplitPaths(Path(data_root), recipe.data.val_split).json
    if not source.is_file():
        raise CopsError(
            f"{source}: not found; --data must be a prepared dataset with the split "
            f"'{recipe.data.val_split}' (or leave --data out for the built-in "
            f"{recipe.data.dataset} classes)"
        )
    return CategoryInfo.from_json(read_json(source).get("categories"), source).classes


def _check_normalisation(found: dict[str, list[float]] | None, source: Path) -> None:
    """The file's pixel mean/std must be the ImageNet ones our pixel pipeline uses."""
    from cops.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD

    if found is None:
        return
    expected = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    for key, values in expected.items():
        if not np.allclose(found[key], values, atol=1e-6):
            raise CopsError(
                f"{source}: pixel_{key} {[round(v * 255, 3) for v in found[key]]} differs from "
                f"the ImageNet values {[round(v * 255, 3) for v in values]} cops normalises with"
            )


def import_released_model(
    source: Path,
    recipe_name: str,
    out: Path,
    overrides: list[str] | None = None,
    data_root: Path | None = None,
) -> ImportResult:
    """Convert a released COPS checkpoint to a COPS checkpoint of ``recipe_name``; return a report.

    Fails naming every key that does not map, and every network key the file lacks.
    """
    source = Path(source)
    recipe = load_recipe(recipe_name, list(overrides or []))
    classes = recipe_classes(recipe, data_root)
    original = read_original_file(source)
    check_finite(original, source)
    plain = dataclasses.replace(recipe.model, backbone_weights=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackboneInitWarning)
        net = SemanticBoundaryNet.from_config(plain, len(classes))
    converted = convert_original(original, net.state_dict(), str(source))
    _check_normalisation(converted.normalisation, source)
    recipe = dataclasses.replace(recipe, model=plain)
    Checkpoint(converted.state, recipe.to_dict(), classes, iteration=0, phase=PHASE).save(out)
    return ImportResult(Path(out), len(converted.state), converted.dropped)


def import_backbone(source: Path, out: Path, backbone: str = "resnet50") -> ImportResult:
    """Convert a DeepLab ImageNet backbone (``R-52.pkl``) to a backbone state dict file."""
    source = Path(source)
    original = read_original_file(source)
    check_finite(original, source)
    converted = convert_backbone(original, ResNetBackbone(backbone).state_dict(), str(source))
    save_state_dict({f"backbone.{k}": v for k, v in converted.state.items()}, out)
    return ImportResult(Path(out), len(converted.state), converted.dropped)


def import_checkpoint(
    source: Path,
    out: Path,
    recipe_name: str | None = None,
    backbone_only: bool = False,
    overrides: list[str] | None = None,
    data_root: Path | None = None,
) -> ImportResult:
    """``cops import-checkpoint``: a released model with ``recipe_name``, or (``backbone_only``)
    an ImageNet backbone of the recipe's depth (ResNet-50 without a recipe)."""
    if Path(out).resolve() == Path(source).resolve():
        raise CopsError(
            f"--out {out}: is the file being imported; the import would replace it; give "
            "another --out"
        )
    check_writable(Path(out))  # a folder in the way or a read-only one: before converting
    if backbone_only:
        depth = "resnet50"
        if recipe_name is not None:
            depth = load_recipe(recipe_name, list(overrides or [])).model.backbone
        return import_backbone(source, out, depth)
    if recipe_name is None:
        raise CopsError("--recipe is needed to import a model (e.g. --recipe cityscapes-r50)")
    return import_released_model(source, recipe_name, out, overrides, data_root)
