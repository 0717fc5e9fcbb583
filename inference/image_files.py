"""Find the image files to predict on and read them as RGB, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

from cops.errors import CopsError

__all__ = ["IMAGE_SUFFIXES", "find_images"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
"""Suffixes of image files, compared case-insensitively."""


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def find_images(path: Path) -> list[tuple[Path, str]]:
    """Image files under `path` (a file, or a folder searched recursively) with output names.

    The output name is the path relative to the folder without suffix, "/"-separated (a single
    file: its stem), so predictions mirror the input tree. Sorted by name; hidden files and
    folders (names starting with ".") and other suffixes are skipped; a broken symbolic link
    with an image suffix is listed, so that reading it reports it as failed. Errors: a missing path,
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
    for file in path.rglob("*"):
        relative = file.relative_to(path)
        if any(part.startswith(".") for part in relative.parts):
            continue
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
