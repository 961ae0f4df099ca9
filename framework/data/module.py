"""The Lightning DataModule: holds tokenised splits and builds their loaders."""

from __future__ import annotations

import logging

import lightning as L
from torch.utils.data import DataLoader, SequentialSampler

from refit.data.batching import LengthGroupedSampler, PadCollator, TokenizedDataset, tokenize_counting_cuts
from refit.data.splits import Splits

__all__ = ["TextDataModule"]

log = logging.getLogger("refit.data")


class TextDataModule(L.LightningDataModule):
    """Tokenises every split once at construction; loaders only pad and batch."""

    def __init__(
        self,
        splits: Splits,
        tokenizer,
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        group_by_length: bool = True,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.group_by_length = group_by_length
        self.num_workers = num_workers
        self.seed = seed
        self.collate = PadCollator(tokenizer.pad_token_id or 0)
        self.datasets = {}
        self.truncated: dict[str, int] = {}  # rows per split cut at max_length (recorded in refit.json)
        for split, texts in splits.texts.items():
            ids, self.truncated[split] = tokenize_counting_cuts(tokenizer, texts, max_length)
            self.datasets[split] = TokenizedDataset(ids, splits.labels[split])
        cut = {split: n for split, n in self.truncated.items() if n}
        if cut:
            log.warning(
                "Inputs longer than data.max_length %d tokens are cut to their first %d tokens: %s. Training "
                "and metrics see only that part; raise --data.max_length to keep more.",
                max_length,
                max_length,
                ", ".join(f"{split} {n} of {len(splits.texts[split])} rows" for split, n in cut.items()),
            )

    def _loader(self, split: str, train: bool) -> DataLoader:
        ds = self.datasets[split]
        if train and self.group_by_length:
            sampler = LengthGroupedSampler(ds.lengths, self.batch_size, seed=self.seed)
            return DataLoader(
                ds,
                batch_size=self.batch_size,
                sampler=sampler,
                collate_fn=self.collate,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
            )
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            sampler=None if train else SequentialSampler(ds),
            collate_fn=self.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def has(self, split: str) -> bool:
        return split in self.datasets
