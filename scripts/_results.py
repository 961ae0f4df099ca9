"""Writing a benchmark's Markdown results without losing what was written there by hand.

A results file is the script's generated table, a marker line, then notes a person wrote (readings, runs of
other scripts summarised): a rerun replaces only the text above the marker. Each script names its own
marker, so a file says which script rewrites it.
"""

from __future__ import annotations

from pathlib import Path

from refit.io import atomic_write_text


def write_keeping_notes(path: Path, generated: str, marker: str) -> None:
    """Write `generated`, then `marker`, then whatever followed the marker in the file as it was (nothing
    for a new file, or one from before the marker existed); atomically, so a crash keeps the old file."""
    notes = path.read_text().partition(marker)[2] if path.is_file() else ""
    atomic_write_text(path, generated.rstrip("\n") + f"\n\n{marker}{notes or chr(10)}")
