"""Two-GPU DDP through refit's Trainer builder: both ranks step, and end with the same weights (the
gradients were all-reduced). Needs two CUDA devices; skipped with the count otherwise."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason=f"needs 2 CUDA devices; {torch.cuda.device_count()} visible"
)

_SCRIPT = textwrap.dedent("""
    import hashlib, sys
    from pathlib import Path
    import torch
    from refit.models.tiny import tiny_bert
    from refit.train import SequenceClassifier, build_trainer

    out = Path(sys.argv[1])
    model = tiny_bert(vocab_size=500, hidden_size=64)  # seeded: both ranks start from the same weights
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": torch.randint(5, 500, (32,), generator=g), "attention_mask": torch.ones(32, dtype=torch.long),
             "labels": torch.randint(0, 2, (), generator=g)} for _ in range(64)]
    trainer = build_trainer(out, loggers=[], has_validation=False, max_steps=3, accelerator="gpu", devices=2,
                            strategy="ddp", precision="bf16-mixed")
    trainer.fit(SequenceClassifier(model, num_labels=2, lr=1e-3, warmup_ratio=0.0),
                train_dataloaders=torch.utils.data.DataLoader(data, batch_size=8))
    digest = hashlib.sha256(b"".join(p.detach().float().cpu().numpy().tobytes() for p in model.parameters()))
    (out / f"rank{trainer.global_rank}.txt").write_text(f"{trainer.global_step} {digest.hexdigest()}")
""")


def test_ddp_on_two_gpus_keeps_ranks_in_step(tmp_path: Path):
    script = tmp_path / "ddp_step.py"  # Lightning's DDP relaunches the script, so it must be a file
    script.write_text(_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert ranks[0][0] == ranks[1][0] == "3"
    assert ranks[0][1] == ranks[1][1]  # identical weights on both ranks
