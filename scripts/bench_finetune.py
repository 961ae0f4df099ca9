"""Fine-tune throughput: `refit finetune`'s training path against a plain PyTorch loop and the HF Trainer.

Same model (MiniLM), same rows (every input exactly 64 tokens), batch size and fp32, in one process,
in interleaved rounds; steady-state samples/s over the timed steps (the first steps are warm-up).
Then validation accuracy of MiniLM after one full epoch of ../shared/datasets/sst2 through `refit finetune`.

    python scripts/bench_finetune.py [--steps 40] [--skip-epoch]

Needs `accelerate` for the HF Trainer (pip install accelerate). Writes scripts/results/finetune.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
from _datasets import DATASETS  # noqa: E402

SST2 = DATASETS / "sst2"
RESULTS = ROOT / "scripts" / "results"
BATCH, MAX_LEN, WARMUP = 32, 64, 5


def _uniform_rows(n: int) -> list[dict]:
    """Rows that all truncate to exactly MAX_LEN tokens (consecutive SST-2 sentences joined), so every batch
    costs the same and the three paths compare framework overhead, not their batch orders."""
    sentences = [json.loads(line) for line in (SST2 / "train.jsonl").read_text().splitlines()]
    rows, i = [], 0
    while len(rows) < n:
        words, label = [], sentences[i % len(sentences)]["label"]
        while len(words) < MAX_LEN + 8:
            words += sentences[i % len(sentences)]["text"].split()
            i += 1
        rows.append({"text": " ".join(words), "label": label})
    return rows


def _write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _data(tokenizer, train: Path):
    from refit.data import TextDataModule, load_splits

    splits = load_splits(str(train), None, None)
    return TextDataModule(splits, tokenizer, MAX_LEN, BATCH, group_by_length=False)


class _Timer:
    """Wall time of the steps after warm-up."""

    def __init__(self) -> None:
        self.step, self.t0, self.t1 = 0, None, None

    def tick(self) -> None:
        self.step += 1
        if self.step == WARMUP:
            self.t0 = time.perf_counter()
        self.t1 = time.perf_counter()

    def samples_per_s(self) -> float:
        return (self.step - WARMUP) * BATCH / (self.t1 - self.t0)


def bench_plain(steps: int, train: Path) -> float:
    from refit.models import load_classifier
    from refit.train import adamw_param_groups, linear_warmup_decay

    torch.manual_seed(0)
    model, tok, _ = load_classifier("minilm", ["negative", "positive"])
    dm = _data(tok, train)
    model.train()
    opt = torch.optim.AdamW(adamw_param_groups(model, 0.01), lr=5e-5)
    sched = linear_warmup_decay(opt, steps // 10, steps)
    timer = _Timer()
    for batch in dm.train_dataloader():
        loss = torch.nn.functional.cross_entropy(
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
            batch["labels"],
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        timer.tick()
    return timer.samples_per_s()


def bench_refit(steps: int, train: Path, workdir: Path) -> float:
    from lightning.pytorch.callbacks import Callback

    from refit.settings import DataConfig, OptimConfig, TrackingConfig, TrainerConfig
    from refit.train import run_finetune

    timer = _Timer()

    class Tick(Callback):
        def on_train_batch_end(self, *args) -> None:
            timer.tick()

    run_finetune(
        "minilm",
        data=DataConfig(
            train=str(train), max_length=MAX_LEN, batch_size=BATCH, group_by_length=False, reference_size=0
        ),
        optim=OptimConfig(lr=5e-5),
        trainer=TrainerConfig(max_epochs=1, accelerator="cpu", log_every_n_steps=10),
        tracking=TrackingConfig(wandb=False, log_version=False),
        output_dir=workdir / f"refit-{time.monotonic_ns()}",
        callbacks=[Tick()],
    )
    return timer.samples_per_s()


def bench_hf_trainer(steps: int, train: Path, workdir: Path) -> float:
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    from refit.models import load_classifier

    torch.manual_seed(0)
    model, tok, _ = load_classifier("minilm", ["negative", "positive"])
    ds = _data(tok, train).datasets["train"]
    timer = _Timer()

    class Tick(TrainerCallback):
        def on_step_end(self, *args, **kwargs) -> None:
            timer.tick()

    args = TrainingArguments(
        output_dir=str(workdir / "hf"),
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        learning_rate=5e-5,
        weight_decay=0.01,
        warmup_steps=steps // 10,
        max_grad_norm=1.0,
        report_to=[],
        save_strategy="no",
        logging_steps=10,
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    rows = [{"input_ids": ds.input_ids[i], "labels": ds.labels[i]} for i in range(len(ds))]
    Trainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=DataCollatorWithPadding(tok),
        callbacks=[Tick()],
    ).train()
    return timer.samples_per_s()


def one_epoch_accuracy(workdir: Path) -> dict:
    from refit.settings import DataConfig, OptimConfig, TrackingConfig, TrainerConfig
    from refit.train import run_finetune

    started = time.perf_counter()
    result = run_finetune(
        "minilm",
        data=DataConfig(
            train=str(SST2 / "train.jsonl"),
            validation=str(SST2 / "validation.jsonl"),
            test=str(SST2 / "test.jsonl"),
            max_length=MAX_LEN,
            batch_size=BATCH,
            reference_size=0,
        ),
        optim=OptimConfig(lr=5e-5),
        trainer=TrainerConfig(max_epochs=1, accelerator="cpu", log_every_n_steps=50),
        tracking=TrackingConfig(wandb=False, log_version=False),
        output_dir=workdir / "epoch",
    )
    return {
        "validation_accuracy": result.metrics["validation"]["accuracy"],
        "test_accuracy": result.metrics["test"]["accuracy"],
        "seconds": round(time.perf_counter() - started),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-epoch", action="store_true")
    args = parser.parse_args()
    if not (SST2 / "train.jsonl").is_file():
        raise SystemExit(f"needs {SST2} (../shared/datasets beside the checkout)")
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train = _write_rows(work / "train.jsonl", _uniform_rows(args.steps * BATCH))
        runs: dict[str, list[float]] = {
            "plain PyTorch loop": [],
            "refit finetune (Lightning)": [],
            "HF Trainer": [],
        }
        for _ in range(args.rounds):  # interleaved rounds, best of each: background load hits all alike
            runs["plain PyTorch loop"].append(bench_plain(args.steps, train))
            runs["refit finetune (Lightning)"].append(bench_refit(args.steps, train, work))
            runs["HF Trainer"].append(bench_hf_trainer(args.steps, train, work))
        sps = {k: max(v) for k, v in runs.items()}
        epoch = None if args.skip_epoch else one_epoch_accuracy(work)
    plain = sps["plain PyTorch loop"]
    result = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, no GPU; torch {torch.__version__}",
        "setup": {
            "model": "all-MiniLM-L6-v2",
            "batch_size": BATCH,
            "seq_len": MAX_LEN,
            "precision": "32",
            "timed_steps": args.steps - WARMUP,
            "rounds": args.rounds,
            "data": "sst2 train sentences joined so every input has exactly 64 tokens",
        },
        "all_runs_samples_per_s": {k: [round(x, 2) for x in v] for k, v in runs.items()},
        "samples_per_s": {k: round(v, 2) for k, v in sps.items()},
        "ratio_vs_plain": {k: round(v / plain, 3) for k, v in sps.items()},
        "refit_vs_hf_trainer": round(sps["refit finetune (Lightning)"] / sps["HF Trainer"], 3),
        "one_epoch_sst2": epoch,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "finetune.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Fine-tune throughput ({result['machine']})",
        "",
        f"MiniLM, batch {BATCH}, every input {MAX_LEN} tokens, fp32, {args.steps - WARMUP} timed steps, "
        f"best of {args.rounds} interleaved rounds.",
        "",
        "| path | samples/s | vs plain loop |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v:.2f} | {v / plain:.3f}x |" for k, v in sps.items()]
    lines += ["", f"refit vs HF Trainer: {result['refit_vs_hf_trainer']:.3f}x"]
    if epoch:
        lines += [
            "",
            f"One epoch of sst2 (6909 rows) with `refit finetune`: validation accuracy "
            f"{epoch['validation_accuracy']:.4f}, test accuracy {epoch['test_accuracy']:.4f}, "
            f"{epoch['seconds']} s.",
        ]
    (RESULTS / "finetune.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
