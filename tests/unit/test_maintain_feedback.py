"""Feedback posted again for one request id: what the cycles make of it.

The semantics `POST /feedback` promises (README, serve): a later label for a request corrects an earlier
one (the newest wins, whichever cycle reads which file), and posting the same label again changes nothing.
Cycles here are the maintenance cycle's own inbox step against a real registry and inbox index
(tests/unit/test_maintain_index.py's `_cycle`); no model is needed.
"""

from __future__ import annotations

import pytest

from refit.maintain.inbox import RELABELLED, REPEATED, STALE
from refit.registry import Registry
from refit.serve.capture import CAPTURE_SCHEMA, FEEDBACK_SCHEMA
from tests.unit.test_maintain_inbox import _cap, _fb, _now, _write
from tests.unit.test_maintain_index import _cycle


@pytest.fixture
def loop(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return Registry(tmp_path / "registry"), inbox


def test_the_same_label_posted_again_is_not_trained_on_twice(loop):
    """Before: a label posted again after a cycle had trained on it (a client retrying, a UI sending twice)
    made the next cycle train on the request again: the same (text, label) twice in the loop's data."""
    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", "zero"), _cap("r1", "one")], CAPTURE_SCHEMA)
    rows = [_fb("r0", "negative", _now(-3)), _fb("r0", "negative", _now(-2))]  # repeated within one file
    _write(inbox / "feedback-1.parquet", rows, FEEDBACK_SCHEMA)
    assert _cycle(reg, inbox)[0].labelled == [("zero", 0)]  # once
    _write(inbox / "feedback-2.parquet", [_fb("r0", "negative", _now(-1))], FEEDBACK_SCHEMA)
    batch, _ = _cycle(reg, inbox)
    assert batch.labelled == []
    assert batch.skipped == {REPEATED: 1}
    assert any(f"skipped 1 {REPEATED}" in n for n in batch.notes), batch.notes


def test_a_correction_read_with_the_label_it_corrects_wins(loop):
    """Both labels new to the cycle: the newer is used, whichever file sorts first."""
    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", "zero")], CAPTURE_SCHEMA)
    _write(inbox / "feedback-a.parquet", [_fb("r0", "positive", _now(-1))], FEEDBACK_SCHEMA)  # correction
    _write(inbox / "feedback-b.parquet", [_fb("r0", "negative", _now(-5))], FEEDBACK_SCHEMA)
    batch, _ = _cycle(reg, inbox)
    assert batch.labelled == [("zero", 1)] and batch.skipped == {}


def test_a_correction_after_a_cycle_trained_on_the_old_label_is_used_and_said(loop):
    """A cycle trained on 'negative'; the correction 'positive' arrives later. The next cycle trains on the
    corrected label, and says that the earlier run's data (and what was trained on it) keeps the old one.
    A label older than the one already used, arriving late, is not used, and counted."""
    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", "zero"), _cap("r1", "one")], CAPTURE_SCHEMA)
    _write(inbox / "feedback-1.parquet", [_fb("r0", "negative", _now(-10))], FEEDBACK_SCHEMA)
    assert _cycle(reg, inbox)[0].labelled == [("zero", 0)]
    _write(inbox / "feedback-2.parquet", [_fb("r0", "positive", _now(-1))], FEEDBACK_SCHEMA)
    batch, _ = _cycle(reg, inbox)
    assert batch.labelled == [("zero", 1)]
    assert batch.skipped == {}
    (note,) = [n for n in batch.notes if RELABELLED in n]
    assert note.startswith("1 ") and "old label" in note, note
    assert _cycle(reg, inbox)[0].labelled == []  # the correction is used once too
    _write(inbox / "feedback-3.parquet", [_fb("r0", "negative", _now(-30))], FEEDBACK_SCHEMA)  # stale
    batch, _ = _cycle(reg, inbox)
    assert batch.labelled == [] and batch.skipped == {STALE: 1}
    _write(inbox / "feedback-4.parquet", [_fb("r0", "positive", _now(-0.5))], FEEDBACK_SCHEMA)
    batch, _ = _cycle(reg, inbox)  # the corrected label posted again: nothing new
    assert batch.labelled == [] and batch.skipped == {REPEATED: 1}


def test_feedback_before_its_capture_then_repeated_is_used_once(loop):
    """A label that arrived before its capture is kept; the capture joins it once; a repeat adds nothing."""
    reg, inbox = loop
    _write(inbox / "feedback-1.parquet", [_fb("r0", "positive", _now(-5))], FEEDBACK_SCHEMA)
    assert _cycle(reg, inbox)[0].labelled == []
    _write(inbox / "capture-1.parquet", [_cap("r0", "zero", _now(-6))], CAPTURE_SCHEMA)
    assert _cycle(reg, inbox)[0].labelled == [("zero", 1)]
    _write(inbox / "feedback-2.parquet", [_fb("r0", "positive", _now(-1))], FEEDBACK_SCHEMA)
    assert _cycle(reg, inbox)[0].labelled == []
