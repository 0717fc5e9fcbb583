"""Find the image files to predict on and read them as RGB, with errors that name the file."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from cops.errors import CopsError

log = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "check_apart", "find_images"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
"""Suffixes of image files, compared case-insensitively."""


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _walk(root: Path) -> Iterator[Path]:
    """Every entry below `root` that is not a folder, hidden names (".") skipped; symbolic links
    to folders are followed, except to a folder already searched (a link loop, or a second link
    to one folder), which is skipped with a warning."""
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:
            log.warning("%s: skipped, a symbolic link to a folder already searched", folder)
            dirs.clear()
            continue
        seen.add((info.st_dev, info.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield from (Path(folder, f) for f in sorted(files) if not f.startswith("."))


def find_images(path: Path) -> list[tuple[Path, str]]:
    """Image files under `path` (a file, or a folder searched recursively) with output names.

    The output name is the path relative to the folder without suffix, "/"-separated (a single
    file: its stem), so predictions mirror the input tree. Sorted by name; hidden files and
    folders (names starting with ".") and other suffixes are skipped; symbolically linked
    folders are searched, each folder once (a link loop ends there); a broken symbolic link with
    an image suffix is listed, so that reading it reports it as failed. Errors: a missing path,
    a file that is not an image, a folder without images, two files with the same name.
    """
    path = Path(path)
    if path.is_file():
        if not _is_image(path):
            known = ", ".join(sorted(IMAGE_SUFFIXES))
            raise CopsError(f"{path}: not an image file (expected a suffix among {known})")
        return [(path, path.stem)]
    if not path.is_dir():
        raise CopsError(f"{path}: no such file or folder")
    found: dict[str, Path] = {}
    for file in _walk(path):
        relative = file.relative_to(path)
        if not (_is_image(file) and (file.is_file() or file.is_symlink())):
            continue  # a broken link is kept: reading it reports it
        name = relative.with_suffix("").as_posix()
        if name in found:
            first, second = sorted([found[name], file])
            raise CopsError(
                f"{first} and {second} would both be written as '{name}'; rename one of them"
            )
        found[name] = file
    if not found:
        known = ", ".join(sorted(IMAGE_SUFFIXES))
        raise CopsError(f"{path}: no image files found (searched recursively for {known})")
    return [(found[name], name) for name in sorted(found)]


def check_apart(inputs: Path, out: Path) -> None:
    """Refuse an output folder that is the input folder, lies inside it or contains it (or the
    input file): the predictions would overwrite inputs, or be read as inputs next time."""
    source, target = inputs.resolve(), out.resolve()
    if not inputs.is_dir():
        if target in source.parents:
            raise CopsError(
                f"--out {out}: contains the input file {inputs}; predictions must not be written "
                "among their inputs; choose an --out outside it"
            )
        return
    if source == target:
        relation = "is the input folder"
    elif source in target.parents:
        relation = "lies inside the input folder"
    elif target in source.parents:
        relation = "contains the input folder"
    else:
        return
    raise CopsError(
        f"--out {out}: {relation} {inputs}; predictions would overwrite inputs or be read as "
        "inputs next time; choose an --out outside it"
    )
