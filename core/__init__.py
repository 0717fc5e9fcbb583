"""COPS: combinatorial optimisation for panoptic segmentation."""

__version__ = "0.1.0"

_API = ("Model", "finetune", "import_checkpoint", "load", "train")
"""The Python API's front door (see ``cops.api``): imported on first use, so that ``import cops``
stays light and the base layer imports nothing above it at import time."""


def __getattr__(name: str) -> object:
    """``cops.load``, ``cops.Model``, ``cops.train``, ``cops.finetune`` and
    ``cops.import_checkpoint`` (PEP 562)."""
    if name in ("load", "Model"):
        from cops.api import model

        return getattr(model, name)
    if name in ("train", "finetune"):
        from cops.api import training

        return getattr(training, name)
    if name == "import_checkpoint":
        from cops.api import released

        return released.import_checkpoint
    raise AttributeError(f"module 'cops' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names with the front door's, for ``dir(cops)`` and completion."""
    return sorted([*globals(), *_API])
