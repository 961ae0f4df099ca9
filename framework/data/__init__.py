"""Labelled text: files, the bundled demo set and Hugging Face datasets, tokenised once and batched."""

from refit.data.batching import LengthGroupedSampler, PadCollator, TokenizedDataset, tokenize
from refit.data.files import SUFFIXES, file_fingerprint, read_rows, read_table
from refit.data.module import TextDataModule
from refit.data.splits import DEMO_NAME, Splits, demo_dir, load_splits, to_label_ids

__all__ = [
    "DEMO_NAME",
    "LengthGroupedSampler",
    "PadCollator",
    "Splits",
    "TextDataModule",
    "TokenizedDataset",
    "SUFFIXES",
    "demo_dir",
    "file_fingerprint",
    "load_splits",
    "read_rows",
    "read_table",
    "to_label_ids",
    "tokenize",
]
