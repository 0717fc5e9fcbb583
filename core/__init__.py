"""COPS: combinatorial optimisation for panoptic segmentation."""

__version__ = "0.1.0"

_API = ("Model", "finetune", "load", "train")
"""The Python API's front door (see ``cops.api``): imported on first use, so that ``import cops``
stays light and the base layer imports nothing above it at import time."""


def __getattr__(name: str) -> object:
    """``cops.load``, ``cops.Model``, ``cops.train`` and ``cops.finetune`` (PEP 562)."""
    if name in ("load", "Model"):
        from cops.api import model

        return getattr(model, name)
    if name in ("train", "finetune"):
        from cops.api import training

        return getattr(training, name)
    raise AttributeError(f"module 'cops' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
