"""A real Lightning fine-tune step on the GPU in bf16-mixed and 16-mixed precision: autocast really runs the
matmuls in the low precision, the fp32 master weights move, the loss stays finite. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from refit.train import SequenceClassifier, build_trainer
from tests.gpu.conftest import NO_CUDA, token_batch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)


class _Batches(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.batch = token_batch(n, 32)

    def __len__(self) -> int:
        return len(self.batch["labels"])

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.batch.items()}


@pytest.mark.parametrize(
    "precision,low", [("bf16-mixed", torch.bfloat16), ("16-mixed", torch.float16)], ids=["bf16", "fp16"]
)
def test_mixed_precision_fine_tune_step(tmp_path, tiny_bert, precision, low):
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name(0)} has no bf16 support")
    before = {k: v.detach().clone() for k, v in tiny_bert.named_parameters()}
    module = SequenceClassifier(tiny_bert, num_labels=2, lr=1e-3, warmup_ratio=0.0)
    seen: list[torch.dtype] = []
    hook = tiny_bert.bert.encoder.layer[0].attention.self.query.register_forward_hook(
        lambda m, i, o: seen.append(o.dtype)
    )
    trainer = build_trainer(
        tmp_path,
        loggers=[],
        has_validation=False,
        max_steps=8,  # a few more than GradScaler may skip (fp16 overflow at its first scales)
        precision=precision,
        accelerator="gpu",
        devices=1,
        log_every_n_steps=1,
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(_Batches(128), batch_size=16))
    hook.remove()
    assert trainer.global_step == 8
    assert seen and all(dt == low for dt in seen), seen  # autocast ran the Linear in low precision
    loss = trainer.callback_metrics["train/loss_step"]
    assert torch.isfinite(loss)
    # Lightning's teardown moves the module back to the CPU after fit, where `before` is too: compare there
    # (comparing a CUDA copy of `before` with it would raise, tensors on two devices).
    after = {k: v.detach().cpu() for k, v in tiny_bert.named_parameters()}
    assert all(p.dtype == torch.float32 for p in after.values())  # fp32 master weights
    moved = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert len(moved) > len(before) // 2, f"only {len(moved)} of {len(before)} tensors changed"
