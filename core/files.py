"""Atomic file writes: no reader sees a half-written file, and a failed write keeps the old one.

Every output of the project (prepared datasets, predictions, metrics, checkpoints, exports) goes
through :func:`atomic_writer`: write to a hidden temporary file in the target folder, flush it to
disk, give it the mode a plain ``open()`` would (the umask applies), then rename it over the target.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def umask() -> int:
    """The process umask (read without changing it for longer than the call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _named(exc: OSError, path: Path) -> OSError:
    """`exc` naming `path`, the target, where it names no file (a failed write) or the hidden
    temporary beside it (a rename onto a folder, a read-only folder): users never saw that name."""
    if exc.errno is None:
        return exc
    if exc.filename is not None and not _is_temporary_of(Path(exc.filename), path):
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def _is_temporary_of(name: Path, path: Path) -> bool:
    """Whether `name` is one of the hidden temporaries :func:`_temporary` makes for `path`."""
    return (
        name.parent == path.parent
        and name.name.startswith(f".{path.name}.")
        and name.name.endswith(".tmp")
    )


def _refuse_folder(path: Path) -> None:
    """An ``IsADirectoryError`` naming `path` when a folder is where the file should go, before
    anything is written (else the content is written in full and only the rename fails)."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))


def not_a_file(path: str | Path, what: str = "file") -> str:
    """Why `path`, which is not a regular file, cannot be read as a `what` (e.g. "image file"):
    a folder, a broken or looping symbolic link, or nothing there."""
    path = Path(path)
    if path.is_dir():
        article = "an" if what[:1] in "aeiou" else "a"
        return f"a folder, not {article} {what}"
    if path.is_symlink():
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "symbolic link loop (its links lead back to themselves)"
        return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
    return f"{what} not found"


def check_writable(path: str | Path) -> None:
    """Fail now, naming `path`, if a file could not be written there later (a folder in its
    place, a read-only or missing-permission folder): for results that come after long work.

    Creates the parent folders as writing would, and removes the probe file it writes.
    """
    path = Path(path)
    with _temporary(path) as (_, tmp):
        pass
    tmp.unlink(missing_ok=True)


@contextmanager
def _temporary(path: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """A hidden temporary file beside `path`, complete on disk and with `path`'s future mode
    when the block ends; removed if the block (or that final flush) fails."""
    try:
        _refuse_folder(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _named(exc, path) from exc
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle, tmp
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), 0o666 & ~umask())
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _named(exc, path) from exc
        raise


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file handle whose content replaces `path` only when the block ends without error.

    The parent folder is created if needed; on any error (or Ctrl-C) the temporary file is removed
    and an existing `path` stays as it was. An ``OSError`` of the write (disk full) names `path`.
    """
    path = Path(path)
    with _temporary(path) as (handle, tmp):
        yield handle
    try:
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _named(exc, path) from exc
        raise


def atomic_write_files(files: Sequence[tuple[str | Path, bytes]]) -> None:
    """Write several files that belong together (a model and its metadata) in all-or-nothing steps.

    Every file is first written completely under a temporary name; only then are they renamed
    into place, in the given order (put the one that marks the result complete last). A failed
    write therefore replaces none of them.
    """
    written: list[tuple[Path, Path]] = []
    try:
        for path, data in files:
            with _temporary(Path(path)) as (handle, tmp):
                handle.write(data)
            written.append((tmp, Path(path)))
        while written:
            tmp, path = written[0]
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise _named(exc, path) from exc
            written.pop(0)
    finally:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)


@contextmanager
def staging_dir(parent: str | Path, name: str) -> Iterator[Path]:
    """A new hidden folder in `parent` to build a result in before renaming it into place.

    Its mode is what ``mkdir`` would give (the umask applies, unlike ``mkdtemp``'s 0700), and it
    lives on the target's filesystem, so moving its content out is a cheap atomic rename. Whatever
    is left in it when the block ends (on success or after an error or Ctrl-C) is removed.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=parent))
    try:
        os.chmod(path, 0o777 & ~umask())
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """Write `data` to `path` atomically."""
    with atomic_writer(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as JSON to `path` atomically."""
    atomic_write_bytes(path, json.dumps(obj).encode("utf-8"))


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` of `obj` to `path`, atomically (checkpoints).

    Serialised in memory first: torch reports a failed file write (disk full) as a bare
    ``RuntimeError`` without the path, a plain write names it (see :func:`atomic_writer`).
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer())
