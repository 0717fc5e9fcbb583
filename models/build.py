"""Model building: the recipe's network for a dataset's classes, initialised from ``--weights``.

A ``--weights`` file is a COPS checkpoint (read through :mod:`cops.models.checkpoint`, whose
class rows are matched to the dataset's classes) or a backbone state dict.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cops.datasets.class_list import ClassList
from cops.models.backbone import BackboneInitWarning, WeightsError, from_detectron2_names
from cops.models.backbone_weights import load_backbone_weights
from cops.models.checkpoint import Checkpoint, read_weights, restorable_network
from cops.models.network import SemanticBoundaryNet
from cops.models.torchvision_weights import is_torchvision_name

if TYPE_CHECKING:
    from cops.recipes.schema import ModelConfig

log = logging.getLogger(__name__)


def class_axes(model_cfg: ModelConfig, num_classes: int) -> dict[str, int]:
    """Tensor name → the axis that grows with the class count, for the recipe's network.

    Found by building the network for `num_classes` and one class more on the meta device (no
    memory, no computation) and comparing shapes, so it follows the architecture wherever class
    rows live: the semantic classifier, and the boundary trunk that reads the semantic logits.
    Along that axis the class block is the last `num_classes` entries (logits are concatenated
    after the features).
    """
    plain = dataclasses.replace(model_cfg, backbone_weights=None)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore", BackboneInitWarning)
        one = SemanticBoundaryNet.from_config(plain, num_classes).state_dict()
        more = SemanticBoundaryNet.from_config(plain, num_classes + 1).state_dict()
    axes = {}
    for key, tensor in one.items():
        pairs = zip(tensor.shape, more[key].shape, strict=True)
        grown = [axis for axis, (a, b) in enumerate(pairs) if a != b]
        if grown:
            axes[key] = grown[0]
    return axes


def _reorder_classes(tensor: torch.Tensor, axis: int, order: list[int]) -> torch.Tensor:
    """`tensor` with the class block (the last ``len(order)`` entries of `axis`) permuted so that
    new class ``i`` takes old class ``order[i]``."""
    start = tensor.shape[axis] - len(order)
    index = torch.cat([torch.arange(start), torch.as_tensor(order, dtype=torch.long) + start])
    return tensor.index_select(axis, index)


def _names(names: list[str]) -> str:
    return ", ".join(names)


def load_model_weights(
    model: SemanticBoundaryNet,
    path: Path,
    *,
    classes: ClassList | None = None,
    axes: dict[str, int] | None = None,
    reinit_head: bool = False,
) -> str:
    """Initialise `model` from a COPS checkpoint or a backbone state dict (load_backbone_weights).

    A checkpoint's class names (``classes`` metadata) are compared with the dataset's `classes`
    before any tensor is taken by shape, because two class lists of one length fit silently:

    - the same classes in the same order: every tensor loads;
    - the same classes in another order: the class rows of the tensors in `axes` (see
      :func:`class_axes`) are permuted to the dataset's order, with a warning saying so;
    - other classes: refused (`WeightsError`) unless `reinit_head`, which keeps the initial
      values of the class-dependent tensors and loads the rest.

    The backbone must fit completely; every tensor left at its initial value is logged as a
    warning. Returns what was loaded.
    """
    path = Path(path)
    if is_torchvision_name(path):
        load_backbone_weights(model.backbone, str(path))
        return f"backbone weights {path}"
    ckpt = read_weights(path, WeightsError)
    if not isinstance(ckpt, Checkpoint):
        load_backbone_weights(model.backbone, path)
        return f"backbone weights from {path}"
    state = from_detectron2_names(ckpt.weights, "backbone.")
    axes = dict(axes or {})
    note = ""
    theirs = list(ckpt.classes.names)
    ours = list(classes.names) if classes is not None else theirs
    if theirs != ours:
        if sorted(theirs) == sorted(ours) and len(set(ours)) == len(ours):
            order = [theirs.index(name) for name in ours]
            for key, axis in axes.items():
                if key in state:
                    state[key] = _reorder_classes(state[key], axis, order)
            note = f"; class rows reordered from ({_names(theirs)}) to ({_names(ours)})"
            log.warning("%s: same classes in another order; remapped the class rows", path)
        elif not reinit_head:
            raise WeightsError(
                f"{path}: the checkpoint's classes ({_names(theirs)}) differ from the dataset's "
                f"({_names(ours)}); add --reinit-head to start the class-dependent layers from "
                "new random values and load the rest"
            )
        else:
            for key in axes:
                state.pop(key, None)
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    left = sorted(k for k in own if k not in fitting and not k.endswith("num_batches_tracked"))
    broken = [k for k in left if k.startswith("backbone.")]
    if broken:
        more = f" (+{len(broken) - 3} more)" if len(broken) > 3 else ""
        raise WeightsError(
            f"{path}: the checkpoint's backbone does not fit model backbone "
            f"{model.backbone.name}: {', '.join(broken[:3])}{more}"
        )
    model.load_state_dict(fitting, strict=False)
    if left:
        log.warning("%s: not loaded, kept initial values: %s", path, ", ".join(left))
        note += f"; kept initial values for {', '.join(left)}"
    return f"{len(fitting)} tensors from {path} (iteration {ckpt.iteration}){note}"


def build_model(
    model_cfg: ModelConfig,
    num_classes: int,
    weights: Path | None = None,
    restoring: bool = False,
    *,
    classes: ClassList | None = None,
    reinit_head: bool = False,
) -> SemanticBoundaryNet:
    """The recipe's network, initialised from `weights` when given.

    With `weights`, or when a checkpoint will be restored, nothing is downloaded and no
    random-initialisation warning is raised: those weights replace the initial ones anyway.
    `classes` (the dataset's classes) and `reinit_head` go to :func:`load_model_weights`.
    """
    if weights is None and not restoring:
        return SemanticBoundaryNet.from_config(model_cfg, num_classes)
    plain = dataclasses.replace(model_cfg, backbone_weights=None)
    model = restorable_network(plain, num_classes)
    if weights is not None:
        loaded = load_model_weights(
            model,
            weights,
            classes=classes,
            axes=class_axes(plain, num_classes),
            reinit_head=reinit_head,
        )
        log.info("initialised %s", loaded)
    return model
