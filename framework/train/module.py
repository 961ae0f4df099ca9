"""The LightningModule: a Hugging Face sequence classifier, its optimiser and its metrics."""

from __future__ import annotations

import lightning as L
import torch

from refit.train.metrics import training_metrics
from refit.train.optim import adamw_param_groups, linear_warmup_decay

__all__ = ["SequenceClassifier"]


class SequenceClassifier(L.LightningModule):
    """Wraps any `AutoModelForSequenceClassification`; the HF model stays the thing that gets saved."""

    def __init__(
        self,
        model: torch.nn.Module,
        num_labels: int,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.06,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        # transformers 5 returns from_pretrained models in eval mode and Lightning keeps submodule modes
        # as it finds them, so dropout would silently stay off during training without this.
        self.model = model.train()
        self.train_metrics = training_metrics(num_labels, "train/")
        self.val_metrics = training_metrics(num_labels, "val/")
        self.test_metrics = training_metrics(num_labels, "test/")
        # set to a list (refit.train.job's final validation) to keep each validation batch's logits, so the
        # calibrator is fitted on the logits that scored the best checkpoint instead of a second pass
        self.kept_val_logits: list[torch.Tensor] | None = None

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def _step(self, batch: dict, metrics, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of one batch; updates the stage's metrics and logs its loss."""
        logits = self(batch)
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
        metrics.update(logits.detach().float(), batch["labels"])
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            loss,
            prog_bar=True,
            on_step=on_step,
            on_epoch=True,
            batch_size=batch["labels"].shape[0],
            sync_dist=not on_step,
        )
        return loss, logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, self.train_metrics, "train")[0]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self._step(batch, self.val_metrics, "val")[1]
        if self.kept_val_logits is not None:
            self.kept_val_logits.append(logits.detach().float().cpu())

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, self.test_metrics, "test")

    @staticmethod
    def _has_samples(metrics) -> bool:
        """False when no batch of this epoch ran in this process: a run resumed from a checkpoint taken
        right after the epoch's last batch goes straight to the epoch end, and computing metrics of
        nothing raises ("No samples to concatenate"). That epoch's train metrics are then not reported: they
        covered batches run by the interrupted process, whose metric state a checkpoint does not keep."""
        return any(m.update_called for m in metrics.values())

    @staticmethod
    def _defined(values: dict) -> dict:
        """The epoch's metrics less an undefined AUROC (NaN: a split of one class). Not logging it leaves
        an empty cell in metrics.csv and no W&B point, where 0.0 read as a model ranking every case
        backwards; a run that monitors it is refused before training (refit.train.job)."""
        return {k: v for k, v in values.items() if not (k.endswith("auroc") and torch.isnan(v))}

    def _log_epoch(self, metrics) -> None:
        if self._has_samples(metrics):
            self.log_dict(self._defined(metrics.compute()))  # torchmetrics already synced across ranks
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch(self.train_metrics)

    def on_validation_epoch_end(self) -> None:
        if not self._has_samples(self.val_metrics):
            self.val_metrics.reset()
            return
        values = self.val_metrics.compute()
        self.log_dict(self._defined(values))
        self.log("val/acc", values["val/accuracy"], prog_bar=True, logger=False)
        self.val_metrics.reset()

    def on_test_epoch_end(self) -> None:
        self._log_epoch(self.test_metrics)

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            adamw_param_groups(self.model, hp.weight_decay), lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = linear_warmup_decay(optimizer, int(hp.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
