"""Worker bodies for launcher tests: importable by spawned processes without pulling in torch."""

from __future__ import annotations

import os

from cops.errors import CopsError


def fail_on_rank_one(message: str) -> None:
    """Raise a user error on rank 1 only; rank 0 finishes normally."""
    if os.environ["RANK"] == "1":
        raise CopsError(message)
