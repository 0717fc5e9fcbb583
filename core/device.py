"""Where the CNN runs: one resolution of a ``--device`` value for every command."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cops.errors import CopsError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(value: str | torch.device) -> torch.device:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` needs a visible GPU."""
    import torch

    if isinstance(value, torch.device):
        value = str(value)
    kind = value.split(":")[0]
    if kind not in DEVICES:
        raise CopsError(f"--device '{value}': expected cpu, cuda or auto")
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise CopsError(f"--device {value}: no CUDA device is visible to torch")
    return torch.device(value)
