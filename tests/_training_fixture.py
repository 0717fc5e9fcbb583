"""The original COPS training fixture (targets, pretraining losses, PQ surrogate, perturbation
backward, inference scores): a folder in the documented format, read from `COPS_TRAINING_FIXTURE`
when that is set (another capture of the same format), else the copy in tests/data."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import numpy as np

DEFAULT = Path(__file__).parent / "data" / "cops_reference_training"


def folder() -> Path:
    """The fixture folder: `$COPS_TRAINING_FIXTURE`, or the copy in tests/data."""
    return Path(os.environ.get("COPS_TRAINING_FIXTURE") or DEFAULT)


@cache
def arrays(name: str) -> dict[str, np.ndarray]:
    """Every array of one documented `.npz` file (e.g. "targets"), loaded without pickles."""
    with np.load(folder() / f"{name}.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@cache
def meta(name: str) -> dict:
    """One documented JSON file: "gt_meta" or "capture_info"."""
    return json.loads((folder() / f"{name}.json").read_text("utf-8"))
