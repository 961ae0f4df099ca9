"""The error raised when an export cannot be built or loaded (a user-fixable problem: exit 2, no traceback)."""

from __future__ import annotations

from refit.errors import RefitError

__all__ = ["ExportError", "missing_extra"]


class ExportError(RefitError):
    """An export target cannot be built, loaded or run here; the message says why and what to install."""


def missing_extra(package: str, extra: str) -> ExportError:
    """The error for an optional dependency that is not installed, naming the extra that brings it."""
    return ExportError(f"This needs `{package}`, which is not installed: `pip install refit-ml[{extra}]`.")
