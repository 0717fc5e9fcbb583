"""Atomic file writes: no reader sees a half-written file, and a failed write keeps the old one.

Every output of the project (prepared datasets, predictions, metrics, checkpoints, exports) goes
through :func:`atomic_writer`: write to a hidden temporary file in the target folder, flush it to
disk, give it the mode a plain ``open()`` would (the umask applies), then rename it over the target.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file handle whose content replaces `path` only when the block ends without error.

    The parent folder is created if needed; on any error (or Ctrl-C) the temporary file is removed
    and an existing `path` stays as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
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
    """``torch.save`` of `obj` to `path`, atomically (checkpoints)."""
    import torch

    with atomic_writer(path) as handle:
        torch.save(obj, handle)
