"""refit export: turn a model version into deployable artefacts in its exports/ folder, each gated.

    refit export --config configs/export/onnx.yaml --version runs/demo/version
    refit export --version runs/demo/version --format onnx-int8 --quantize.mode static
    refit export --version runs/demo/version --format tensorrt --tensorrt.precision fp16   # on a GPU machine
    refit export --version runs/demo/version --format edge --tensorrt.precision int8      # build on the device

Formats: onnx (model.onnx), onnx-int8 (model.int8.onnx + model.onnx), tensorrt (model.plan + metadata),
edge (edge/: ONNX, calibration and reference data, build script). Every artefact is scored on the
validation split against the PyTorch model; parity (max-abs logit diff, argmax agreement) goes to
exports/parity.json, and an artefact more than `max_accuracy_drop` points less accurate is not written.
The TensorRT path (tensorrt, and build_engine.py in edge bundles) follows NVIDIA's documented 10.x/11.x
Python API but has not yet run against a real TensorRT: refit's development machines have no GPU.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from refit.config import config_to_dict
from refit.errors import ConfigError
from refit.evaluate import check_gate, check_parent_reproduces, load_gate_data, score
from refit.export.lock import export_lock
from refit.export.parity import parity
from refit.export.targets import TARGETS, ExportOptions, install, is_installed
from refit.export.tensorrt import Profile
from refit.inference import TorchPredictor, encode, predict_logits
from refit.io import write_json
from refit.models import REFIT_JSON, adding_exports, settle_exports
from refit.registry import registry_holding
from refit.report import print_metrics

_QUANTIZER = {"dynamic": "dynamic-int8", "static": "static-int8"}


@dataclass
class OnnxConfig:
    """ONNX graph settings.

    Args:
        opset: ONNX opset version.
        exporter: 'torchscript' (ONNX Runtime fuses its attention) or 'dynamo' (torch.export based).
        optimize: Run ONNX Runtime's transformer optimizer (fused attention, LayerNorm, GELU) on model.onnx.
    """

    opset: PositiveInt = 17
    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    optimize: bool = True


@dataclass
class QuantizeConfig:
    """int8 settings for onnx-int8 (and the calibration inputs of tensorrt/edge int8).

    Args:
        mode: 'dynamic' (weights int8, activations at run time: fastest on CPU) or 'static' (Q/DQ,
            activation ranges calibrated on validation inputs).
        calibration_size: Validation inputs used for calibration.
    """

    mode: Literal["dynamic", "static"] = "dynamic"
    calibration_size: PositiveInt = 128


@dataclass
class TensorRTConfig:
    """TensorRT engine settings (tensorrt and edge formats).

    Args:
        precision: fp32, fp16 or int8 (int8 from a Q/DQ graph calibrated on validation inputs).
        min_batch: Smallest batch the engine accepts.
        opt_batch: Batch the engine is tuned for.
        max_batch: Largest batch the engine accepts.
        min_seq: Shortest sequence.
        opt_seq: Sequence length the engine is tuned for.
        max_seq: Longest sequence (0 = the version's max_length).
        workspace_gb: Builder workspace memory limit.
    """

    precision: Literal["fp32", "fp16", "int8"] = "fp16"
    min_batch: PositiveInt = 1
    opt_batch: PositiveInt = 8
    max_batch: PositiveInt = 32
    min_seq: PositiveInt = 1
    opt_seq: PositiveInt = 64
    max_seq: NonNegativeInt = 0
    workspace_gb: PositiveFloat = 4.0


@dataclass
class Config:
    """Export a model version; artefacts go to VERSION/exports/.

    Args:
        version: The model version folder (required).
        format: onnx, onnx-int8, tensorrt or edge.
        max_accuracy_drop: Largest allowed fall in validation accuracy vs the PyTorch model, in points.
        parent_tolerance: Largest allowed difference, in points, between the version's validation metrics now
            and those recorded in its refit.json; beyond it the version is taken as damaged and refused.
        validation: Validation file (default: the one in the version's refit.json config).
        device: Where ONNX artefacts are checked: 'cpu' or 'cuda' (needs onnxruntime-gpu).
        reference_size: Validation inputs (with PyTorch logits) shipped in the edge bundle.
        onnx: ONNX graph settings.
        quantize: int8 settings.
        tensorrt: TensorRT engine settings.
    """

    version: str | None = None
    format: str = "onnx"
    max_accuracy_drop: NonNegativeFloat = 1.0
    parent_tolerance: NonNegativeFloat = 1.0
    validation: str | None = None
    device: Literal["cpu", "cuda"] = "cpu"
    reference_size: PositiveInt = 64
    onnx: OnnxConfig = field(default_factory=OnnxConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    tensorrt: TensorRTConfig = field(default_factory=TensorRTConfig)

    def __post_init__(self) -> None:
        if self.format not in TARGETS:  # checked here, not by a Literal, so a registered target is a choice
            raise ValueError(f"Unknown 'format' {self.format!r}; allowed: {', '.join(TARGETS)}.")


def run(cfg: Config) -> Path:
    if not cfg.version:
        raise ConfigError("refit export needs --version DIR (the model version to export).")
    version = Path(cfg.version)
    if (root := registry_holding(version)) is not None:
        # its exports/ are pinned by the registry's database (hashed at registration): adding files to them
        # made the registry refuse the version from then on, the champion too
        raise ConfigError(
            f"{version} is a version of the registry {root}, whose files, exports/ included, are pinned at "
            "registration: exporting into it would make the registry refuse it. Export the folder it was "
            f"registered from before registering it, or export a copy (cp -r {version} DIR; refit export "
            "--version DIR) to ship."
        )
    if not (version / REFIT_JSON).is_file():  # not a version: load_gate_data says why, nothing is created
        return _export(cfg, version)
    with export_lock(version):  # one export of a version at a time (refit.export.lock)
        settle_exports(version)  # finish or undo a killed export's swap, remove its staging, first
        return _export(cfg, version)


def _export(cfg: Config, version: Path) -> Path:
    # setup
    gd = load_gate_data(version, cfg.validation, "export")
    model, tokenizer, meta, max_length = gd.model, gd.tokenizer, gd.meta, gd.max_length
    texts, labels, batches = gd.texts, gd.labels, gd.batches
    reference = predict_logits(TorchPredictor(model), batches)
    baseline = score(reference, labels, len(meta["labels"]))
    parent_check = (
        check_parent_reproduces(meta, baseline, tolerance=cfg.parent_tolerance, recipe="export")
        if gd.used_recorded_split
        else {"reproduced": False, "reason": "--validation given"}
    )
    recorded = parent_check.get("recorded") if parent_check.get("reproduced") else None
    t = cfg.tensorrt
    profile = Profile(t.min_batch, t.opt_batch, t.max_batch, t.min_seq, t.opt_seq, t.max_seq or max_length)
    ref_batches = encode(tokenizer, texts[: cfg.reference_size], max_length, 8)
    exports = version / "exports"
    opts = ExportOptions(
        opset=cfg.onnx.opset,
        exporter=cfg.onnx.exporter,
        optimize=cfg.onnx.optimize,
        quantize=_QUANTIZER[cfg.quantize.mode],
        calibration=encode(tokenizer, texts[: cfg.quantize.calibration_size], max_length, 8),
        precision=t.precision,
        profile=profile,
        workspace_gb=t.workspace_gb,
        timing_cache=exports / "timing.cache",
        device=cfg.device,
        reference=ref_batches,
        version_id=meta.get("version_id", ""),
    )

    # run: build beside the version, gate every artefact, then add them to exports/ as a whole
    records, scores, notes = {}, {"pytorch": baseline}, []
    parity_file = exports / "parity.json"
    existing = json.loads(parity_file.read_text()) if parity_file.is_file() else {}
    with (
        adding_exports(version) as staging,  # the new exports/ is swapped in only if this block ends
        tempfile.TemporaryDirectory(dir=version, prefix=".staging-build-") as build,
    ):
        artefacts = TARGETS[cfg.format].build(model, Path(build), opts)
        for artefact in artefacts:
            logits = predict_logits(artefact.predictor(), batches)
            scores[artefact.name] = score(logits, labels, len(meta["labels"]))
            gate = check_gate(
                f"{cfg.format} artefact {artefact.name}",
                baseline,
                scores[artefact.name],
                cfg.max_accuracy_drop,
                recorded=recorded,
            )
            records[artefact.name] = {
                "format": cfg.format,
                "parity": parity(reference, logits),
                "validation": scores[artefact.name],
                "accuracy_drop_points": gate["accuracy_drop_points"],
                "parent_check": parent_check,
                "info": artefact.info,
                "settings": config_to_dict(cfg),
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            if artefact.name != TARGETS[cfg.format].file and artefact.name in existing:
                same = is_installed(artefact, exports)
                records[artefact.name], note = _by_product(
                    artefact.name, existing[artefact.name], records[artefact.name], same
                )
                notes.append(note)
        staged = install(artefacts, staging)
        write_json(staging / "parity.json", {**existing, **records})
    placed = [exports / p.name for p in staged]

    # report
    print_metrics(scores, title=f"refit export {cfg.format}: validation")
    for name, rec in records.items():
        p = rec["parity"]
        print(
            f"{name}: max-abs logit diff {p['max_abs_diff']:.2e}, argmax agreement {p['argmax_agreement']:.4f} "
            f"on {p['n']} validation inputs; accuracy drop {rec['accuracy_drop_points']:.2f} points"
        )
        if rec["info"].get("not_optimized"):
            print(f"{name}: not graph-optimised: {rec['info']['not_optimized']}")
    for note in notes:
        print(note)
    print("Wrote " + ", ".join(str(p) for p in placed) + f" and {parity_file}")
    return exports


def _by_product(name: str, old: dict, new: dict, same: bool) -> tuple[dict, str]:
    """The record of a file this format builds on the way (onnx-int8's float32 model.onnx) that an earlier
    export already wrote, and what to say about it. A record says which build made the file and with which
    options: an identical rebuild keeps the earlier record, a different one replaces it and says so (the
    rebuild took the earlier record's place under its own format, silently, before)."""
    made_by = f"the {old.get('format', '?')} export of {old.get('created_at', '?')}"
    if same:
        return old, f"{name}: identical to the one {made_by} wrote; its record in parity.json is kept."
    note = f"{name}: differs from the one {made_by} wrote; replaced, parity.json records this {new['format']} build."
    return {**new, "replaces": {k: old.get(k) for k in ("format", "created_at")}}, note
