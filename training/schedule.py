"""Learning-rate schedule: linear warm-up followed by polynomial decay to zero.

The factor is a pure function of the iteration, so a resumed run gets exactly the same rates.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_poly_factor(iteration: int, total: int, warmup: int, power: float) -> float:
    """Multiplier of the base rate for optimizer step `iteration` (0-based) out of `total`.

    Warm-up ramps linearly from 1/warmup to 1 over the first `warmup` steps; the poly part
    ``(1 - iteration/total)^power`` keeps the last step's rate above zero.
    """
    warm = min(1.0, (iteration + 1) / warmup) if warmup > 0 else 1.0
    remaining = max(0.0, 1.0 - iteration / total)
    return warm * remaining**power


def build_scheduler(optimizer: Optimizer, total: int, warmup: int, power: float) -> LambdaLR:
    """A LambdaLR applying :func:`warmup_poly_factor`; call ``step()`` once per optimizer step."""
    return LambdaLR(optimizer, lambda it: warmup_poly_factor(it, total, warmup, power))
