"""Labelled text: files, the bundled demo set and Hugging Face datasets, tokenised once and batched.

Files and splits are plain Python; the batching and the Lightning data module need torch and Lightning,
which take 2-6 s to import on a small machine. Those names are imported on first use (PEP 562), so a
command that only reads rows (`refit drift`, `refit registry`, every `--help`) never pays for Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from refit.data.files import (
    DEFAULT_LIMITS,
    SUFFIXES,
    ReadLimits,
    file_fingerprint,
    parse_rows,
    read_rows,
    read_table,
)
from refit.data.labels import check_label_kinds, feedback_label
from refit.data.splits import DEMO_NAME, Splits, check_data_file, demo_dir, load_splits, to_label_ids
from refit.lazy import lazy_exports

if TYPE_CHECKING:
    from refit.data.batching import LengthGroupedSampler, PadCollator, TokenizedDataset, tokenize
    from refit.data.module import TextDataModule

# name -> submodule that defines it, imported when the name is first read
_LAZY = {
    "LengthGroupedSampler": "refit.data.batching",
    "PadCollator": "refit.data.batching",
    "TokenizedDataset": "refit.data.batching",
    "tokenize": "refit.data.batching",
    "TextDataModule": "refit.data.module",
}

__all__ = [
    "DEFAULT_LIMITS",
    "DEMO_NAME",
    "LengthGroupedSampler",
    "PadCollator",
    "ReadLimits",
    "Splits",
    "TextDataModule",
    "TokenizedDataset",
    "SUFFIXES",
    "check_label_kinds",
    "demo_dir",
    "feedback_label",
    "file_fingerprint",
    "check_data_file",
    "load_splits",
    "parse_rows",
    "read_rows",
    "read_table",
    "to_label_ids",
    "tokenize",
]


__getattr__ = lazy_exports(__name__, _LAZY)
