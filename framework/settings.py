"""Typed config sections shared by the recipes (the schema that `refit.config` parses).

Config objects stop at the recipe boundary: recipes unpack sections into the plain keyword-only arguments
of library builders. The one exception is the fine-tune job (refit.train.run_finetune), the shared body of
four recipes (finetune, tune trials, maintain retraining, compress recovery): it takes these sections and
unpacks them itself; nothing it calls, and no other library code, sees a config object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)

__all__ = [
    "DataConfig",
    "OptimConfig",
    "TrainerConfig",
    "TrackingConfig",
    "FinetuneConfig",
    "RegistryConfig",
    "InboxConfig",
    "PolicyConfig",
    "GateConfig",
    "PrivacyConfig",
    "MONITOR_METRICS",
    "ACCELERATORS",
    "DeployConfig",
]

StepLimit = restricted_number_type("StepLimit", int, [(">=", -1)])
# Lightning reads a float as a share of an epoch and an int as a number of batches; trying the (0, 1] float
# first keeps `1.0` from a YAML file or a tuned config a whole epoch instead of "every batch".
EpochFraction = restricted_number_type("EpochFraction", float, [(">", 0), ("<=", 1)])
Precision = Literal["32", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64"]
# The accelerators refit runs on (Lightning also knows 'tpu', which needs torch_xla and is not supported).
Accelerator = Literal["auto", "cpu", "gpu", "cuda", "mps"]
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
# What `trainer.monitor` may name: the validation loss and every metric of refit.train.metrics (a test keeps
# the two lists equal; this module is imported before any training code, so it cannot import that one).
MONITOR_METRICS = (
    "val/loss",
    "val/accuracy",
    "val/f1_macro",
    "val/precision_macro",
    "val/recall_macro",
    "val/auroc",
    "val/ece",
)
_DEVICES_TEXT = re.compile(r"^(auto|-1|\d+|\d+(,\s*\d+)+,?)$")


@dataclass
class PrivacyConfig:
    """What refit may keep of the texts it sees (training, validation and production inputs).

    Args:
        store_texts: Keep input texts in files refit writes (a version's drift reference, drift.json,
            the drift HTML report, W&B runs). False keeps neither the texts nor a hash of them (a plain
            sha256 of a short text is reversed by guessing): reports name the inputs that moved by
            their row in the window, and nothing readable leaves the input files.
    """

    store_texts: bool = True


@dataclass
class DataConfig:
    """Where the labelled text comes from and how it is batched.

    Args:
        train: Training file (.jsonl, .csv or .parquet).
        validation: Validation file; used for early stopping, the best checkpoint and the drift reference.
        test: Test file; the final model is evaluated on it.
        dataset: Instead of files: 'refit-demo' (bundled demo data) or a Hugging Face datasets name
            (needs `pip install refit-ml[hub]` and a network).
        dataset_config: Hugging Face datasets config name (e.g. 'sst2' for 'glue').
        text_column: Column holding the input text.
        label_column: Column holding the label (strings or integers).
        max_length: Longest input in tokens; longer texts are truncated.
        batch_size: Training batch size per device.
        eval_batch_size: Batch size for validation, test and embeddings.
        group_by_length: Batch texts of similar length together (less padding, faster).
        num_workers: DataLoader worker processes.
        max_train_samples: Use only the first N training rows (0 = all); handy for smoke runs.
        reference_size: Validation inputs embedded as the drift reference of the version.
        reference_encoder: What embeds the drift reference (and every window checked against it):
            'base' (default) the pre-trained model this lineage was fine-tuned from, never fine-tuned
            itself, so a label-blind test still sees inputs that leave the prediction alone (a retrain
            from a version keeps that version's encoder); 'version' the version's own hidden state 2;
            or a pre-trained model ('minilm', a hub id, a model folder). scripts/results/drift_power.md.
        probe_rows: Training rows (a seeded sample) the twoview estimator's probe is fitted on, where the
            reference is embedded by a fixed encoder; 0 = no probe. The probe costs one pass of that
            encoder over these rows and over validation (18-26 s per MiniLM fine-tune on 2 CPU cores at
            2000); without it the version's twoview estimate is unavailable (the others remain).
    """

    train: str | None = None
    validation: str | None = None
    test: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    max_length: PositiveInt = 128
    batch_size: PositiveInt = 32
    eval_batch_size: PositiveInt = 64
    group_by_length: bool = True
    num_workers: NonNegativeInt = 0
    max_train_samples: NonNegativeInt = 0
    reference_size: NonNegativeInt = 512
    reference_encoder: str = "base"
    probe_rows: NonNegativeInt = 2000

    def __post_init__(self) -> None:
        if self.dataset and (self.train or self.validation or self.test):
            raise ValueError(
                "Give either 'data.dataset' or the files 'data.train'/'data.validation'/'data.test', not both."
            )


@dataclass
class OptimConfig:
    """AdamW with decoupled weight decay and a linear warm-up then linear decay.

    Args:
        lr: Peak learning rate.
        weight_decay: Decoupled weight decay; never applied to biases or LayerNorm weights.
        warmup_ratio: Share of the total optimizer steps spent warming up linearly from 0.
        betas: AdamW betas.
        eps: AdamW epsilon.
    """

    lr: PositiveFloat = 5e-5
    weight_decay: NonNegativeFloat = 0.01
    warmup_ratio: ClosedUnitInterval = 0.06
    betas: tuple[float, float] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8


@dataclass
class TrainerConfig:
    """Passed to Lightning's Trainer: precision, devices and strategy need no code change for DDP/FSDP.

    Args:
        max_epochs: Epochs to train.
        max_steps: Stop after this many optimizer steps (-1 = no limit).
        precision: '32', 'bf16-mixed' or '16-mixed' (the last two on GPU).
        accelerator: 'auto', 'cpu', 'gpu', 'cuda', 'mps'.
        devices: Number of devices, a list of ids, or 'auto'.
        strategy: 'auto', 'ddp', 'fsdp', 'deepspeed', ... (any Lightning strategy name).
        num_nodes: Machines in a multi-node run.
        gradient_clip_val: Clip gradients to this global norm (0 = off).
        accumulate_grad_batches: Accumulate gradients over N batches per optimizer step.
        val_check_interval: Validate every share of an epoch (0 < x <= 1), or every N training batches (N > 1).
        log_every_n_steps: How often training metrics are logged.
        monitor: Validation metric for early stopping and the best checkpoint.
        mode: Whether the monitored metric should be 'max'imised or 'min'imised.
        early_stopping_patience: Validations without improvement before stopping (0 = no early stopping).
        checkpoint_every_n_steps: Also save a resumable checkpoint every N steps (0 = only at validation).
        seed: Seed for weights, data order and dropout.
        deterministic: Ask PyTorch for deterministic kernels (slower).
    """

    max_epochs: PositiveInt = 3
    max_steps: StepLimit = -1
    precision: Precision = "32"
    accelerator: Accelerator = "auto"
    devices: int | str | list[int] = "auto"
    strategy: str = "auto"
    num_nodes: PositiveInt = 1
    gradient_clip_val: NonNegativeFloat = 1.0
    accumulate_grad_batches: PositiveInt = 1
    val_check_interval: EpochFraction | PositiveInt = 1.0
    log_every_n_steps: PositiveInt = 10
    monitor: str = "val/accuracy"
    mode: Literal["max", "min"] = "max"
    early_stopping_patience: NonNegativeInt = 3
    checkpoint_every_n_steps: NonNegativeInt = 0
    seed: int = 42
    deterministic: bool = False

    def __post_init__(self) -> None:
        # Lightning would only refuse these when the Trainer is built, with a traceback; say it now.
        d = self.devices
        bad = (
            isinstance(d, bool)
            or (isinstance(d, int) and (d < -1 or d == 0))
            or (isinstance(d, str) and not _DEVICES_TEXT.match(d.strip()))
            or (isinstance(d, list) and (not d or any(isinstance(i, bool) or i < 0 for i in d)))
        )
        if bad:
            raise ValueError(
                f"Invalid value for 'trainer.devices': expected a number of devices (1, 2, ...; -1 = all), a list "
                f"of device ids ([0, 1]) or 'auto'; got {d!r}."
            )
        if self.monitor not in MONITOR_METRICS:
            raise ValueError(
                f"'trainer.monitor' must be a validation metric: one of {', '.join(MONITOR_METRICS)}; "
                f"got '{self.monitor}'."
            )


@dataclass
class TrackingConfig:
    """Experiment tracking. W&B runs offline unless WANDB_MODE or `mode` says otherwise.

    Args:
        wandb: Log to Weights & Biases (offline by default: no account or network needed).
        mode: 'offline', 'online' or 'disabled'; unset means $WANDB_MODE, else 'offline'.
        project: W&B project name.
        name: Run name (default: the output folder's name).
        log_version: Upload the model version as a W&B artifact.
    """

    wandb: bool = True
    mode: Literal["offline", "online", "disabled"] | None = None
    project: str = "refit"
    name: str | None = None
    log_version: bool = True


@dataclass
class FinetuneConfig:
    """Fine-tune a pre-trained transformer for text classification and write a model version.

    Args:
        model: 'minilm' (bundled all-MiniLM-L6-v2), a Hugging Face hub id, a local model folder, or a
            refit version folder (its lineage is kept).
        output_dir: Run folder: checkpoints/, logs/, wandb/ and the finished version/ go here.
        resume: Continue an interrupted run from output_dir/checkpoints/last.ckpt.
        resume_with_changes: With resume: accept a config that differs from the checkpoint's in what is
            trained (model, data, optimiser, batch size, ...); without it such a resume is refused.
        parent: Version id or folder this one derives from (default: the model's, when it is a version).
        privacy: What of the input texts may be stored.
    """

    model: str = "minilm"
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    output_dir: str = "runs/finetune"
    resume: bool = False
    resume_with_changes: bool = False
    parent: str | None = None
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


@dataclass
class RegistryConfig:
    """Where versions and the registry database live.

    Args:
        root: Registry folder (versions/, registry.db, maintenance runs).
        db: SQLite database path (default ROOT/registry.db).
    """

    root: str = "registry"
    db: str | None = None


@dataclass
class InboxConfig:
    """The production data a maintenance cycle reads.

    Args:
        windows: Folder of JSONL/CSV/Parquet files with new inputs; each file is read once.
        text_column: Column holding the text.
        label_column: Column with labels where they have arrived (rows without one are unlabelled).
        golden: A fixed labelled file the challenger must not get worse on (required; checked before any work).
        replay_size: Rows of the champion's own training data mixed into every retrain (0 = none).
        replay_missing: When replay is configured but the champion's training data cannot be found or
            verified: 'fail' the cycle (default) or 'warn' loudly and retrain without replay.
        holdout_fraction: Share of the new labelled rows kept out of training to compare champion and
            challenger on recent data (offline A/B).
        max_drift_sample: At most this many new inputs are embedded for the drift test.
    """

    windows: str = "production"
    text_column: str = "text"
    label_column: str = "label"
    golden: str | None = None
    replay_size: NonNegativeInt = 500
    replay_missing: Literal["fail", "warn"] = "fail"
    holdout_fraction: ClosedUnitInterval = 0.3
    max_drift_sample: PositiveInt = 1000


@dataclass
class PolicyConfig:
    """When a cycle retrains.

    Args:
        tests: Drift tests on the new inputs against the champion's reference.
        alpha: Family-wise false-alarm rate of the drift decision (Bonferroni across tests).
        permutations: Permutations of the MMD test.
        min_accuracy: Retrain when the champion's accuracy on new labelled rows falls below this.
        max_age_days: Retrain when the champion is older than this.
        always_retrain: Retrain on every cycle that has new labelled data (a plain schedule).
        min_new_labels: Do not retrain with fewer new labelled rows than this.
        min_estimated_accuracy: Retrain when the upper end of the 95% interval of the champion's accuracy
            estimated without labels on the new inputs (refit.estimate) falls below this: the model is hurt,
            not merely facing different inputs. Needs a champion with a calibrator (calibration.json).
        estimator: The label-free estimator for min_estimated_accuracy: cbpe, atc, doc, cbpe_ls (CBPE
            corrected for label shift; needs a champion whose calibration.json has the confusion table) or
            twoview (the version stacked with a probe on its base encoder's embeddings; needs a champion
            fine-tuned with a base-model drift reference, which stores the probe).
        retrain_on_drift: Retrain when the drift tests fire (default). false: drift is still tested and
            reported, but a retrain needs evidence of harm (min_estimated_accuracy, min_accuracy, age,
            schedule): the harm-aware policy of scripts/results/maintenance-triggers.md.
    """

    # The same default pair as `refit drift` (recipes/drift.py): label-blind MMD plus BBSD, alpha / 2 each.
    tests: list[str] = field(default_factory=lambda: ["mmd", "bbsd"])
    alpha: ClosedUnitInterval = 0.05
    permutations: PositiveInt = 500
    min_accuracy: ClosedUnitInterval | None = None
    max_age_days: PositiveFloat | None = None
    always_retrain: bool = False
    min_new_labels: NonNegativeInt = 20
    min_estimated_accuracy: ClosedUnitInterval | None = None
    estimator: Literal["cbpe", "atc", "doc", "cbpe_ls", "twoview"] = "doc"
    retrain_on_drift: bool = True

    def __post_init__(self) -> None:
        # The names themselves are checked against the drift table by the recipe (settings sit below drift/).
        if not self.tests:
            raise ValueError("'policy.tests' must name at least one drift test.")


@dataclass
class GateConfig:
    """What a challenger must show before it replaces the champion.

    Args:
        golden_tolerance: Largest allowed accuracy drop on the golden set, in points.
        recent_margin: Least accuracy gain on the held-out recent labelled rows, in points.
        recent_alpha: The challenger must also be significantly better on the held-out recent rows:
            one-sided McNemar exact p < recent_alpha on the rows where the two models disagree (0 < alpha
            < 1). Default 0.2: the largest of 0.05, 0.1, 0.2, 0.3 that promoted at most 5% of truly-worse challengers at every
            window size simulated (scripts/results/gate.md); null: the margin alone decides, which promoted
            6-17% of them (15-28% of those within 3 points of the champion). The golden rule is unchanged.
    """

    golden_tolerance: NonNegativeFloat = 1.0
    recent_margin: float = 0.0
    recent_alpha: OpenUnitInterval | None = 0.2


@dataclass
class DeployConfig:
    """Deployable artefacts a challenger must produce, and pass, before it may be promoted.

    Args:
        formats: Export formats built and gated in every retraining cycle ([] = none).
        max_accuracy_drop: Largest allowed accuracy drop of an artefact vs the PyTorch challenger, in points.
        min_agreement: Least share of validation inputs whose predicted class agrees with PyTorch.
    """

    formats: list[str] = field(default_factory=lambda: ["onnx-int8"])
    max_accuracy_drop: NonNegativeFloat = 1.0
    min_agreement: ClosedUnitInterval = 0.97
    # The names are checked against the export table by the recipe (settings sit below export/).
