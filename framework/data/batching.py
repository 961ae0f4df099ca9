"""Tokenise once, then batch with dynamic padding and length grouping."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler

__all__ = [
    "TokenizedDataset",
    "LengthGroupedSampler",
    "PadCollator",
    "tokenize",
    "tokenize_counting_cuts",
    "cut_rows",
]


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids without padding; padding happens per batch so short batches stay short."""
    return tokenize_counting_cuts(tokenizer, texts, max_length)[0]


def tokenize_counting_cuts(tokenizer, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids without padding, and how many texts were cut at `max_length`.

    A cut is silent otherwise: 20newsgroups posts (up to 2,000 characters, ~500 tokens) at max_length 128
    train and score on their first quarter only. A fast tokenizer keeps what it cut in each encoding's
    `overflowing` (exact, no second pass); a slow one has no encodings, so a text that fills max_length
    is counted as cut (it may have been exactly that long).
    """
    out = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    return out["input_ids"], cut_rows(out, max_length)


def cut_rows(encoded, max_length: int) -> int:
    """How many rows of one `tokenizer(..., truncation=True, max_length=...)` call were cut: the one rule,
    for training data and for the texts drift and evaluation encode. A fast tokenizer keeps what it cut in
    each encoding's `overflowing` (exact); a slow one has no encodings, so a row whose tokens (its
    attention mask, padded or not) fill max_length counts as cut (it may have been exactly that long)."""
    encodings = getattr(encoded, "encodings", None)
    if encodings:
        return sum(bool(e.overflowing) for e in encodings)
    if "attention_mask" in encoded:
        return sum(int(sum(row)) >= max_length for row in encoded["attention_mask"])
    return sum(len(row) >= max_length for row in encoded["input_ids"])


class TokenizedDataset(Dataset):
    """Pre-tokenised inputs (and optional labels); tokenisation is paid once per run, not per epoch."""

    def __init__(self, input_ids: list[list[int]], labels: Sequence[int] | None = None) -> None:
        self.input_ids = input_ids
        self.labels = labels
        self.lengths = [len(ids) for ids in input_ids]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        item = {"input_ids": self.input_ids[i]}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


class PadCollator:
    """Pads a batch to its own longest sequence (dynamic padding)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            ids[row, :n] = torch.tensor(it["input_ids"], dtype=torch.long)
            mask[row, :n] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if "labels" in items[0]:
            batch["labels"] = torch.tensor([it["labels"] for it in items], dtype=torch.long)
        return batch


class LengthGroupedSampler(Sampler[int]):
    """Random order in which each run of `batch_size` indices has similar lengths.

    Like Hugging Face's LengthGroupedSampler: shuffle, cut into mega-batches of 50 batches, sort each by
    length, then shuffle the batches. It is an index sampler (not a batch sampler) so that Lightning can
    wrap it in a DistributedSampler under DDP unchanged.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega: int = 50) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega = mega
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.batch_size * self.mega
        batches = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start : start + size], key=lambda i: -self.lengths[i])
            batches += [chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        # The DataLoader cuts this stream every batch_size indices, so short batches go last (one in the
        # middle would misalign every batch after it), and the longest batch goes first so that an
        # out-of-memory error shows up at step 1, not hours in.
        full = [b for b in batches if len(b) == self.batch_size]
        short = [i for b in batches if len(b) < self.batch_size for i in b]
        if full:
            longest = max(range(len(full)), key=lambda b: self.lengths[full[b][0]])
            full.insert(0, full.pop(longest))
            perm = [0] + [p + 1 for p in torch.randperm(len(full) - 1, generator=g).tolist()]
            full = [full[p] for p in perm]
        return iter([i for batch in full for i in batch] + short)
