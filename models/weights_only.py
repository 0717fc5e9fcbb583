"""Open torch files weights-only, and say in one line why one cannot be opened.

Every checkpoint, weights file and released model is read with ``torch.load(weights_only=True)``,
so that opening a file never runs code from it. Torch's own messages for files it refuses are
several lines long, advise loading with ``weights_only=False`` (advice a tool must never give for
an untrusted file), or speak of memory maps; :func:`load_weights_only` replaces them with one
line naming the file, what it is instead, and for a refused pickle the object it holds.
"""

from __future__ import annotations

import math
import pickletools
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from cops.errors import CopsError

_LEGACY_HEAD = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
"""How a torch file of the legacy (non-zip) format begins: the pickled torch magic number."""
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class _Refused(CopsError):
    """A pickle that needs an object besides tensors and plain containers."""


def refusal(path: Path, name: str) -> str:
    """The one-line refusal of a file holding the pickled object `name`."""
    return (
        f"{path}: not a weights-only file (it contains a pickled object `{name}`); "
        "refusing to load it"
    )


def pickled_globals(data: bytes) -> list[str]:
    """The ``module.name`` of every object a pickle stream imports, read from its opcodes
    without running any of them (strings are followed through the memo for STACK_GLOBAL)."""
    names: list[str] = []
    pushed: list[str | None] = []
    memo: dict[int, str | None] = {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif name == "STACK_GLOBAL" and len(pushed) >= 2 and None not in pushed[-2:]:
                names.append(f"{pushed[-2]}.{pushed[-1]}")
            elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT") and pushed:
                memo[len(memo) if name == "MEMOIZE" else int(arg)] = pushed[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(int(arg)))
            else:
                pushed.append(arg if "UNICODE" in name or "STRING" in name else None)
    except Exception:  # a damaged stream: what was read so far
        pass
    return names


def _kind(path: Path, what: str) -> str:
    """Which torch format `path` has ("zip" or "legacy"); anything else raises a `CopsError`
    saying what the file is instead (a folder, empty, a plain pickle, not a pickle at all)."""
    if path.is_dir():
        raise CopsError(f"{path}: a folder, not {what}")
    if not path.is_file():
        raise CopsError(f"{path}: file not found (expected {what})")
    if path.stat().st_size == 0:
        raise CopsError(f"{path}: empty file (0 bytes), not {what}")
    if zipfile.is_zipfile(path):
        return "zip"
    with path.open("rb") as handle:
        head = handle.read(len(_LEGACY_HEAD))
    if head == _LEGACY_HEAD:
        return "legacy"
    if head[:1] == b"\x80":
        data = path.read_bytes()
        names = [
            n
            for n in pickled_globals(data)
            if not n.startswith(("numpy.", "collections.")) and n != "_codecs.encode"
        ]
        if names:
            raise _Refused(refusal(path, names[0]))
        raise CopsError(
            f"{path}: a plain Python pickle (pickle.dump), not a torch file (torch.save); "
            f"expected {what}"
        )
    raise CopsError(f"{path}: not a torch file (neither torch.save's zip nor its older format); "
                    f"expected {what}")  # fmt: skip


def load_weights_only(
    path: str | Path,
    what: str,
    error: type[CopsError] = CopsError,
    mmap: bool = False,
    safe_globals: Sequence[Any] = (),
    refused: type[CopsError] | None = None,
) -> Any:
    """``torch.load(weights_only=True)`` of `path` onto the CPU, `safe_globals` allowed besides
    tensors and plain containers. A file that cannot be read raises `error` with one line naming
    the file and what it is instead of `what`; a pickle that needs any other object is refused
    naming that object (as `refused`, default `error`). ``mmap`` maps tensors lazily (zip-format
    files; others load in full)."""
    path = Path(path)
    refused = refused or error
    try:
        kind = _kind(path, what)
    except _Refused as exc:
        raise refused(str(exc)) from None
    except CopsError as exc:
        raise error(str(exc)) from None
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(
                path, map_location="cpu", weights_only=True, mmap=mmap and kind == "zip"
            )
    except Exception as exc:
        found = _GLOBAL.search(str(exc))
        if found:
            raise refused(refusal(path, found.group(1))) from None
        reason = next((line for line in reversed(str(exc).splitlines()) if line.strip()), "")
        if "weights_only" in reason or "torch.load" in reason:
            reason = type(exc).__name__
        raise error(f"{path}: cannot read as {what} ({reason.strip()})") from exc


def check_finite(weights: Mapping[str, torch.Tensor], path: Path | str) -> None:
    """A `CopsError` naming the first floating-point tensor of `weights` with a NaN or infinite
    value: such a network gives NaN costs, and the solver no usable labelling."""
    for key, tensor in weights.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            if not bool(torch.isfinite(tensor).all()):
                bad = tensor[~torch.isfinite(tensor)].reshape(-1)[0].item()
                value = "NaN" if math.isnan(bad) else str(bad)
                raise CopsError(
                    f"{path}: tensor '{key}' holds non-finite values ({value}); these weights "
                    "are unusable (a diverged training?): use an earlier checkpoint"
                )
