"""The segment rule: from an AMWC solution (class and component per node) to panoptic segments.

One segment per stuff class present (all of its components together), one per thing component
(per component and class, should a component ever hold two thing classes). Segments are ordered
stuff first by class, then things by component and class. The training layer
(:func:`cops.solver.layer.amwc_segments`) and post-processing (``cops.inference.postprocess``,
which then drops segments below a minimum area at image size) both take their segments from here.
"""

from __future__ import annotations

import torch
from torch import Tensor


def segments_from_solution(
    labels: Tensor, components: Tensor, partitionable: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Segment index per node [B, N], class per segment [B, S] (-1 pad) and counts [B].

    ``labels`` / ``components`` [B, N] (long) class and solver component of every node,
    ``partitionable`` [K] bool, True for thing classes (module doc for the rule and order).
    """
    b, n = labels.shape
    k = partitionable.shape[0]
    thing = partitionable.to(labels.device)[labels]
    c = int(components.max()) + 1 if components.numel() else 1
    span = k + c * k  # keys of one image: classes 0..K-1, (component, thing class) from K on
    key = torch.where(thing, k + components * k + labels, labels)
    key = key + span * torch.arange(b, device=labels.device).unsqueeze(1)
    uniq, inverse = torch.unique(key.reshape(-1), return_inverse=True)
    image = torch.div(uniq, span, rounding_mode="floor")
    counts = torch.bincount(image, minlength=b)
    starts = torch.cumsum(counts, 0) - counts
    segments = inverse.reshape(b, n) - starts.unsqueeze(1)
    seg_class = torch.empty_like(uniq)
    seg_class[inverse] = labels.reshape(-1)
    s_max = int(counts.max()) if b else 0
    classes = torch.full((b, s_max), -1, dtype=torch.long, device=labels.device)
    classes[image, torch.arange(uniq.numel(), device=labels.device) - starts[image]] = seg_class
    return segments, classes, counts
