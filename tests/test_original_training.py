"""The original COPS training computations, checked against a capture of the original code.

The fixture (`tests/_training_fixture.py`; the folder `$COPS_TRAINING_FIXTURE` when that is set,
else the copy in tests/data/cops_reference_training) holds targets from a drawn ground truth, the
pretraining losses and gradients, the perturbation backward with every solver call recorded, and
the inference outputs. Every input here is derived from its documented files only, so the same
tests run on another capture of the same format.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests import _training_fixture as fixture
