"""The COPS checkpoint: the one place that reads and writes its file format.

A checkpoint file is a dict of tensors and plain containers only (weights, the recipe as a
dict, the class table as lists, training state with RNG states as tensors) marked
``format: cops-checkpoint``, so it loads with ``torch.load(weights_only=True)``: opening one
never runs code from the file. :class:`Checkpoint` is its typed form: the recipe, the classes,
the model card, and the network built from them. Training, prediction, evaluation, export and
``import-checkpoint`` all go through it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cops.datasets.class_list import ClassList
from cops.errors import CopsError, RecipeError
from cops.files import atomic_save
from cops.models.backbone import BackboneInitWarning
from cops.models.model_card import CardSource, ModelCard
from cops.models.network import CostMapNet, SemanticBoundaryNet
from cops.models.weights_only import check_finite, load_weights_only
from cops.recipes.schema import Recipe, recipe_from_dict

if TYPE_CHECKING:
    from cops.recipes.schema import ModelConfig

FORMAT = "cops-checkpoint"
VERSION = 1
_ENTRIES = ("format", "version", "model", "recipe", "classes", "iteration", "phase")
_OPTIONAL_WEIGHTS = ("costs.", "num_batches_tracked")
"""Weights a checkpoint may lack: older ones have no cost scalars, fine-tuned ones (frozen BN)
no BN counters; the network's initial values stand in for them."""


def save_state_dict(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Write a plain state dict (a weights file, not a checkpoint) atomically."""
    atomic_save(dict(state), path)


def restorable_network(model_cfg: ModelConfig, num_classes: int) -> SemanticBoundaryNet:
    """The recipe's network with initial values that stored weights will replace: no backbone
    file is read and no random-initialisation warning is raised."""
    plain = dataclasses.replace(model_cfg, backbone_weights=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackboneInitWarning)
        return SemanticBoundaryNet.from_config(plain, num_classes)


def _scalar(state: Mapping[str, Any], key: str, default: list[float]) -> list[float]:
    """A cost scalar of a state dict as a list (``default`` where the key is absent)."""
    value = state.get(key)
    if value is None:
        return default
    return [float(v) for v in value.detach().reshape(-1).tolist()]


@dataclass
class Checkpoint:
    """A trained (or imported) network with its recipe and classes, and any training state.

    ``weights`` is the network's state dict, ``recipe_dict`` the recipe as stored (the typed one
    is :attr:`recipe`), ``training`` what only ``--resume`` needs (optimizer, scheduler, scaler,
    RNG states, world size, metrics), ``path`` the file it came from, if any.
    """

    weights: dict[str, torch.Tensor]
    recipe_dict: dict[str, Any]
    classes: ClassList
    iteration: int = 0
    phase: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, path: str | Path, mmap: bool = False) -> Checkpoint:
        """Read a checkpoint file (weights only, onto the CPU); errors name the file.

        ``mmap=True`` maps tensors lazily: cheap when only the recipe or iteration is needed.
        """
        obj = load_weights_only(Path(path), "a checkpoint", CopsError, mmap=mmap)
        if not is_checkpoint(obj):
            raise CopsError(f"{path}: not a COPS checkpoint (no '{FORMAT}' format marker)")
        return cls.from_dict(obj, Path(path))

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], path: Path) -> Checkpoint:
        """The typed form of a loaded checkpoint dict; errors name `path`."""
        if obj.get("version", 0) > VERSION:
            raise CopsError(
                f"{path}: checkpoint format version {obj['version']} is newer than this cops "
                f"({VERSION}); upgrade cops to read it"
            )
        for key in ("model", "recipe", "classes"):
            if key not in obj:
                raise CopsError(f"{path}: checkpoint has no '{key}' entry")
        try:
            classes = ClassList.from_dict(obj["classes"])
        except (TypeError, ValueError) as exc:
            raise CopsError(f"{path}: the checkpoint's classes are invalid ({exc})") from exc
        return cls(
            weights=dict(obj["model"]),
            recipe_dict=dict(obj["recipe"]),
            classes=classes,
            iteration=int(obj.get("iteration", 0)),
            phase=str(obj.get("phase", "")),
            training={k: v for k, v in obj.items() if k not in _ENTRIES},
            path=path,
        )

    def to_dict(self) -> dict[str, Any]:
        """The file's dict: plain containers and tensors only."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.weights,
            "recipe": self.recipe_dict,
            "classes": self.classes.to_dict(),
            "iteration": int(self.iteration),
            "phase": self.phase,
            **self.training,
        }

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint to `path` atomically (temporary file, then rename); returns it."""
        atomic_save(self.to_dict(), path)
        return Path(path)

    @property
    def recipe(self) -> Recipe:
        """The typed recipe the network was trained with."""
        try:
            return recipe_from_dict(self.recipe_dict)
        except RecipeError as exc:
            raise CopsError(f"{self.path}: the checkpoint's recipe is invalid ({exc})") from exc

    @property
    def card(self) -> ModelCard:
        """The model card: classes, recipe sizes and the cost scalars of the weights.

        Checkpoints written before the network carried its cost scalars get the cost model's
        initial values (a = α = 1, b = β = 0).
        """
        distances = [int(d) for d in self.recipe.model.edge_distances]
        scalars = {
            "a": _scalar(self.weights, "costs.a", [1.0])[0],
            "b": _scalar(self.weights, "costs.b", [0.0])[0],
            "alpha": [abs(v) for v in _scalar(self.weights, "costs.alpha", [1.0] * len(distances))],
            "beta": _scalar(self.weights, "costs.beta", [0.0] * len(distances)),
            "edge_distances": distances,
        }
        source = CardSource(str(self.path or ""), int(self.iteration), self.phase)
        try:
            return ModelCard.of(self.recipe, self.classes, scalars, source)
        except CopsError as exc:
            raise CopsError(f"{self.path}: cannot describe the checkpoint's model ({exc})") from exc

    def build_network(self) -> SemanticBoundaryNet:
        """The recipe's network holding these weights (train mode, CPU); a mismatch names the
        file and the first keys that do not fit, a NaN or infinite weight the tensor."""
        check_finite(self.weights, self.path)
        net = restorable_network(self.recipe.model, len(self.classes))
        try:
            missing, unexpected = net.load_state_dict(self.weights, strict=False)
        except RuntimeError as exc:
            raise CopsError(
                f"{self.path}: the weights do not fit the recipe's model ({exc})"
            ) from exc
        missing = [k for k in missing if not any(part in k for part in _OPTIONAL_WEIGHTS)]
        if missing or unexpected:
            shown = ", ".join([*missing[:3], *unexpected[:3]])
            raise CopsError(
                f"{self.path}: the weights do not fit the recipe's model "
                f"({len(missing)} missing, {len(unexpected)} unexpected: {shown})"
            )
        return net

    def cost_net(self, device: str | torch.device = "cpu") -> CostMapNet:
        """The network as a cost-map runner (what prediction and export use), eval mode."""
        return CostMapNet(self.build_network()).eval().to(device)


def is_checkpoint(obj: Any) -> bool:
    """Whether a loaded object is a COPS checkpoint dict (rather than a bare state dict)."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def read_weights(path: Path, error: type[CopsError]) -> Checkpoint | Any:
    """A ``--weights`` file: a :class:`Checkpoint` if it is one, else what the file holds (a
    backbone state dict, for :func:`cops.models.backbone.load_backbone_weights`)."""
    obj = load_weights_only(Path(path), "torch weights", error, mmap=True)
    return Checkpoint.from_dict(obj, Path(path)) if is_checkpoint(obj) else obj
