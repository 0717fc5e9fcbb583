"""The classes file of a semantic + instance mask dataset (``cops prepare-data masks``).

YAML (or JSON) of the form::

    ignore: 255          # semantic value of void pixels (optional, default 255)
    classes:             # in this order they become train ids 0..K-1
      - {id: 1, name: road, isthing: false}
      - {id: 2, name: car, isthing: true, color: [0, 0, 142]}

``id`` is the value of the class in the semantic PNGs and becomes the category id of the prepared
dataset; ``color`` is optional (a fixed colour is derived from the id).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from cops.datasets.conversion import Category, default_color
from cops.errors import DatasetError

MAX_VALUE = 65535
"""Largest value a 16-bit semantic PNG holds."""
_TOP_KEYS = {"ignore", "classes"}
_CLASS_KEYS = {"id", "name", "isthing", "color", "supercategory"}


@dataclass(frozen=True)
class MaskClasses:
    """The categories of a mask dataset and the semantic value that marks void pixels."""

    categories: tuple[Category, ...]
    ignore: int = 255

    def by_value(self) -> dict[int, Category]:
        """Category of each semantic value."""
        return {c.id: c for c in self.categories}


class _Reader:
    """Typed access to the parsed file whose errors name the file and the entry."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, message: str) -> NoReturn:
        raise DatasetError(f"{self.source}: {message}")

    def integer(self, value: Any, where: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(f"{where} is {value!r}; expected an integer in {low}..{high}")
        return value

    def keys(self, entry: Any, allowed: set[str], where: str) -> dict[str, Any]:
        if not isinstance(entry, dict):
            self.fail(f"{where} is {entry!r}; expected a mapping")
        unknown = sorted(set(entry) - allowed)
        if unknown:
            self.fail(f"{where}: unknown key(s) {unknown}; expected {sorted(allowed)}")
        return entry


def _category(read: _Reader, entry: Any, where: str, ignore: int) -> Category:
    """One ``classes`` entry, checked."""
    entry = read.keys(entry, _CLASS_KEYS, where)
    for key in ("id", "name", "isthing"):
        if key not in entry:
            read.fail(f"{where} has no '{key}'")
    value = read.integer(entry["id"], f"{where} id", 0, MAX_VALUE)
    if value == ignore:
        read.fail(f"{where} id {value} is the ignore value; give void another value or the class")
    name = entry["name"]
    if not isinstance(name, str) or not name.strip():
        read.fail(f"{where} name is {name!r}; expected a non-empty string")
    if not isinstance(entry["isthing"], bool):
        read.fail(f"{where} isthing is {entry['isthing']!r}; expected true or false")
    color = entry.get("color")
    if color is None:
        color = default_color(value)
    elif not (isinstance(color, list) and len(color) == 3):
        read.fail(f"{where} color is {color!r}; expected [r, g, b] in 0..255")
    color = tuple(read.integer(c, f"{where} color", 0, 255) for c in color)
    supercategory = entry.get("supercategory", "")
    if not isinstance(supercategory, str):
        read.fail(f"{where} supercategory is {supercategory!r}; expected a string")
    return Category(value, name, entry["isthing"], color, supercategory)


def read_mask_classes(path: Path) -> MaskClasses:
    """Read and check a classes file; every problem names the file and the entry."""
    path = Path(path)
    read = _Reader(path)
    if not path.is_file():
        read.fail("classes file not found")
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        read.fail(f"not a readable YAML file ({str(exc).splitlines()[0]})")
    data = read.keys(data, _TOP_KEYS, "the file")
    ignore = read.integer(data.get("ignore", 255), "ignore", 0, MAX_VALUE)
    entries = data.get("classes")
    if not isinstance(entries, list) or not entries:
        read.fail("'classes' must be a non-empty list of {id, name, isthing, color}")
    categories = [_category(read, e, f"classes[{i}]", ignore) for i, e in enumerate(entries)]
    for kind in ("id", "name"):
        values = [getattr(c, kind) for c in categories]
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated:
            read.fail(f"class {kind} {repeated[0]!r} appears more than once; expected unique")
    return MaskClasses(tuple(categories), ignore)
