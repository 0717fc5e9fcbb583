"""The model card: everything a predictor needs besides the network's weights.

Classes, input normalisation, edge distances, stride, size divisibility, test-time resizing,
minimum segment areas and the cost scalars. A checkpoint derives it (``Checkpoint.card``); an
export stores it as JSON beside the model (``model.json``), so a prediction from an export
equals one from the checkpoint it came from. Loading checks it key by key with the recipes'
typed loader, so a bad file gets one line naming it and the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cops.datasets.class_list import ClassList
from cops.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from cops.errors import CopsError, RecipeError
from cops.recipes.schema import typed_from_dict

if TYPE_CHECKING:
    from cops.recipes.schema import Recipe

FORMAT = "cops-model"
VERSION = 1
STRIDE = 4
"""Output stride of the cost maps (one AMWC node per STRIDE×STRIDE input pixels)."""
OUTPUTS = ["node_costs", "edge_costs", "boundary_prob"]


@dataclass(frozen=True)
class Normalization:
    """Per-channel RGB mean and standard deviation of pixel values scaled to [0, 1]."""

    mean: list[float]
    std: list[float]


@dataclass(frozen=True)
class Postprocess:
    """How predictions are post-processed (the recipe's ``eval.semantic``,
    ``eval.instance_score`` and ``eval.solve_padded``); cards written before these existed were
    post-processed as ours, which the defaults keep."""

    semantic: Literal["nodes", "segments"] = "segments"
    instance_score: Literal["paper", "contrast"] = "contrast"
    solve_padded: bool = False


@dataclass(frozen=True)
class MinArea:
    """Smallest thing and stuff segments kept (input pixels); smaller ones become void."""

    thing: int
    stuff: int


@dataclass(frozen=True)
class CostScalars:
    """The cost model's learnt scalars: node ``a·(−logit) + b``, edge ``|α_d|·(−logit) + β_d``."""

    a: float
    b: float
    alpha: list[float]
    beta: list[float]
    edge_distances: list[int]


@dataclass(frozen=True)
class CardSource:
    """Where the network came from: the checkpoint path, its iteration and training phase."""

    checkpoint: str
    iteration: int
    phase: str


