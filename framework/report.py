"""Terminal tables (rich) that survive pipes: every table refit prints goes through `console()` and `table()`."""

from __future__ import annotations

import sys

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

__all__ = ["console", "table", "print_metrics"]

# Column headers short enough for an 80-column terminal.
_SHORT = {"f1_macro": "F1", "precision_macro": "prec.", "recall_macro": "recall"}
# Under a pipe rich would assume 80 columns and cut cells ("v20261122-192…"): the very ids users copy.
_PIPE_WIDTH = 400


def console() -> Console:
    """The terminal's width on a tty; wide when piped or redirected, so ids and paths are never cut."""
    return Console(width=None if sys.stdout.isatty() else _PIPE_WIDTH, soft_wrap=False)


def table(title: str, columns: tuple[str, ...] | list[str], *, right: tuple[str, ...] = ()) -> Table:
    """A table whose cells fold onto more lines rather than being cut with an ellipsis.

    rich wraps a title to the table's own width, so a narrow table (`registry gc`: three short columns)
    broke its title, path and all, over several lines; the table is at least as wide as its title instead
    (on a terminal narrower than that, rich still fits it to the terminal).
    """
    out = Table(title=title, min_width=cell_len(title))
    for col in columns:
        out.add_column(col, overflow="fold", justify="right" if col in right else "left")
    return out


def print_metrics(metrics: dict[str, dict[str, float]], title: str) -> None:
    """One row per split, one column per metric."""
    # here, not at the top: refit.evaluate loads torchmetrics and Lightning (about 8 s), which commands that
    # only print tables (a search's driver) never need
    from refit.evaluate import METRIC_NAMES, format_metric

    seen = {k for values in metrics.values() for k in values}
    names = [n for n in METRIC_NAMES if n in seen] + sorted(seen - set(METRIC_NAMES))
    headers = [_SHORT.get(n, n) for n in names]
    out = table(title, ["split", *headers], right=tuple(headers))
    out.columns[0].no_wrap, out.columns[0].min_width = True, 10
    for split, values in metrics.items():
        if values:
            out.add_row(split, *(format_metric(values[n], n) if n in values else "-" for n in names))
    console().print(out)
