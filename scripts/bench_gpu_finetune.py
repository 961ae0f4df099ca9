"""Fine-tune throughput on a GPU: refit's Lightning training path in fp32, bf16-mixed and 16-mixed.

    python scripts/bench_gpu_finetune.py [--steps 30] [--out runs/gpu_finetune] [--tiny]

The model is MiniLM's shape (BERT, 6 layers, hidden 384, 12 heads, vocab 30522) with random weights built
from a config, so it runs on a machine with no model package and no hub (speed does not depend on the
weights). Batch 32, every input 128 tokens. Steady-state samples/s over the timed steps, after 5 warm-up
steps, with the device synchronised at both ends; peak GPU memory per precision. `--tiny` runs the same
flow on the CPU with a 2-layer hidden-32 model and 3 steps (a dry run of the script, not a measurement).
Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from refit.io import atomic_write_text

WARMUP, BATCH, SEQ = 5, 32, 128


class _Clock(L.Callback):
    """Wall time from the end of the warm-up steps to the end of the last step, device synchronised."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self._sync()
            self.start = time.perf_counter()
        self._sync()
        self.end = time.perf_counter()


class _Rows(torch.utils.data.Dataset):
    def __init__(self, n: int, seq: int, vocab: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1000 % vocab, vocab, (n, seq), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones_like(self.ids[i]),
            "labels": self.labels[i],
        }


def run(precision: str, steps: int, tiny: bool) -> dict:
    from refit.models.tiny import tiny_bert
    from refit.train import SequenceClassifier, build_trainer

    shape = (
        {"hidden_size": 32}
        if tiny
        else {"hidden_size": 384, "layers": 6, "heads": 12, "intermediate_size": 1536, "max_positions": 512}
    )
    vocab, seq, batch = (500, 32, 8) if tiny else (30522, SEQ, BATCH)
    warmup = 1 if tiny else WARMUP
    model = tiny_bert(vocab_size=vocab, **shape)
    clock = _Clock(warmup)
    cuda = torch.cuda.is_available() and not tiny
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(
            tmp,
            loggers=[],
            has_validation=False,
            max_steps=warmup + steps,
            precision=precision,
            accelerator="gpu" if cuda else "cpu",
            devices=1,
            log_every_n_steps=50,
            extra_callbacks=[clock],
        )
        loader = torch.utils.data.DataLoader(_Rows(batch * (warmup + steps), seq, vocab), batch_size=batch)
        trainer.fit(
            SequenceClassifier(model, num_labels=2, lr=5e-5, warmup_ratio=0.0), train_dataloaders=loader
        )
    seconds = clock.end - clock.start
    out = {
        "precision": precision,
        "steps_timed": steps,
        "batch": batch,
        "seq": seq,
        "samples_per_s": round(batch * steps / seconds, 1),
        "loss": float(trainer.callback_metrics.get("train/loss_step", float("nan"))),
    }
    if cuda:
        out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--precisions", default="32,bf16-mixed,16-mixed")
    parser.add_argument("--out", type=Path, default=Path("runs") / "gpu_finetune")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tiny = args.tiny or not torch.cuda.is_available()
    precisions = args.precisions.split(",")
    if tiny:  # the CPU has no fp16 autocast path worth timing; bf16 autocast runs there
        precisions = [p for p in precisions if p != "16-mixed"]
    machine = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available() and not tiny
        else f"{platform.machine()} CPU (dry run)"
    )
    rows: list[dict] = []
    result = {
        "machine": machine,
        "torch": torch.__version__,
        "model": "tiny" if tiny else "MiniLM-shaped, random",
        "rows": rows,
    }
    for p in precisions:  # the files after every precision: a run stopped at its limit keeps the rows so far
        rows.append(run(p, 3 if tiny else args.steps, tiny))
        lines = _write(result, args.out)
    print("\n".join(lines))


def _write(result: dict, out: Path) -> list[str]:
    """OUT.json and OUT.md (each through a temporary file); returns the Markdown lines."""
    rows, machine = result["rows"], result["machine"]
    base = rows[0]["samples_per_s"]
    lines = [
        f"## Fine-tune throughput ({machine}; {result['model']} BERT, batch {rows[0]['batch']}, seq {rows[0]['seq']})",
        "",
        "| precision | samples/s | vs first row | peak GiB | loss |",
        "|---|---|---|---|---|",
        *[
            f"| {r['precision']} | {r['samples_per_s']} | {r['samples_per_s'] / base:.2f}x | {r.get('peak_gib', '-')} | "
            f"{r['loss']:.3f} |"
            for r in rows
        ],
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    return lines


if __name__ == "__main__":
    main()
