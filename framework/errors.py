"""One exception family for user mistakes: the CLI prints the message and exits 2, no traceback."""

from __future__ import annotations

__all__ = [
    "RefitError",
    "ConfigError",
    "DataError",
    "ExportError",
    "MissingExtra",
    "ModelError",
    "VersionError",
    "RunInterrupted",
]


class RefitError(Exception):
    """A mistake the user can fix; the message says what, where and how."""

    exit_code = 2


class ConfigError(RefitError):
    """A config key or value is wrong."""


class DataError(RefitError):
    """A data file is missing, unreadable or does not match the config."""


class ModelError(RefitError):
    """A model cannot be loaded from the given name or folder."""


class VersionError(RefitError):
    """A model version folder is missing, incomplete or corrupt."""


class ExportError(RefitError):
    """An export target cannot be built, loaded or run here; the message says why and what to install."""


class MissingExtra(ExportError):
    """An optional dependency is not installed; the message names the extra that brings it.

    One class for every optional dependency (onnx, onnxruntime, ray, wandb, ...), so every layer can raise
    it without importing the layer that happens to need the package. It subclasses ExportError because the
    export path is where most optional packages live, and callers catching ExportError keep working.
    """

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"This needs `{package}`, which is not installed: `pip install refit-ml[{extra}]`.")
        self.package, self.extra = package, extra


class RunInterrupted(RefitError):
    """The user stopped a long job; its state was saved so that it can be resumed."""

    exit_code = 130
