"""Labelled text: files, the bundled demo set and Hugging Face datasets, tokenised once and batched."""

from refit.data.batching import LengthGroupedSampler, PadCollator, TokenizedDataset, tokenize
from refit.data.files import file_fingerprint, read_table
from refit.data.module import TextDataModule
from refit.data.splits import DEMO_NAME, Splits, demo_dir, load_splits

__all__ = [
    "DEMO_NAME", "LengthGroupedSampler", "PadCollator", "Splits", "TextDataModule", "TokenizedDataset",
    "demo_dir", "file_fingerprint", "load_splits", "read_table", "tokenize",
]
