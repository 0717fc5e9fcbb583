"""Training checkpoints: atomic writes, the ``last.pt`` pointer, RNG states and safe loading.

A checkpoint is a dict of tensors and plain containers only (the recipe as a dict, RNG states as
tensors, class metadata as lists), so it loads with ``torch.load(weights_only=True)``: opening a
checkpoint never runs code from the file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cops.datasets.prepared import CategoryInfo
from cops.errors import CopsError
from cops.models import BackboneInitWarning, CopsNet, WeightsError, load_backbone_weights

if TYPE_CHECKING:
    from cops.config import ModelConfig

log = logging.getLogger(__name__)

FORMAT = "cops-checkpoint"
VERSION = 1
LAST = "last.pt"
_NUMBERED = re.compile(r"ckpt_(\d{7,})\.pt")


def numbered_path(out: Path, iteration: int) -> Path:
    """Path of the kept checkpoint of `iteration`: ``OUT/ckpt_0001000.pt``."""
    return out / f"ckpt_{iteration:07d}.pt"


def class_metadata(categories: CategoryInfo) -> dict[str, list]:
    """Class names, dataset category ids, thing flags and colours as lists, in train-id order."""
    return {
        "names": list(categories.names),
        "category_ids": [int(c) for c in categories.category_ids],
        "isthing": [bool(t) for t in categories.isthing],
        "colors": [[int(v) for v in c] for c in categories.colors],
    }


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and initialised CUDA devices) generator states, as tensors."""
    version, words, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": (version, torch.tensor(words, dtype=torch.int64), gauss),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states saved by :func:`rng_state`."""
    version, words, gauss = state["python"]
    random.setstate((version, tuple(int(w) for w in words.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """Write `obj` with torch.save to a temporary file beside `path`, then rename it over `path`.

    A crash or error mid-write leaves any previous `path` untouched and no temporary file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict[str, Any], out: Path, keep: int = 0) -> Path:
    """Save `state` as ``OUT/last.pt``; with ``keep > 0`` also as ``ckpt_<iteration>.pt``.

    Numbered copies are hard links of ``last.pt`` where the file system allows (no extra space
    until ``last.pt`` moves on); only the newest `keep` of them stay. Returns ``last.pt``'s path.
    """
    out = Path(out)
    last = out / LAST
    atomic_save({"format": FORMAT, "version": VERSION, **state}, last)
    if keep > 0:
        numbered = numbered_path(out, int(state["iteration"]))
        tmp = numbered.with_name(f".{numbered.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(last, tmp)
        except OSError:
            shutil.copyfile(last, tmp)
        os.replace(tmp, numbered)
        kept = sorted(p for p in out.iterdir() if _NUMBERED.fullmatch(p.name))
        for old in kept[:-keep]:
            old.unlink()
    return last


def is_checkpoint(obj: Any) -> bool:
    """Whether a loaded object is a COPS checkpoint (rather than a bare state dict)."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def load_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """Load a COPS checkpoint onto the CPU with ``weights_only=True``; errors name the file.

    ``mmap=True`` maps tensors lazily: cheap when only the recipe or iteration is needed.
    """
    path = Path(path)
    if not path.is_file():
        raise CopsError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        raise CopsError(f"{path}: cannot read as a checkpoint ({exc})") from exc
    if not is_checkpoint(obj):
        raise CopsError(f"{path}: not a COPS checkpoint (no '{FORMAT}' format marker)")
    if obj.get("version", 0) > VERSION:
        raise CopsError(
            f"{path}: checkpoint format version {obj['version']} is newer than this cops "
            f"({VERSION}); upgrade cops to read it"
        )
    return obj


def load_model_weights(model: CopsNet, path: Path) -> str:
    """Initialise `model` from a COPS checkpoint or a torchvision/ImageNet backbone state dict.

    From a checkpoint, every tensor whose name and shape fit is loaded (heads of another class
    count keep their initial values); the backbone must fit completely. Returns what was loaded.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read as torch weights ({exc})") from exc
    if not is_checkpoint(obj):
        load_backbone_weights(model.backbone, path)
        return f"backbone weights from {path}"
    own = model.state_dict()
    fitting = {k: v for k, v in obj["model"].items() if k in own and own[k].shape == v.shape}
    left = sorted(k for k in own if k not in fitting and not k.endswith("num_batches_tracked"))
    broken = [k for k in left if k.startswith("backbone.")]
    if broken:
        more = f" (+{len(broken) - 3} more)" if len(broken) > 3 else ""
        raise WeightsError(
            f"{path}: the checkpoint's backbone does not fit model backbone "
            f"{model.backbone.name}: {', '.join(broken[:3])}{more}"
        )
    model.load_state_dict(fitting, strict=False)
    note = f"; kept initial values for {', '.join(left)}" if left else ""
    return f"{len(fitting)} tensors from {path} (iteration {obj.get('iteration')}){note}"


def build_model(
    model_cfg: ModelConfig, num_classes: int, weights: Path | None = None, restoring: bool = False
) -> CopsNet:
    """The recipe's network, initialised from `weights` when given.

    With `weights`, or when a checkpoint will be restored, nothing is downloaded and no
    random-initialisation warning is raised: those weights replace the initial ones anyway.
    """
    if weights is None and not restoring:
        return CopsNet.from_config(model_cfg, num_classes)
    plain = dataclasses.replace(model_cfg, pretrained=False, backbone_weights=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackboneInitWarning)
        model = CopsNet.from_config(plain, num_classes)
    if weights is not None:
        log.info("initialised %s", load_model_weights(model, weights))
    return model
