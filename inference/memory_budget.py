"""Whether an image can be predicted within a bounded memory, checked before trying.

The CNN's feature maps and the solver's graph grow with the pixels the CNN sees: a 6000×4000
photo predicted at its own size needs about 9 GB. Without a size asked for (``--test-size``,
the recipe's ``eval.test_size``), an image the CNN would see at more than :data:`MAX_PIXELS` is
reported and skipped, with the option that predicts it smaller (or, asked for, at full size); any
size that does not fit in the memory available now is refused the same way, instead of swapping
for minutes and being killed.
"""

from __future__ import annotations

from collections.abc import Sequence

from cops.inference.predictor import input_size
from cops.memory import GIB, available_bytes

BYTES_PER_PIXEL = 400
"""Peak memory of one prediction per pixel the CNN sees (CNN, solver, post-processing), measured
with ``Predictor.predict`` on the CPU: the tiny synthetic recipe's network (ResNet-18, 256
decoder channels) peaks 332 B/px more at 2048×2048 than at 1024×1024; rounded up."""

MAX_PIXELS = 4096 * 2048
"""The most pixels the CNN sees unasked (about 3.4 GB at :data:`BYTES_PER_PIXEL`): four times a
Cityscapes image."""


def _fitting(height: int, width: int, pixels: float) -> str:
    """``HxW`` of the image's aspect with at most `pixels`, in multiples of 32."""
    scale = min(1.0, (pixels / (height * width)) ** 0.5)
    return "x".join(str(max(32, int(side * scale) // 32 * 32)) for side in (height, width))


def oversized(
    shape: Sequence[int],
    test_size: Sequence[int] | None,
    resize_shortest_edge: Sequence[int] | None,
) -> str | None:
    """Why an image of `shape` (H, W, ...) is not predicted, or None if it can be: the CNN sees
    it at `test_size`, else as `resize_shortest_edge` makes it (else at its own size)."""
    height, width = tuple(test_size) if test_size else input_size(shape, resize_shortest_edge)
    needed = height * width * BYTES_PER_PIXEL
    free = available_bytes()
    size = f"{shape[1]}×{shape[0]}"
    if not test_size and height * width > MAX_PIXELS:
        return (
            f"{size} pixels are more than predict takes unasked ({MAX_PIXELS / 1e6:.1f} "
            f"megapixels, about {MAX_PIXELS * BYTES_PER_PIXEL / GIB:.1f} GiB); predict it "
            f"smaller with --test-size {_fitting(height, width, MAX_PIXELS)}, or at full size "
            f"with --test-size {height}x{width} (about {needed / GIB:.1f} GiB)"
        )
    if needed > free:
        return (
            f"{size} pixels would need about {needed / GIB:.1f} GiB to predict at "
            f"{width}×{height}, {free / GIB:.1f} GiB is available; predict it smaller with "
            f"--test-size {_fitting(height, width, 0.8 * free / BYTES_PER_PIXEL)}"
        )
    return None
