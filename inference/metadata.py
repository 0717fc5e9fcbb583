"""The model metadata dict: what a predictor needs besides the network (classes, costs, sizes).

One schema serves checkpoints, exports (written as JSON beside ``model.onnx`` / ``model.pt``) and
the CLI, so a prediction from an export equals one from the checkpoint it came from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cops.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from cops.errors import CopsError, RecipeError

if TYPE_CHECKING:
    from cops.recipes.schema import Recipe

FORMAT = "cops-model"
VERSION = 1
STRIDE = 4
"""Output stride of the cost maps (one AMWC node per STRIDE×STRIDE input pixels)."""
OUTPUTS = ["node_costs", "edge_costs", "boundary_prob"]
CLASS_KEYS = ("names", "category_ids", "isthing", "colors")


def model_metadata(
    recipe: Recipe,
    classes: Mapping[str, Any],
    costs_scalars: Mapping[str, Any],
    source: Mapping[str, Any],
) -> dict[str, Any]:
    """The metadata dict of a trained network (schema: see :func:`check_metadata`).

    ``classes`` holds ``names``, ``category_ids``, ``isthing`` and ``colors`` in train-id order,
    ``costs_scalars`` the cost model's ``a``, ``b``, ``alpha`` (as used, i.e. ``|α|``), ``beta``
    and ``edge_distances``, ``source`` the ``checkpoint`` path, ``iteration`` and ``phase``.
    """
    test_size, resize = recipe.eval.test_size, recipe.eval.resize_shortest_edge
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "classes": {
            "names": [str(n) for n in classes["names"]],
            "category_ids": [int(c) for c in classes["category_ids"]],
            "isthing": [bool(t) for t in classes["isthing"]],
            "colors": [[int(v) for v in c] for c in classes["colors"]],
        },
        "edge_distances": [int(d) for d in recipe.model.edge_distances],
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "size_divisibility": int(recipe.model.size_divisibility),
        "stride": STRIDE,
        "min_area": {
            "thing": int(recipe.eval.thing_min_area),
            "stuff": int(recipe.eval.stuff_min_area),
        },
        "test_size": None if test_size is None else [int(s) for s in test_size],
        "resize_shortest_edge": (None if resize is None else [int(s) for s in resize]),
        "cost_scalars": {
            "a": float(costs_scalars["a"]),
            "b": float(costs_scalars["b"]),
            "alpha": [float(v) for v in costs_scalars["alpha"]],
            "beta": [float(v) for v in costs_scalars["beta"]],
            "edge_distances": [int(d) for d in costs_scalars["edge_distances"]],
        },
        "source": {
            "checkpoint": str(source["checkpoint"]),
            "iteration": int(source["iteration"]),
            "phase": str(source["phase"]),
        },
        "outputs": list(OUTPUTS),
        "postprocess": {
            "semantic": recipe.eval.semantic,
            "instance_score": recipe.eval.instance_score,
            "solve_padded": bool(recipe.eval.solve_padded),
        },
    }
    return check_metadata(meta, "model metadata")


def _scalar(state: Mapping[str, Any], key: str, default: list[float]) -> list[float]:
    """A cost scalar of a network state dict as a list (``default`` where the key is absent)."""
    value = state.get(key)
    if value is None:
        return default
    return [float(v) for v in value.detach().reshape(-1).tolist()]


def checkpoint_recipe(ckpt: Mapping[str, Any], path: str | Path) -> Recipe:
    """The typed recipe stored in a loaded checkpoint; errors name `path`."""
    from cops.recipes.schema import recipe_from_dict

    if "recipe" not in ckpt:
        raise CopsError(f"{path}: checkpoint has no 'recipe' entry")
    try:
        return recipe_from_dict(ckpt["recipe"])
    except RecipeError as exc:
        raise CopsError(f"{path}: the checkpoint's recipe is invalid ({exc})") from exc


def metadata_from_checkpoint(ckpt: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """Metadata of a loaded checkpoint (``cops.models.build.load_checkpoint``); errors name `path`.

    Cost scalars come from the ``costs.*`` entries of its state dict; checkpoints written before
    the network carried them get the cost model's initial values (a = α = 1, b = β = 0).
    """
    for key in ("model", "classes"):
        if key not in ckpt:
            raise CopsError(f"{path}: checkpoint has no '{key}' entry")
    recipe = checkpoint_recipe(ckpt, path)
    state = ckpt["model"]
    distances = [int(d) for d in recipe.model.edge_distances]
    scalars = {
        "a": _scalar(state, "costs.a", [1.0])[0],
        "b": _scalar(state, "costs.b", [0.0])[0],
        "alpha": [abs(v) for v in _scalar(state, "costs.alpha", [1.0] * len(distances))],
        "beta": _scalar(state, "costs.beta", [0.0] * len(distances)),
        "edge_distances": distances,
    }
    source = {
        "checkpoint": str(path),
        "iteration": int(ckpt.get("iteration", 0)),
        "phase": str(ckpt.get("phase", "")),
    }
    try:
        return model_metadata(recipe, ckpt["classes"], scalars, source)
    except (KeyError, TypeError, ValueError, CopsError) as exc:
        raise CopsError(f"{path}: cannot describe the checkpoint's model ({exc})") from exc


# ---------------------------------------------------------------------------------------------
# Validation of a loaded dict.


def _fail(source: str, key: str, expected: str, value: Any) -> CopsError:
    """The one error shape of this module: file, key, what was expected, what was found."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return CopsError(f"{source}: metadata key '{key}': expected {expected}, got {shown}")


