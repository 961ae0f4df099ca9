"""Pre-trained checkpoints in, model versions out."""

from refit.models.embed import Encoded, Pooling, encode_texts
from refit.models.pretrained import MINILM, check_max_length, load_classifier, resolve_model
from refit.models.version import (
    MANIFEST,
    REFIT_JSON,
    adding_exports,
    editing_version,
    load_version,
    new_version_id,
    package_versions,
    read_version,
    settle_exports,
    update_exports_manifest,
    verify_version,
    weights_file,
    write_manifest,
    write_version,
)

__all__ = [
    "MINILM",
    "check_max_length",
    "Encoded",
    "Pooling",
    "REFIT_JSON",
    "encode_texts",
    "load_classifier",
    "load_version",
    "new_version_id",
    "package_versions",
    "read_version",
    "resolve_model",
    "weights_file",
    "write_version",
    "MANIFEST",
    "adding_exports",
    "settle_exports",
    "editing_version",
    "update_exports_manifest",
    "verify_version",
    "write_manifest",
]
