"""A module of refit as it was at another git revision, imported beside today's: the "before" of a
benchmark's before/after, measured in the same run (the standards ask for ratios from one run)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from _datasets import ROOT


def module_at(revision: str, path: str, name: str) -> ModuleType:
    """The file `path` (e.g. 'framework/maintain/inbox.py') at git `revision`, imported as module `name`.

    Its own imports resolve to today's refit: only that one file is as it was."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    file = Path(tempfile.mkdtemp(prefix="refit-baseline-")) / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there while a class is made
    spec.loader.exec_module(module)
    return module
