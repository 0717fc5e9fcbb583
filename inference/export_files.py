"""The files of an export: one metadata JSON per model file, holding a hash of that model file.

``m.onnx`` has ``m.onnx.json`` and ``m.pt`` has ``m.pt.json``, so two exports in one folder never
share metadata, and the hash ties each JSON to the exact model it was written with: a model
copied over another, or a JSON copied beside another model, is refused instead of predicting with
another model's classes, edge distances or minimum areas. Earlier versions wrote one ``m.json``
for every ``m.*``; it is read only if it carries the model's hash (they did not, so such an export
is refused with a line saying to export again). An export replaces only an earlier export, never
the checkpoint it comes from or another file.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

from cops.datasets.panoptic_io import read_json
from cops.errors import CopsError
from cops.models.model_card import FORMAT as CARD_FORMAT
from cops.models.model_card import ModelCard

HASH_KEY = "model_sha256"
"""The metadata key holding the SHA-256 of the model file it describes."""


def metadata_path(model_path: Path) -> Path:
    """Where the metadata of an export lives: the model file's name plus ``.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def sha256_of(path: Path) -> str:
    """The SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def metadata_bytes(card: ModelCard, model: bytes) -> bytes:
    """The metadata JSON of an export: the model card and the hash of the `model` bytes."""
    return json.dumps({**card.to_dict(), HASH_KEY: hashlib.sha256(model).hexdigest()}).encode()


def is_training_checkpoint(path: Path) -> bool:
    """Whether `path` is a torch.save archive of data only (a training checkpoint or weights
    file), not a TorchScript archive (which carries ``code/``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("/data.pkl") for n in names) and not any("/code/" in n for n in names)


def read_metadata(path: Path) -> tuple[ModelCard, str, Path]:
    """The model card of the export `path`, the model hash its metadata records, and the
    metadata file; refusals name the file and say what to do."""
    meta_file = metadata_path(path)
    if not meta_file.is_file():
        shared = path.with_suffix(".json")
        if not shared.is_file():
            raise CopsError(
                f"{meta_file}: metadata of export {path.name} not found (`cops export` writes it "
                "beside the model; copy both files)"
            )
        meta_file = shared
    data: dict[str, Any] = read_json(meta_file)
    digest = data.pop(HASH_KEY, None) if isinstance(data, dict) else None
    if digest is None and meta_file != metadata_path(path):
        raise CopsError(
            f"{meta_file}: metadata of an older export, shared by every {path.stem}.* model in "
            f"its folder and without a hash of {path.name}, so it may describe another model; "
            f"export again with `cops export` (it writes {metadata_path(path).name})"
        )
    return ModelCard.from_dict(data, meta_file), str(digest), meta_file


def check_hash(path: Path, digest: str, meta_file: Path) -> None:
    """Refuse a model file whose hash is not the one its metadata recorded."""
    if sha256_of(path) != digest:
        raise CopsError(
            f"{meta_file}: describes another model than {path.name} (the model file's hash "
            "differs from the one recorded at export); export again, or copy the model together "
            "with its own metadata"
        )


def _recorded_hash(meta_file: Path) -> str | None:
    """The model hash a metadata file records, or None (no file, unreadable, no hash)."""
    try:
        return read_json(meta_file).get(HASH_KEY) if meta_file.is_file() else None
    except (CopsError, AttributeError):
        return None


def _is_card(meta_file: Path) -> bool:
    """Whether `meta_file` is a model card JSON (an export's metadata)."""
    try:
        return meta_file.is_file() and read_json(meta_file).get("format") == CARD_FORMAT
    except (CopsError, AttributeError):
        return False


def check_replaceable(out: Path, checkpoint: Path | None) -> None:
    """Refuse to write an export over `checkpoint` (the one being exported) or over any
    existing file that is not an earlier export (a model whose metadata records its hash)."""
    if not out.exists():
        return
    if checkpoint is not None and Path(checkpoint).exists() and out.samefile(checkpoint):
        raise CopsError(
            f"{out}: is the checkpoint being exported; the export would replace it; give "
            "another --out"
        )
    meta_file = metadata_path(out)
    if out.is_file() and _recorded_hash(meta_file) == sha256_of(out):
        return
    if out.is_file() and _is_card(out.with_suffix(".json")) and not is_training_checkpoint(out):
        return  # an export of an earlier version, beside its shared metadata
    raise CopsError(
        f"{out}: exists and is not an earlier export (no {meta_file.name} with its hash); "
        "refusing to overwrite it; choose another --out"
    )
