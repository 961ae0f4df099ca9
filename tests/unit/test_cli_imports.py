"""What a command imports before it works: every recipe module (what `refit <command> --help` loads)
imports neither Lightning nor torchmetrics (4-6 s here); they load when a command trains or scores.
Fresh interpreters, so earlier tests' imports do not count."""

from __future__ import annotations

import subprocess
import sys

import pytest

from refit.cli import RECIPES

HEAVY = ("lightning", "torchmetrics")


def _imported_after(code: str) -> list[str]:
    probe = f"import sys; {code}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return [m for m in out.strip().split(",") if m]


@pytest.mark.parametrize("command", sorted(RECIPES))
def test_a_command_loads_no_training_stack_before_it_runs(command):
    module = RECIPES[command][0]
    code = (
        f"import importlib, refit.cli; m = importlib.import_module({module!r}); "
        "[importlib.import_module(s) for s in getattr(m, 'SUBCOMMANDS', {}).values()]"
    )
    assert _imported_after(code) == [], f"`refit {command}` imports {_imported_after(code)} at import"


def test_the_drift_path_to_a_p_value_needs_no_lightning():
    """A drift check's own modules (windows, embedding, tests, estimates, report) stay off Lightning, so a
    cron'd `refit drift` pays only for torch and the model."""
    code = (
        "import refit.drift, refit.drift.check, refit.drift.embed, refit.drift.html, refit.estimate, "
        "refit.evaluate, refit.maintain, refit.train"
    )
    assert _imported_after(code) == []


def test_lazy_names_resolve_and_unknown_ones_fail():
    import refit.data
    import refit.train

    assert refit.train.run_finetune.__module__ == "refit.train.job"
    assert refit.train.VERSION_DIRNAME == "version"
    assert refit.data.TextDataModule.__module__ == "refit.data.module"
    from refit.train import SequenceClassifier  # the `from` form goes through the same hook

    assert SequenceClassifier.__name__ == "SequenceClassifier"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        refit.train.nope  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        refit.data.nope  # noqa: B018
