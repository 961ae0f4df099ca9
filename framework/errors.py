"""One exception family for user mistakes: the CLI prints the message and exits 2, no traceback."""

from __future__ import annotations

__all__ = ["RefitError", "ConfigError", "DataError", "ModelError", "VersionError", "RunInterrupted"]


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


class RunInterrupted(RefitError):
    """The user stopped a long job; its state was saved so that it can be resumed."""

    exit_code = 130