@dataclass(frozen=True)
class ModelCard:
    """What ``model.json`` holds; :meth:`from_dict` / :meth:`to_dict` read and write it."""

    format: Literal["cops-model"]
    version: int
    classes: ClassList
    edge_distances: list[int]
    normalization: Normalization
    size_divisibility: int
    stride: int
    min_area: MinArea
    test_size: list[int] | None
    cost_scalars: CostScalars
    source: CardSource
    outputs: list[str]
    resize_shortest_edge: list[int] | None = None
    """Absent in exports made before test-time resizing existed."""
    min_input_size: list[int] | None = None
    """ONNX exports only: the smallest input their fixed pooling window accepts."""
    postprocess: Postprocess = Postprocess()

    @classmethod
    def of(
        cls, recipe: Recipe, classes: ClassList, scalars: Mapping[str, Any], source: CardSource
    ) -> ModelCard:
        """The card of a trained network of `recipe`; `scalars` as ``AffineCosts.scalars()``."""
        test_size, resize = recipe.eval.test_size, recipe.eval.resize_shortest_edge
        card = cls(
            format=FORMAT,
            version=VERSION,
            classes=classes,
            edge_distances=[int(d) for d in recipe.model.edge_distances],
            normalization=Normalization(list(IMAGENET_MEAN), list(IMAGENET_STD)),
            size_divisibility=int(recipe.model.size_divisibility),
            stride=STRIDE,
            min_area=MinArea(int(recipe.eval.thing_min_area), int(recipe.eval.stuff_min_area)),
            test_size=None if test_size is None else [int(s) for s in test_size],
            resize_shortest_edge=None if resize is None else [int(s) for s in resize],
            cost_scalars=CostScalars(
                a=float(scalars["a"]),
                b=float(scalars["b"]),
                alpha=[float(v) for v in scalars["alpha"]],
                beta=[float(v) for v in scalars["beta"]],
                edge_distances=[int(d) for d in scalars["edge_distances"]],
            ),
            source=source,
            outputs=list(OUTPUTS),
            postprocess=Postprocess(
                recipe.eval.semantic, recipe.eval.instance_score, recipe.eval.solve_padded
            ),
        )
        return card.checked("model card")

    @classmethod
    def from_dict(cls, data: Any, source: str | Path) -> ModelCard:
        """Load a card from plain data (a parsed ``model.json``); errors name `source` and key."""
        if isinstance(data, Mapping) and isinstance(data.get("version"), int):
            if data["version"] > VERSION:
                raise CopsError(
                    f"{source}: model metadata version {data['version']} is newer than this cops "
                    f"({VERSION}); upgrade cops to read it"
                )
        try:
            plain = dict(data) if isinstance(data, Mapping) else data
            card = typed_from_dict(cls, plain, "model metadata")
        except (RecipeError, ValueError) as exc:
            raise CopsError(f"{source}: {exc}") from exc
        return card.checked(str(source))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, keys in the order ``model.json`` has always had them."""
        data = dataclasses.asdict(self)
        data["classes"] = self.classes.to_dict()
        order = [
            "format",
            "version",
            "classes",
            "edge_distances",
            "normalization",
            "size_divisibility",
            "stride",
            "min_area",
            "test_size",
            "resize_shortest_edge",
            "cost_scalars",
            "source",
            "outputs",
            "postprocess",
        ]
        out = {key: data[key] for key in order}
        if self.min_input_size is not None:
            out["min_input_size"] = list(self.min_input_size)
        return out

    def with_test_size(self, test_size: Sequence[int] | None) -> ModelCard:
        """This card with ``test_size`` [H, W] (predictions resize to it) when given."""
        if test_size is None:
            return self
        size = [int(s) for s in test_size]
        if len(size) != 2 or min(size) < 1 or size != list(test_size):
            raise ValueError(f"test_size: expected two positive integers [H, W], got {test_size}")
        return dataclasses.replace(self, test_size=size)

    def checked(self, source: str) -> ModelCard:
        """This card, after the checks types alone cannot make; errors name `source` and key."""
        for key, problem in _problems(self):
            raise CopsError(f"{source}: {key}: {problem}")
        return self


def _pair(value: list[int] | None) -> bool:
    return value is None or (len(value) == 2 and min(value) > 0)


def _problems(card: ModelCard) -> list[tuple[str, str]]:
    """(key, what is wrong) for each value outside its range or disagreeing with another."""
    distances, scalars = card.edge_distances, card.cost_scalars
    checks = [
        ("version", card.version >= 1, "a positive integer"),
        (
            "edge_distances",
            bool(distances) and min(distances) > 0 and len(set(distances)) == len(distances),
            "distinct positive integers",
        ),
        ("normalization.mean", len(card.normalization.mean) == 3, "three numbers"),
        (
            "normalization.std",
            len(card.normalization.std) == 3 and min(card.normalization.std) > 0,
            "three positive numbers",
        ),
        ("stride", card.stride > 0, "a positive integer"),
        (
            "size_divisibility",
            card.size_divisibility > 0 and card.size_divisibility % max(card.stride, 1) == 0,
            f"a positive multiple of {card.stride}",
        ),
        ("min_area.thing", card.min_area.thing >= 0, "a non-negative integer"),
        ("min_area.stuff", card.min_area.stuff >= 0, "a non-negative integer"),
        ("test_size", _pair(card.test_size), "[H, W] positive integers or null"),
        ("resize_shortest_edge", _pair(card.resize_shortest_edge), "[shortest, longest] or null"),
        ("min_input_size", _pair(card.min_input_size), "[H, W] positive integers or null"),
        ("cost_scalars.alpha", len(scalars.alpha) == len(distances), "one per edge distance"),
        ("cost_scalars.beta", len(scalars.beta) == len(distances), "one per edge distance"),
        (
            "cost_scalars.edge_distances",
            scalars.edge_distances == distances,
            f"the model's edge_distances {distances}",
        ),
        ("outputs", card.outputs == OUTPUTS, repr(OUTPUTS)),
    ]
    return [(key, f"expected {expected}") for key, ok, expected in checks if not ok]
