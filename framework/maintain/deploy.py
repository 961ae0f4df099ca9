"""Deployable artefacts for a challenger, gated before it may be promoted.

A challenger that cannot be exported, or whose exported artefact disagrees with its PyTorch model, would
become a champion that `refit serve` cannot load: so the cycle exports it first, in the configured
formats, with the export library (the same targets, scoring and parity as `refit export`), and promotes
only a challenger whose every artefact passes:
- accuracy: at most `max_accuracy_drop` points below the PyTorch model on the challenger's validation rows;
- parity: predicted class agrees with PyTorch on at least `min_agreement` of those rows.
Artefacts are added to the (not yet registered) version's exports/ with parity.json as `refit export` adds
them: under the export lock, through refit.models.adding_exports (the new exports/ is built sealed beside
the old one and swapped in), so a kill leaves the old exports/ or the new one, never a version every
command refuses; the registered version then carries verified artefacts.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path

from refit.evaluate import AccuracyGateError, check_gate, load_gate_data, score
from refit.export import parity
from refit.export.lock import export_lock
from refit.export.targets import TARGETS, ExportOptions, install
from refit.inference import TorchPredictor, predict_logits
from refit.io import write_json
from refit.models import adding_exports

__all__ = ["export_and_gate"]


class _NotInstalled(Exception):
    """Leaves adding_exports without a swap: an artefact failed its gate, so exports/ stays as it was."""


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
    records, reasons, passed = {}, [], True
    try:
        with (
            export_lock(version_dir),  # one writer of the version's exports/, as `refit export`
            adding_exports(version_dir) as staging,  # swapped in only if this block ends normally
            tempfile.TemporaryDirectory(dir=version_dir, prefix=".staging-build-") as work,
        ):
            built = []
            for fmt in formats:
                for artefact in TARGETS[fmt].build(gd.model, Path(work) / fmt, opts):
                    logits = predict_logits(artefact.predictor(), gd.batches)
                    scores = score(logits, gd.labels, num_classes)
                    agreement = parity(reference, logits)
                    try:
                        gate = check_gate(
                            f"{fmt} artefact {artefact.name}", baseline, scores, max_accuracy_drop
                        )
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
            if not (passed and built):
                raise _NotInstalled
            install(built, staging)
            write_json(staging / "parity.json", records)  # sealed with the artefacts by adding_exports
    except _NotInstalled:
        pass
    return passed, records, reasons
