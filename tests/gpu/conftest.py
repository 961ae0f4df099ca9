"""GPU tests: a tiny random BERT built from a config (no model package or hub needed, so the suite runs on
a bare GPU image), and the skip reasons shared by every file here."""

from __future__ import annotations

import pytest
import torch

NO_CUDA = "needs a CUDA device (none visible to torch here)"


def pytest_collection_modifyitems(config, items):
    """Everything under tests/gpu is marked `gpu`, so `-m gpu` / `-m "not gpu"` select it as a whole."""
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.gpu)


@pytest.fixture
def tiny_bert():
    """A randomly initialised 2-layer BERT classifier (hidden 64, vocabulary 500), float32, on the CPU."""
    from refit.models.tiny import tiny_bert

    return tiny_bert(vocab_size=500, hidden_size=64)


def token_batch(n: int, seq: int, vocab: int = 500, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids with ragged padding (the last rows shorter) and labels: a real-shaped batch."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, seq), generator=g)
    mask = torch.ones(n, seq, dtype=torch.long)
    for i in range(n // 2, n):
        mask[i, seq - 1 - i % (seq // 2) :] = 0
    ids = ids * mask
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (n,), generator=g)}
