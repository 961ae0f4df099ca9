"""The one rule for what a label value is: in a data file, and in feedback posted for a served version.

A label column that mixes JSON types (`1` beside `"negative"`, `1` beside `"1"`, `true` beside
`"positive"`) is refused, not merged. Before, every value was turned into text, so `1` and `"negative"`
trained as the label set ['1', 'negative'] with no warning: a file written by two tools (or by one
pandas column of mixed objects) silently became a classifier of the wrong classes.

Why `1` beside `"1"` is refused too, though they are probably the same class: "probably" is the problem.
A JSON integer is a label id and a string is a label name, and the two readings part as soon as the
ids do not start at 0 (integers 1 and 2 make the ids 0-2, with an empty class 0; the strings "1" and "2"
make two classes named "1" and "2"), so there is no one safe merge, and a warning scrolls past in a
training log. Refusing costs one edit of the file; a wrong merge costs a model. CSV has only strings, so
there the same rule checks the one mix it can hold: two labels that differ only by surrounding
whitespace (" 1" beside "1", "positive " beside "positive"), which are refused for every format.

Feedback (`POST /feedback`) follows the same reading against the served version's label names: a
string must be one of the names, an integer is an id, and an integer is refused where the names are
themselves digits that differ from their ids (names "1", "2": is 1 the name "1" or id 1, "2"?).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from refit.errors import DataError

__all__ = ["check_label_kinds", "feedback_label"]

_KINDS = {bool: "true/false", int: "integers", float: "fractional numbers", str: "strings"}
_SHOWN = 8  # labels named in a message; a column of free text as labels would otherwise fill the screen


def _kind(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return _KINDS[int]  # 1.0 is 1 (pandas writes an int column with a gap as floats)
    return _KINDS.get(type(value), type(value).__name__)


def _shown(value) -> str:
    """A label as it is written in JSON (true, 1, "1"): Python's repr would show True and '1'."""
    return json.dumps(value, ensure_ascii=False, default=str)[:60]


def _found(values: Sequence) -> str:
    distinct = sorted({_shown(v) for v in values if v is not None})
    more = f" and {len(distinct) - _SHOWN} more" if len(distinct) > _SHOWN else ""
    return ", ".join(distinct[:_SHOWN]) + more


def check_label_kinds(values: Sequence, lines: Sequence[int], where: str) -> None:
    """Refuse a label column of one file (`where`) that mixes kinds of value, or holds two labels that are
    equal but for surrounding whitespace. `lines[i]` is the line (or row) that `values[i]` came from, so
    the message points at the first row of each kind. Missing labels (None) are left to the caller."""
    first: dict[str, int] = {}
    for i, v in enumerate(values):
        if v is not None and v == v:  # None and NaN are missing labels, refused or allowed by the caller
            first.setdefault(_kind(v), i)
    bad = [k for k in first if k not in _KINDS.values()]
    if bad:
        i = first[bad[0]]
        raise DataError(
            f"{where}, line {lines[i]}: the label is a {bad[0]} ({_shown(values[i])}); a label is one "
            "integer id or one name (a string)."
        )
    if len(first) > 1:
        kinds = " and ".join(f"{k} (line {lines[i]}: {_shown(values[i])})" for k, i in first.items())
        digits = any(isinstance(v, str) and v.strip().isdigit() for v in values)
        why = (
            ' A number and the same digits in quotes (1 and "1") are not taken as one class: an integer is '
            "an id and a string a name, and the two readings differ once the ids skip 0."
            if digits
            else ""
        )
        raise DataError(
            f"{where}: the label column mixes {kinds}; labels found: {_found(values)}. Write every label "
            "the same way: all names (strings), or all integer ids with a labels.json beside the training "
            f'file naming them ({{"0": "negative", "1": "positive"}}).{why}'
        )
    seen: dict[str, int] = {}
    for i, v in enumerate(values):
        if isinstance(v, str):
            j = seen.setdefault(v.strip(), i)
            if values[j] != v:
                raise DataError(
                    f"{where}: labels {_shown(values[j])} (line {lines[j]}) and {_shown(v)} (line {lines[i]}) differ "
                    "only by surrounding whitespace and would train as two classes; strip the labels."
                )


def _quoted(value, limit: int = 80) -> str:
    """A client's value for an error message, as the JSON it was sent as (true, null, "a\\nb": a newline
    shows as an escape; Python's repr read `True`, `None`), and cut, so a 4 MB label is not echoed back
    whole."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _json_kind(value: object) -> str:
    """What a client sent, in JSON's words (a bool is `true`, not a Python bool)."""
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "JSON null"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def feedback_label(value: object, names: Sequence[str]) -> str:
    """The label name a posted feedback label means for a version with label `names`, or a DataError
    naming the allowed labels. A string must be a name exactly; an integer is an id in range, refused
    where the names are digits other than their ids (ambiguous); true/false and other types are refused."""
    names = list(names)
    allowed = f"allowed labels: {', '.join(names)} (or their integer ids 0-{len(names) - 1})"
    if isinstance(value, str):
        if value in names:
            return value
        hint = ""
        if value.strip() in names:
            hint = " (it differs from a label only by surrounding whitespace)"
        elif value.isascii() and value.isdigit() and int(value) < len(names):
            hint = f" (an id is sent as a JSON integer, {int(value)}, not as a string)"
        raise DataError(f"Unknown label {_quoted(value)}{hint}; {allowed}.")
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(
            f"label {_quoted(value)} is {_json_kind(value)}, not a name (a JSON string) or an id (a JSON "
            f"integer); {allowed}."
        )
    if not 0 <= value < len(names):
        raise DataError(f"Unknown label id {value}; {allowed}.")
    digits = all(n.isascii() and n.isdigit() for n in names)
    if digits and names != [str(i) for i in range(len(names))]:
        raise DataError(
            f"label {value} is ambiguous for this version: its labels are the digit strings "
            f"{', '.join(names)}, so an integer could be a name or an id. Send the name as a JSON "
            f'string ("{names[value]}" is id {value}); {allowed}.'
        )
    return names[value]
