"""The model version: one folder (model/, refit.json, reference/, exports/) written atomically.

`model/` is plain Hugging Face format with safetensors, so `transformers` alone can load it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch
from safetensors.torch import save_file

from refit.errors import VersionError
from refit.io import atomic_dir, sha256_file, write_json

__all__ = [
    "REFIT_JSON", "new_version_id", "package_versions", "write_version", "read_version",
    "load_version", "weights_file", "write_reference",
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


def write_reference(folder: Path, embeddings: torch.Tensor, probs: torch.Tensor, texts: list[str],
                    meta: dict, store_texts: bool = True) -> None:
    """Drift reference: embeddings and class probabilities of held-out inputs, the texts, how they were made.

    `store_texts` False (privacy.store_texts) keeps only each text's sha256 in texts.jsonl.
    """
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": embeddings.contiguous().float(), "probs": probs.contiguous().float()},
              str(folder / "embeddings.safetensors"))
    with (folder / "texts.jsonl").open("w", encoding="utf-8") as f:
        for t in texts:
            row = {"text": t} if store_texts else {"sha256": hashlib.sha256(t.encode("utf-8")).hexdigest()}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    write_json(folder / "reference.json", {**meta, "size": len(texts), "dim": int(embeddings.shape[1]),
                                           "texts_stored": store_texts})


def write_version(
    dest: str | Path,
    model,
    tokenizer,
    meta: dict,
    reference: tuple[torch.Tensor, torch.Tensor, list[str], dict] | None = None,
    store_texts: bool = True,
) -> Path:
    """Write a complete version to `dest` atomically and return it; `meta` becomes refit.json.

    `store_texts` False keeps only hashes of the reference texts (privacy.store_texts)."""
    dest = Path(dest)
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "model")
        if reference is not None:
            write_reference(tmp / "reference", *reference, store_texts=store_texts)
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