def _get(obj: Mapping[str, Any], key: str, source: str, prefix: str = "") -> Any:
    """``obj[key]``, or an error naming the missing (dotted) key."""
    if key not in obj:
        raise CopsError(f"{source}: metadata key '{prefix}{key}' is missing")
    return obj[key]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _mapping(obj: Mapping[str, Any], key: str, source: str, prefix: str = "") -> Mapping:
    value = _get(obj, key, source, prefix)
    if not isinstance(value, Mapping):
        raise _fail(source, prefix + key, "a mapping", value)
    return value


def _list_of(
    obj: Mapping[str, Any],
    key: str,
    source: str,
    check: Any,
    what: str,
    prefix: str = "",
    length: int | None = None,
) -> list:
    """``obj[key]`` as a list whose items pass ``check`` (and of ``length`` items when given)."""
    value = _get(obj, key, source, prefix)
    size = "" if length is None else f"{length} "
    if (
        not isinstance(value, list)
        or not all(check(v) for v in value)
        or (length is not None and len(value) != length)
    ):
        raise _fail(source, prefix + key, f"a list of {size}{what}", value)
    return value


def check_metadata(obj: Any, source: str) -> dict[str, Any]:
    """Validate a loaded metadata dict; return it. Errors are CopsError naming `source` and the key.

    Checks the format marker and version, that every key of the schema is present with the right
    type, that the class lists have one entry per class and that the edge distances agree.
    """
    if not isinstance(obj, Mapping):
        raise CopsError(f"{source}: model metadata must be a JSON object, got {type(obj).__name__}")
    if obj.get("format") != FORMAT:
        raise _fail(source, "format", repr(FORMAT), obj.get("format"))
    version = _get(obj, "version", source)
    if not _is_int(version) or version < 1:
        raise _fail(source, "version", "a positive integer", version)
    if version > VERSION:
        raise CopsError(
            f"{source}: model metadata version {version} is newer than this cops ({VERSION}); "
            "upgrade cops to read it"
        )

    classes = _mapping(obj, "classes", source)
    p = "classes."
    names = _list_of(classes, "names", source, lambda v: isinstance(v, str), "strings", p)
    k = len(names)
    if k == 0:
        raise _fail(source, "classes.names", "at least one class", names)
    _list_of(classes, "category_ids", source, _is_int, "integers", p, k)
    _list_of(classes, "isthing", source, lambda v: isinstance(v, bool), "true/false", p, k)
    _list_of(
        classes,
        "colors",
        source,
        lambda c: isinstance(c, list) and len(c) == 3 and all(_is_int(v) for v in c),
        "[r, g, b] integer triples",
        p,
        k,
    )

    def positive_int(v: Any) -> bool:
        return _is_int(v) and v > 0

    distances = _list_of(obj, "edge_distances", source, positive_int, "positive integers")
    if not distances or len(set(distances)) != len(distances):
        raise _fail(source, "edge_distances", "distinct positive integers", distances)

    norm = _mapping(obj, "normalization", source)
    _list_of(norm, "mean", source, _is_number, "numbers", "normalization.", 3)
    positive = "positive numbers"
    _list_of(norm, "std", source, lambda v: _is_number(v) and v > 0, positive, "normalization.", 3)

    stride = _get(obj, "stride", source)
    if not positive_int(stride):
        raise _fail(source, "stride", "a positive integer", stride)
    divisibility = _get(obj, "size_divisibility", source)
    if not positive_int(divisibility) or divisibility % stride:
        raise _fail(source, "size_divisibility", f"a positive multiple of {stride}", divisibility)

    min_area = _mapping(obj, "min_area", source)
    for kind in ("thing", "stuff"):
        value = _get(min_area, kind, source, "min_area.")
        if not _is_int(value) or value < 0:
            raise _fail(source, f"min_area.{kind}", "a non-negative integer", value)

    test_size = _get(obj, "test_size", source)
    if test_size is not None:
        _list_of(obj, "test_size", source, positive_int, "positive integers [H, W] or null", "", 2)
    if obj.get("resize_shortest_edge") is not None:  # absent in exports made before it existed
        expected = "positive integers [shortest, longest] or null"
        _list_of(obj, "resize_shortest_edge", source, positive_int, expected, "", 2)

    scalars = _mapping(obj, "cost_scalars", source)
    p = "cost_scalars."
    for key in ("a", "b"):
        if not _is_number(_get(scalars, key, source, p)):
            raise _fail(source, p + key, "a number", scalars[key])
    d = len(distances)
    _list_of(scalars, "alpha", source, _is_number, "numbers (one per edge distance)", p, d)
    _list_of(scalars, "beta", source, _is_number, "numbers (one per edge distance)", p, d)
    own = _list_of(scalars, "edge_distances", source, positive_int, "positive integers", p)
    if own != distances:
        raise _fail(source, p + "edge_distances", f"the model's edge_distances {distances}", own)

    origin = _mapping(obj, "source", source)
    if not isinstance(_get(origin, "checkpoint", source, "source."), str):
        raise _fail(source, "source.checkpoint", "a string", origin["checkpoint"])
    if not _is_int(_get(origin, "iteration", source, "source.")):
        raise _fail(source, "source.iteration", "an integer", origin["iteration"])
    if not isinstance(_get(origin, "phase", source, "source."), str):
        raise _fail(source, "source.phase", "a string", origin["phase"])

    outputs = _get(obj, "outputs", source)
    if outputs != OUTPUTS:
        raise _fail(source, "outputs", repr(OUTPUTS), outputs)
    return dict(obj)
