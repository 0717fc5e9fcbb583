"""Training checkpoints: the run folder's ``last.pt`` and numbered copies, and RNG states.

The file format is :class:`cops.models.checkpoint.Checkpoint`'s, below inference; this module
decides where training keeps its checkpoints and how many.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cops.models.checkpoint import Checkpoint
from cops.training.run_lock import remove_stale_temporaries

LAST = "last.pt"
_NUMBERED = re.compile(r"ckpt_(\d{7,})\.pt")


def numbered_path(out: Path, iteration: int) -> Path:
    """Path of the kept checkpoint of `iteration`: ``OUT/ckpt_0001000.pt``."""
    return out / f"ckpt_{iteration:07d}.pt"


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


def save_checkpoint(ckpt: Checkpoint, out: Path, keep: int = 0) -> Path:
    """Save `ckpt` as ``OUT/last.pt``; with ``keep > 0`` also as ``ckpt_<iteration>.pt``.

    Numbered copies are hard links of ``last.pt`` where the file system allows (no extra space
    until ``last.pt`` moves on); only the newest `keep` of them stay. Temporaries an interrupted
    save left in `out` are removed first. Returns ``last.pt``'s path.
    """
    out = Path(out)
    last = out / LAST
    remove_stale_temporaries(out)
    ckpt.save(last)
    if keep > 0:
        numbered = numbered_path(out, int(ckpt.iteration))
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
