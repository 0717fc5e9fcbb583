"""The one class table: names, dataset category ids, thing flags and colours, in train-id order.

Datasets produce it, checkpoints and model cards store it (as a plain dict of lists), the
predictor, writers, evaluation and training read it. Train id ``k`` is position ``k``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

KEYS = ("names", "category_ids", "isthing", "colors")


@dataclass(frozen=True)
class ClassList:
    """Classes of a dataset or model in train-id order; construction checks that they agree.

    ``colors`` are ``[r, g, b]`` integer triples in 0..255; ``category_ids`` are distinct.
    A bad table is a ValueError saying which list is wrong.
    """

    names: list[str]
    category_ids: list[int]
    isthing: list[bool]
    colors: list[list[int]]
    _index: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        count = len(self.names)
        sizes = [len(self.category_ids), len(self.isthing), len(self.colors)]
        if count == 0:
            raise ValueError("classes: at least one class is needed")
        if any(size != count for size in sizes):
            raise ValueError(
                "classes: names, category_ids, isthing and colors need one entry per class, "
                f"got lengths {[count, *sizes]}"
            )
        if len(set(self.category_ids)) != count:
            raise ValueError(f"classes: category_ids must be distinct, got {self.category_ids}")
        if not all(len(c) == 3 and all(0 <= int(v) <= 255 for v in c) for c in self.colors):
            raise ValueError("classes: colors must be [r, g, b] triples in 0..255")
        index = {int(c): k for k, c in enumerate(self.category_ids)}
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassList:
        """The table of a plain ``{names, category_ids, isthing, colors}`` dict (checkpoints)."""
        missing = [key for key in KEYS if key not in data]
        if missing:
            raise ValueError(f"classes: missing key(s) {', '.join(missing)}")
        return cls(
            names=[str(n) for n in data["names"]],
            category_ids=[int(c) for c in data["category_ids"]],
            isthing=[bool(t) for t in data["isthing"]],
            colors=[[int(v) for v in c] for c in data["colors"]],
        )

    def to_dict(self) -> dict[str, list]:
        """Plain lists (JSON, ``torch.load(weights_only=True)``), the inverse of from_dict."""
        return {
            "names": list(self.names),
            "category_ids": [int(c) for c in self.category_ids],
            "isthing": [bool(t) for t in self.isthing],
            "colors": [[int(v) for v in c] for c in self.colors],
        }

    def __len__(self) -> int:
        return len(self.names)

    def class_of(self, category_id: int) -> int:
        """Train id of a dataset category id; unknown ids are a ValueError."""
        try:
            return self._index[int(category_id)]
        except KeyError:
            raise ValueError(
                f"category_id {category_id} is not one of the classes {self.category_ids}"
            ) from None

    def categories(self) -> list[dict[str, Any]]:
        """The COCO panoptic ``categories`` list."""
        return [
            {"id": int(c), "name": n, "isthing": int(t), "color": [int(v) for v in col]}
            for c, n, t, col in zip(
                self.category_ids, self.names, self.isthing, self.colors, strict=True
            )
        ]
