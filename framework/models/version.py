"""The model version: one folder (model/, refit.json, reference/, exports/) written atomically.

`model/` is plain Hugging Face format with safetensors, so `transformers` alone can load it.
"""

from __future__ import annotations

import json
import platform
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Protocol

from refit.errors import VersionError
from refit.io import atomic_dir, sha256_file, write_json

__all__ = [
    "REFIT_JSON", "new_version_id", "package_versions", "write_version", "read_version",
    "load_version", "weights_file",
]

REFIT_JSON = "refit.json"
WEIGHTS = "model.safetensors"
_PACKAGES = ("refit-ml", "torch", "transformers", "lightning", "torchmetrics", "safetensors")


def new_version_id() -> str:
    now = datetime.now(timezone.utc)
    return f"v{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def weights_file(version_dir: str | Path) -> Path:
    return Path(version_dir) / "model" / WEIGHTS


class SavesItself(Protocol):
    """Something written into the version folder inside its atomic write (the drift reference:
    refit.drift.reference.Reference, which owns the files of reference/)."""

    def save(self, folder: Path) -> None: ...


def write_version(
    dest: str | Path,
    model,
    tokenizer,
    meta: dict,
    reference: SavesItself | None = None,
) -> Path:
    """Write a complete version to `dest` atomically and return it; `meta` becomes refit.json."""
    dest = Path(dest)
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "model")
        if reference is not None:
            reference.save(tmp / "reference")
        (tmp / "exports").mkdir()
        record = {
            "version_id": meta.get("version_id") or new_version_id(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **meta,
            "weights_sha256": sha256_file(tmp / "model" / WEIGHTS),
            "packages": package_versions(),
        }
        write_json(tmp / REFIT_JSON, record)
    return dest


def read_version(version_dir: str | Path) -> dict:
    """refit.json of a version, after checking the folder is complete."""
    path = Path(version_dir)
    meta_file = path / REFIT_JSON
    if not meta_file.is_file():
        raise VersionError(f"{path} is not a refit model version (no {REFIT_JSON}).")
    if not weights_file(path).is_file():
        raise VersionError(f"{path} is incomplete: {weights_file(path)} is missing.")
    try:
        return json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise VersionError(f"{meta_file} is corrupt ({e.msg}).") from None


def load_version(version_dir: str | Path, verify: bool = True):
    """(model, tokenizer, meta) of a version; refuses weights whose hash differs from refit.json."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    meta = read_version(version_dir)
    if verify and meta.get("weights_sha256") and sha256_file(weights_file(version_dir)) != meta["weights_sha256"]:
        raise VersionError(
            f"{weights_file(version_dir)} does not match the hash recorded in refit.json: the version is "
            "corrupt or was altered. Refusing to load it."
        )
    folder = Path(version_dir) / "model"
    try:
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise VersionError(f"Cannot load the model in {folder}: {e}") from None
    return model.eval(), tokenizer, meta
