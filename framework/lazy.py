"""Names a package exports but imports only when first read (PEP 562 module `__getattr__`).

Why: refit.data and refit.train export classes that need Lightning (4-6 s to import on a small machine);
a command that never trains (`refit drift`, every `--help`) should not pay for them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` that imports each of `names` (name -> defining submodule) on
    first read and keeps it in the package, so later reads skip the hook."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
