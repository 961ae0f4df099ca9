"""Where the benchmarks find the shared labelled datasets (never copied into the repo).

`$REFIT_DATASETS` if set, else `../shared/datasets` beside the checkout. One definition for every script,
so a worktree or a machine with the data elsewhere needs one variable, not a flag per script.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("REFIT_DATASETS") or ROOT.parent / "shared" / "datasets")
