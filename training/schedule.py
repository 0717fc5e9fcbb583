"""Learning-rate schedule: linear warm-up followed by polynomial decay to zero.

The factor is a pure function of the iteration, so a resumed run gets exactly the same rates.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_poly_factor(
    iteration: int, total: int, warmup: int, power: float, factor: float | None = None
) -> float:
    """Multiplier of the base rate for optimizer step `iteration` (0-based) out of `total`.

    Warm-up ramps linearly over the first `warmup` steps: from `factor` at step 0 towards 1
    (``factor + (1 - factor)·iteration/warmup``, detectron2's linear warm-up, the paper with
    0.001), or, with no `factor`, ``(iteration + 1)/warmup`` (ours). The poly part
    ``(1 - iteration/total)^power`` keeps the last step's rate above zero.
    """
    if warmup <= 0 or iteration >= warmup:
        warm = 1.0
    elif factor is None:
        warm = (iteration + 1) / warmup
    else:
        alpha = iteration / warmup
        warm = factor * (1.0 - alpha) + alpha
    remaining = max(0.0, 1.0 - iteration / total)
    return warm * remaining**power


def build_scheduler(
    optimizer: Optimizer, total: int, warmup: int, power: float, factor: float | None = None
) -> LambdaLR:
    """A LambdaLR applying :func:`warmup_poly_factor`; call ``step()`` once per optimizer step."""
    return LambdaLR(optimizer, lambda it: warmup_poly_factor(it, total, warmup, power, factor))
