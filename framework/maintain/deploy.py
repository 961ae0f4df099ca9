"""Deployable artefacts for a challenger, gated before it may be promoted.

A challenger that cannot be exported, or whose exported artefact disagrees with its PyTorch model, would
become a champion that `refit serve` cannot load: so the cycle exports it first, in the configured
formats, with the export library (the same targets, scoring and parity as `refit export`), and promotes
only a challenger whose every artefact passes:
- accuracy: at most `max_accuracy_drop` points below the PyTorch model on the challenger's validation rows;
- parity: predicted class agrees with PyTorch on at least `min_agreement` of those rows.
Artefacts are written into the (not yet registered) version's exports/ with parity.json and exports/ is
re-sealed (refit.models.update_exports_manifest), so that the registered version carries verified artefacts.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path

from refit.evaluate import AccuracyGateError, check_gate, load_gate_data, score
from refit.export import parity
from refit.export.targets import TARGETS, ExportOptions, install
from refit.inference import TorchPredictor, predict_logits
from refit.io import write_json
from refit.models import update_exports_manifest

__all__ = ["export_and_gate"]


def _size(paths: list[Path]) -> int:
    return sum(f.stat().st_size for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())


def export_and_gate(
    version_dir: Path, formats: list[str], *, max_accuracy_drop: float, min_agreement: float
) -> tuple[bool, dict, list[str]]:
    """Export `version_dir` in `formats` and gate every artefact: (passed, parity.json records, reasons).

    Nothing is installed unless every artefact of every format passes.
    """
    gd = load_gate_data(version_dir, None, "maintain")
    num_classes = len(gd.meta["labels"])
    reference = predict_logits(TorchPredictor(gd.model), gd.batches)
    baseline = score(reference, gd.labels, num_classes)
    opts = ExportOptions(device="cpu", version_id=gd.meta.get("version_id", ""))
    exports = Path(version_dir) / "exports"
    exports.mkdir(exist_ok=True)
    records, reasons, passed = {}, [], True
    with tempfile.TemporaryDirectory(dir=exports, prefix=".staging-") as staging:
        built = []
        for fmt in formats:
            for artefact in TARGETS[fmt].build(gd.model, Path(staging) / fmt, opts):
                logits = predict_logits(artefact.predictor(), gd.batches)
                scores = score(logits, gd.labels, num_classes)
                agreement = parity(reference, logits)
                try:
                    gate = check_gate(f"{fmt} artefact {artefact.name}", baseline, scores, max_accuracy_drop)
                    ok = True
                except AccuracyGateError as e:
                    gate, ok = e.report, False
                ok = ok and agreement["argmax_agreement"] >= min_agreement
                records[artefact.name] = {
                    "format": fmt,
                    "parity": agreement,
                    "validation": scores,
                    "accuracy_drop_points": gate["accuracy_drop_points"],
                    "bytes": _size(artefact.files),
                    "passed": ok,
                    "info": artefact.info,
                    "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
                reasons.append(
                    f"export {artefact.name}: accuracy {round(-gate['accuracy_drop_points'], 2) + 0.0:+.2f} points vs PyTorch "
                    f"(max drop {max_accuracy_drop:g}), argmax agreement {agreement['argmax_agreement']:.4f} "
                    f"(min {min_agreement:g}), {records[artefact.name]['bytes'] / 1e6:.1f} MB: "
                    + ("passed" if ok else "FAILED")
                )
                passed = passed and ok
                built.append(artefact)
        placed = install(built, exports) if passed and built else []
    if placed:  # parity.json, then seal exports/ (every later load verifies it)
        write_json(exports / "parity.json", records)
        update_exports_manifest(version_dir, [*placed, exports / "parity.json"])
    return passed, records, reasons
