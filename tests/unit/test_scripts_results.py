"""scripts/_results.py, which every benchmark that keeps hand-written notes in its results file writes through
(bench_drift.py: drift.md, bench_tune.py: tune.md). Scripts are not a package: loaded from their file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
MARKER = "<!-- written by hand below this line; the test keeps it -->"


@pytest.fixture(scope="module")
def write_keeping_notes():
    spec = importlib.util.spec_from_file_location("_results", SCRIPTS / "_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_keeping_notes


def test_a_rerun_replaces_the_table_and_keeps_the_notes_below_the_marker(write_keeping_notes, tmp_path):
    md = tmp_path / "drift.md"
    write_keeping_notes(md, "# first run\n| a | 1 |\n", MARKER)
    assert md.read_text() == f"# first run\n| a | 1 |\n\n{MARKER}\n"
    notes = "\n## Power (by hand)\n\n| shift | 0.80 |\n"
    md.write_text(md.read_text() + notes.lstrip("\n"))
    write_keeping_notes(md, "# second run\n| a | 2 |", MARKER)
    text = md.read_text()
    assert text.startswith("# second run\n| a | 2 |\n\n") and "first run" not in text
    assert text.split(MARKER) == ["# second run\n| a | 2 |\n\n", "\n" + notes.lstrip("\n")]
    write_keeping_notes(md, "# third run", MARKER)  # kept again, unchanged, on every rerun
    assert md.read_text().partition(MARKER)[2] == "\n" + notes.lstrip("\n")


def test_a_file_without_the_marker_is_the_scripts_own_output_and_is_replaced(write_keeping_notes, tmp_path):
    md = tmp_path / "tune.md"
    md.write_text("# made before the marker existed\n")
    write_keeping_notes(md, "# new", MARKER)
    assert md.read_text() == f"# new\n\n{MARKER}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["tune.md"]  # no temporary file left beside it


def test_the_shipped_results_files_carry_their_scripts_markers():
    """The markers the two scripts pass stand in their results files, above the hand-written parts."""
    for script, results in (("bench_drift.py", "drift.md"), ("bench_tune.py", "tune.md")):
        source = (SCRIPTS / script).read_text()
        marker = next(
            line.split("=", 1)[1].strip().strip('"') for line in source.splitlines() if "<!--" in line
        )
        text = (SCRIPTS / "results" / results).read_text()
        assert text.count(marker) == 1 and text.partition(marker)[2].strip(), (script, marker)
