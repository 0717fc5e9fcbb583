"""User-facing error types: the CLI prints these as one clear line instead of a traceback."""

from __future__ import annotations

import errno


class CopsError(Exception):
    """Bad input from the user (a file, a key, a value); the message says what was expected."""


class RecipeError(CopsError, ValueError):
    """A recipe key, type or value is wrong."""


class DatasetError(CopsError, ValueError):
    """A dataset file or annotation is missing or inconsistent."""


_WORKER_PREFIX = "Caught "
_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):\n"


def user_message(exc: BaseException) -> str:
    """The one-line message of a user-facing error (a `CopsError` or an ``OSError``).

    A `CopsError` raised in a DataLoader worker reaches the main process re-created around the
    worker's whole traceback; its own message is the traceback's last line, after the type name.
    An ``OSError`` is shown as ``PATH: reason`` with a hint for a full disk or a path through a
    file.
    """
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename is not None else ""
        reason = exc.strerror or str(exc)
        hint = _OS_HINTS.get(exc.errno or 0, "")
        return f"{where}{reason}{hint}"
    message = str(exc)
    if message.startswith(_WORKER_PREFIX) and _WORKER_TRACEBACK in message:
        last = message.rstrip().splitlines()[-1]
        name = f"{type(exc).__module__}.{type(exc).__name__}: "
        message = last[len(name) :] if last.startswith(name) else last
    return message


_OS_HINTS = {
    errno.ENOSPC: " (the disk is full; free some space and run the command again)",
    errno.EDQUOT: " (disk quota exceeded; free some space and run the command again)",
    errno.ENOTDIR: " (a part of this path is a file, not a folder)",
    errno.EEXIST: " (a file is there, not a folder)",
    errno.EISDIR: " (a folder is there, not a file; give a file name)",
    errno.EACCES: " (no permission; check the file's and its folder's permissions)",
    errno.EROFS: " (a read-only file system; choose another place)",
}
