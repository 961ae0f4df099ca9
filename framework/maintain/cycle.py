"""One maintenance cycle: setup -> work (read, drift, decide, retrain, export, register, gate, promote) -> record.

Safety, phase by phase:
- Everything a cycle needs (inbox folder, golden set, replay data) is checked before any work.
- The champion moves only by compare-and-swap against the champion the cycle started from, in ONE registry
  transaction that also appends the audit row and finishes the run row. A manual promote meanwhile makes
  the cycle `superseded` (nothing overwritten); a kill after that commit can never make the next cycle
  promote the same files again, and a kill before it leaves the champion and database as they were.
- Input files are marked read only by a finished cycle (no_action, promoted, rejected), so the next cycle
  retries whatever a killed, failed, interrupted or superseded one did not finish: what a cycle read is
  staged in the inbox index under its run id and counts only once the registry marks that run done, with
  the record of what it staged in the same transaction (refit.maintain.index). A bad file is
  quarantined (recorded with its reason) instead of blocking the valid ones.
- `fault_point` marks every phase boundary for the fault-injection tests (see refit.maintain.faults).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from refit.config import config_to_dict
from refit.data import read_table, to_label_ids
from refit.drift.check import run_window
from refit.drift.embed import VersionEncoder
from refit.drift.reference import load_reference
from refit.drift.windows import Window
from refit.errors import ConfigError, DataError, RefitError, RunInterrupted
from refit.estimate import load_calibration, twoview_unavailable, usable
from refit.io import atomic_write_text, write_json
from refit.maintain.deploy import export_and_gate
from refit.maintain.faults import fault_point, training_fault_callback
from refit.maintain.inbox import FORGOTTEN, InboxBatch, read_inbox
from refit.maintain.index import INDEX_FILE, InboxIndex, open_index
from refit.maintain.known import InboxEntries, Overlay
from refit.maintain.policy import gate, largest_class_fall, paired, per_class_recall, retrain_reasons
from refit.maintain.replay import ReplayUnavailable, draw_replay, replay_source
from refit.maintain.report import render_cycle
from refit.maintain.scrub import FORGET_KIND, redactions
from refit.models import encode_texts, load_version, read_version
from refit.registry import CHALLENGER, CHAMPION, RegisteredVersion, Registry, Superseded
from refit.settings import DeployConfig, FinetuneConfig, GateConfig, InboxConfig, PolicyConfig

__all__ = [
    "CycleInterrupted",
    "CycleReport",
    "run_cycle",
    "DONE_STATUSES",
    "correct_rows",
    "read_golden",
    "register_challenger",
    "train_challenger",
]

DONE_STATUSES = ("no_action", "promoted", "rejected")
_NOT_SHOWN = "privacy.store_texts false: it may quote an input text"


class CycleInterrupted(RefitError):
    """A signal stopped the cycle mid-retrain; it was recorded as `interrupted` and its files are retried."""

    exit_code = 130


@dataclass
class CycleReport:
    run_id: int
    status: str  # no_new_data | no_action | promoted | rejected | superseded | interrupted | failed
    champion: str
    challenger: str | None = None
    reasons: list[str] = field(default_factory=list)
    gate: list[str] = field(default_factory=list)
    drift: dict = field(default_factory=dict)
    ab: dict = field(default_factory=dict)  # {model: {set: accuracy}}: champion vs challenger, same rows
    # {set: {n, b, c, p_two_sided, p_better}}: the paired test of the A/B (b: champion-only right, c: the reverse)
    paired: dict = field(default_factory=dict)
    # {set: {label name: {n, champion, challenger}}}: recall per class of the A/B (a forgotten class shows)
    per_class: dict = field(default_factory=dict)
    exports: dict = field(default_factory=dict)  # parity.json records of the challenger's artefacts
    files: list[str] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)  # {"file", "sha256", "reason"}
    notes: list[str] = field(default_factory=list)
    replay: dict = field(default_factory=dict)  # source, size, rows drawn
    counts: dict = field(default_factory=dict)  # new inputs with text, new labelled rows
    reference: dict = field(
        default_factory=dict
    )  # refreshed reference of the challenger: recent vs replay rows
    # label-free accuracy of the champion on the new inputs ({method: {value, low, high, n}}), and once labels
    # arrived "realised": its accuracy on them, with "error_points" of the policy's estimator
    estimate: dict = field(default_factory=dict)
    inbox_index: dict = field(default_factory=dict)  # what this run staged in the inbox index (its commit)
    error: str | None = None
    work_dir: str | None = None


@dataclass
class _Cycle:
    """What the steps of one cycle share."""

    registry: Registry
    champion: RegisteredVersion
    meta: dict
    names: list[str]
    batch: InboxBatch
    golden: list[tuple[str, int]]
    replay_path: Path | None
    report: CycleReport
    work: Path
    seed: int
    log: Callable[[str], None]
    finished: bool = False  # the run row was finished inside the promotion's transaction
    recent_eval: list[tuple[str, int]] = field(default_factory=list)
    recent_train: list[tuple[str, int]] = field(default_factory=list)


def run_cycle(
    registry: Registry,
    *,
    inbox: InboxConfig,
    policy: PolicyConfig,
    retrain: FinetuneConfig,
    gate_cfg: GateConfig,
    deploy: DeployConfig,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> CycleReport:
    """Run one cycle under the caller's lock; every outcome, failures included, is recorded in the registry.

    Raises a RefitError before any work when an input is missing, and CycleInterrupted (after recording
    the cycle as interrupted) when a signal stopped the retrain.
    """
    cycle = _setup(registry, inbox, seed, log, retrain.privacy.store_texts)
    try:
        _work(cycle, inbox=inbox, policy=policy, retrain=retrain, gate_cfg=gate_cfg, deploy=deploy)
    except Superseded as e:
        cycle.report.status = "superseded"
        cycle.report.notes.append(
            f"superseded: {e} The next cycle reads these files again against the new champion."
        )
        log(f"superseded: {e}")
    except RunInterrupted as e:
        cycle.report.status, cycle.report.error = "interrupted", "stopped by a signal during retraining"
        _record(cycle)
        raise CycleInterrupted(
            f"Maintenance cycle {cycle.report.run_id} was interrupted and recorded as "
            "'interrupted'; the next cycle reads its files again."
        ) from e
    except Exception as e:  # any failure is recorded with its traceback; the next cycle retries
        cycle.report.status = "failed"
        cycle.report.error, trace = _failure(e, cycle, retrain.privacy.store_texts)
        log(f"cycle failed: {cycle.report.error}")
        _record(cycle, trace)
        return cycle.report
    _record(cycle)
    return cycle.report


# --- setup ---------------------------------------------------------------------------------------------
def _setup(
    registry: Registry, inbox: InboxConfig, seed: int, log: Callable[[str], None], store_texts: bool
) -> _Cycle:
    """Check every input, close runs a killed process left open, read the new data and open the run."""
    folder = Path(inbox.windows)
    if not folder.is_dir():
        captured = registry.root / "inbox"  # where `refit serve` captures: the loop's usual inbox
        hint = f"; `refit serve` captures into {captured}: --inbox.windows {captured}"
        raise DataError(
            f"Inbox folder not found: 'inbox.windows' is {folder} (looked for {folder.absolute()}). "
            "Point it at the folder where new production files (JSONL, CSV or Parquet) arrive"
            f"{hint if captured.is_dir() else ''}."
        )
    if not inbox.golden:
        raise ConfigError(
            "A maintenance cycle needs a golden set to gate on: set 'inbox.golden' to a labelled file."
        )
    if not Path(inbox.golden).is_file():
        raise DataError(
            f"Golden set not found: 'inbox.golden' is {inbox.golden} (looked for "
            f"{Path(inbox.golden).absolute()}). Point it at a labelled file (text and label columns) "
            "that every challenger must still score well on, e.g. the test split you fine-tuned with."
        )
    champion = registry.get(CHAMPION)
    meta = read_version(champion.path)
    names = meta.get("labels", [])
    golden = read_golden(inbox, names, store_texts)
    replay_path, replay_note = _resolve_replay(meta, inbox, log, redactions(registry.runs(FORGET_KIND)))

    runs = registry.runs("maintain")
    for run in runs:  # under the lock, a run still 'running' was killed
        if run["status"] == "running":
            registry.finish_run(run["id"], "abandoned", {**run["details"], "note": "process died mid-cycle"})
        # a killed or interrupted retrain leaves checkpoints that no version needs: drop them
        shutil.rmtree(
            registry.root.resolve() / "maintain" / f"run-{run['id']:05d}" / "finetune" / "checkpoints",
            ignore_errors=True,
        )
    quarantined = {(q["file"], q["sha256"]) for run in runs for q in run["details"].get("quarantined", [])}
    read = partial(
        read_inbox,
        folder,
        quarantined=quarantined,
        text_column=inbox.text_column,
        label_column=inbox.label_column,
        label_names=names,
        store_texts=store_texts,
    )
    batch, run_id, index_record, index_notes = _read_and_open_run(registry, runs, read, champion.id)
    work = registry.root.resolve() / "maintain" / f"run-{run_id:05d}"
    report = CycleReport(
        run_id,
        "no_new_data",
        champion.id,
        files=batch.files,
        quarantined=batch.quarantined,
        notes=[*index_notes, *batch.notes, *([replay_note] if replay_note else [])],
        work_dir=str(work),
        inbox_index=index_record,
        replay={"source": str(replay_path) if replay_path else None, "size": inbox.replay_size},
    )
    for note in index_notes:
        log(f"inbox: {note}")
    for q in batch.quarantined:
        log(f"quarantined {q['file']}: {q['reason']}")
    for reason, n in sorted(batch.skipped.items()):
        log(f"inbox: skipped {n} {reason}")
    return _Cycle(registry, champion, meta, names, batch, golden, replay_path, report, work, seed, log)


def read_golden(inbox: InboxConfig, names: list[str], store_texts: bool) -> list[tuple[str, int]]:
    """The golden set's (text, label id) rows. A refusal names the file and the row; with store_texts false
    it does not quote the file's values: a golden set with its columns swapped (texts in the label column)
    printed a text to stderr in "label '...' is not one of the model's labels"."""
    path = inbox.golden
    try:
        texts, labels = read_table(path, inbox.text_column, inbox.label_column)
    except DataError as e:
        if store_texts:
            raise
        where = ", ".join(dict.fromkeys(re.findall(r"\b(?:line|row) \d+", str(e))))  # every one it names
        raise DataError(
            f"The golden set ('inbox.golden' {path}) was refused{f' ({where})' if where else ''}; "
            f"why is not shown ({_NOT_SHOWN}). Check its columns ('inbox.text_column' {inbox.text_column!r}, "
            f"'inbox.label_column' {inbox.label_column!r}) and its labels (the model's: {names})."
        ) from None
    ids = []
    for row, value in enumerate(labels, 1):
        try:
            ids += to_label_ids([value], names)
        except DataError as e:
            shown = (
                str(e)
                if store_texts
                else f"its label is not one of the model's labels {names} ({_NOT_SHOWN})"
            )
            raise DataError(
                f"The golden set ('inbox.golden' {path}), row {row}: {shown}. Check 'inbox.label_column' "
                f"({inbox.label_column!r}) and the file."
            ) from None
    return list(zip(texts, ids))


def _read_and_open_run(
    registry: Registry, runs: list[dict], read: Callable[..., InboxBatch], champion: str
) -> tuple[InboxBatch, int, dict, list[str]]:
    """Read the new data, open the run and stage what it read in the inbox index under the run's id: the
    returned record goes into the run's details, and the staged rows count once the run ends done."""
    batch, entries, notes, index = _read_new(
        registry, [r for r in runs if r["status"] in DONE_STATUSES], read
    )
    try:
        run_id = registry.start_run(
            "maintain", {"champion": champion, "files": batch.files, "quarantined": batch.quarantined}
        )
        record = index.stage(run_id, entries) | {"base": entries is not batch.entries}
    finally:
        index.close()
    return batch, run_id, record, notes


def _read_new(
    registry: Registry, done: list[dict], read: Callable[..., InboxBatch]
) -> tuple[InboxBatch, InboxEntries, list[str], InboxIndex]:
    """This cycle's new data against the inbox index, and what to stage (the batch's entries, plus those of
    a rebuild when the index was missing, from an older registry, or did not match the registry's runs)."""
    index, rebuild, notes = open_index(registry.root.resolve() / "maintain" / INDEX_FILE, done)
    try:
        if rebuild is None:
            batch = read(known=index)
            return batch, batch.entries, notes, index
        old = read(only=rebuild, known=index)  # what the finished cycles read, read once more (index emptied)
        missing = len(rebuild) - len(old.entries.files)
        if missing:
            notes.append(
                f"{missing} file(s) read by earlier cycles are gone or unreadable: what they held is not in the "
                "rebuilt index (a copy of one would be read as new)"
            )
        batch = read(known=Overlay(index, old.entries))
        entries = InboxEntries()
        entries.update(old.entries)
        entries.update(batch.entries)
        return batch, entries, notes, index
    except BaseException:
        index.close()
        raise


def _resolve_replay(
    meta: dict, inbox: InboxConfig, log: Callable[[str], None], redacted: dict[str, tuple[str, int]]
) -> tuple[Path | None, str | None]:
    """The champion's verified training file (as recorded, or as forget runs recorded it after removing
    forgotten texts: `redacted`), or (with replay_missing: warn) None and a loud note."""
    if not inbox.replay_size:
        return None, None
    try:
        return replay_source(meta, redacted), None
    except ReplayUnavailable as e:
        if inbox.replay_missing == "fail":
            raise
        note = f"WARNING: retraining WITHOUT replay (inbox.replay_missing: warn): {e}"
        log(note)
        return None, note


# --- work ----------------------------------------------------------------------------------------------
def _work(
    c: _Cycle,
    *,
    inbox: InboxConfig,
    policy: PolicyConfig,
    retrain: FinetuneConfig,
    gate_cfg: GateConfig,
    deploy: DeployConfig,
) -> None:
    if not c.batch.files:
        c.log("no new data since the last cycle")
        return
    fault_point("read")
    c.report.counts = {"inputs": len(c.batch.texts), "labelled": len(c.batch.labelled)}
    if c.batch.skipped[FORGOTTEN]:  # labels whose capture file was deleted or changed
        c.report.counts["forgotten"] = c.batch.skipped[FORGOTTEN]
    c.log(f"{len(c.batch.files)} new file(s): {len(c.batch.texts)} inputs, {len(c.batch.labelled)} labelled")
    _check_drift(c, inbox, policy)
    fault_point("drift")
    if not _decide(c, inbox, policy, retrain.data.max_length):
        return
    fault_point("retrain")
    version_dir = _retrain(c, inbox, retrain)
    fault_point("export")
    exported = _export(c, version_dir, deploy)
    fault_point("register")
    challenger = _register(c, version_dir)
    fault_point("gate")
    passed = _gate(c, challenger, gate_cfg, retrain.data.max_length) and exported
    if not passed:
        c.report.status = "rejected"
        c.log(f"kept {c.champion.id}: the challenger failed the gate: " + "; ".join(c.report.gate))
        return
    fault_point("promote")
    _promote(c, challenger)
    fault_point("promoted")


def _check_drift(c: _Cycle, inbox: InboxConfig, policy: PolicyConfig) -> None:
    """Drift of the new inputs against the champion's reference (skipped, with a note, when none has text)."""
    texts = c.batch.texts
    if not texts:
        c.report.notes.append("no new inputs with text: drift not tested")
        return
    sample = (
        texts
        if len(texts) <= inbox.max_drift_sample
        else random.Random(c.seed).sample(texts, inbox.max_drift_sample)
    )
    reference = load_reference(c.champion.path)
    encoder = VersionEncoder.like_reference(c.champion.path, reference.meta)
    calibration = load_calibration(c.champion.path)
    if calibration is None and policy.min_estimated_accuracy is not None:
        c.report.notes.append(
            f"policy.min_estimated_accuracy is set but champion {c.champion.id} has no "
            "calibration.json (made before refit.estimate): accuracy not estimated"
        )
    elif calibration is not None and policy.estimator == "twoview":
        why = twoview_unavailable(calibration, encoder.encoder_sha256)  # the one list of reasons
        if why:
            c.report.notes.append(
                f"policy.estimator is twoview but champion {c.champion.id} cannot give it: {why}. "
                "min_estimated_accuracy cannot act this cycle (the other estimators are still recorded)"
            )
    elif calibration is not None and policy.estimator not in usable(calibration):
        c.report.notes.append(
            f"policy.estimator is {policy.estimator} but champion {c.champion.id}'s calibration.json has no "
            "confusion table: min_estimated_accuracy cannot act this cycle (the other estimators are still "
            "recorded)"
        )
    window = run_window(
        Window("new data", sample),
        reference,
        encoder,
        c.names,
        list(policy.tests),
        policy.alpha,
        policy.permutations,
        c.seed,
        calibration,
    )
    c.report.estimate = window.get("estimate", {})
    c.report.drift = {
        t: {"p_value": r["p_value"], "drift": r["drift"], "threshold": r["threshold"]}
        for t, r in window["results"].items()
    }
    c.report.drift["drift"] = window["drift"]


def _decide(c: _Cycle, inbox: InboxConfig, policy: PolicyConfig, max_length: int) -> bool:
    """Whether to retrain; splits the new labelled rows into held-out (A/B) and training rows."""
    labelled = list(c.batch.labelled)
    random.Random(c.seed).shuffle(labelled)
    n_hold = int(round(len(labelled) * inbox.holdout_fraction)) if len(labelled) >= 2 else 0
    c.recent_eval, c.recent_train = labelled[:n_hold], labelled[n_hold:]
    champion_recent = _accuracy(c.champion.path, c.recent_eval or labelled, max_length)
    estimate = c.report.estimate.get(policy.estimator)
    if estimate is not None and labelled:  # labels arrived: how far off the label-free estimate was
        realised = champion_recent if not c.recent_eval else _accuracy(c.champion.path, labelled, max_length)
        c.report.estimate["realised"] = {
            "accuracy": realised,
            "n": len(labelled),
            "method": policy.estimator,
            "error_points": round((estimate["value"] - realised) * 100, 2),
        }
    created = datetime.fromisoformat(c.meta.get("created_at", datetime.now(timezone.utc).isoformat()))
    age_days = (datetime.now(timezone.utc) - created).total_seconds() / 86400
    results = {t: r for t, r in c.report.drift.items() if isinstance(r, dict)}
    detail = ", ".join(f"{t} p={r['p_value']:.3g}" for t, r in results.items()) or "not tested"
    c.report.reasons = retrain_reasons(
        bool(c.report.drift.get("drift")) and policy.retrain_on_drift,
        detail,
        champion_recent,
        policy.min_accuracy,
        age_days,
        policy.max_age_days,
        policy.always_retrain,
        {**estimate, "method": policy.estimator} if estimate else None,
        policy.min_estimated_accuracy,
    )
    c.report.status = "no_action"
    if not c.report.reasons:
        c.log(f"no reason to retrain ({detail})")
        return False
    called_for = "; ".join(c.report.reasons)
    if len(c.recent_train) < policy.min_new_labels:
        c.report.reasons.append(
            f"only {len(c.recent_train)} new labelled rows (min {policy.min_new_labels}): not retraining"
        )
        # one line: "retrain because ..." followed by "not retraining" read as a contradiction
        c.log(f"a retrain is called for ({called_for}), but {c.report.reasons[-1]}")
        return False
    if c.champion.withdrawn:  # a warm start from it would carry the forgotten texts into the challenger
        c.report.reasons.append(
            f"the champion {c.champion.id} was withdrawn by {c.champion.withdrawn} (it learned texts that run "
            "forgot): not warm-starting from it; repair with `refit maintain forget --ids IDS --retrain --loop "
            "LOOP.yaml`, or promote a clean version"
        )
        c.log(f"a retrain is called for ({called_for}), but {c.report.reasons[-1]}")
        return False
    c.log("retrain because " + called_for)
    return True


def _retrain(c: _Cycle, inbox: InboxConfig, retrain: FinetuneConfig) -> Path:
    """Warm start from the champion on new labelled rows plus replay; the drift reference of the result
    describes what it now serves (see _reference_texts). Returns the (unregistered) version folder."""
    replay = draw_replay(c.meta, c.replay_path, inbox.replay_size, c.seed) if c.replay_path else []
    c.report.replay["rows"] = len(replay)

    def reference(trained: set[str], validation: list[str]) -> list[str]:
        return _reference_texts(c, trained=trained, validation=validation, size=retrain.data.reference_size)

    return train_challenger(
        c.work,
        c.recent_train + replay,
        c.names,
        model=str(c.champion.path),
        parent=c.champion.id,
        golden=inbox.golden,
        retrain=retrain,
        seed=c.seed,
        reference=reference,
    )


def train_challenger(
    work: Path,
    rows: list[tuple[str, int]],
    names: list[str],
    *,
    model: str,
    parent: str | None,
    golden: str,
    retrain: FinetuneConfig,
    seed: int,
    reference: Callable[[set[str], list[str]], list[str]],
) -> Path:
    """Fine-tune `model` on `rows` (shuffled, a sixth held out for validation) into WORK/finetune/version,
    the splits written to WORK/data/{train,validation}.jsonl (what replay and a forget read again), tested
    on the golden set; `reference(trained texts, validation texts)` picks the drift reference. Shared by a
    cycle's retrain (warm start from the champion) and a forget's clean retrain (refit.maintain.repair)."""
    mix = list(rows)
    random.Random(seed + 1).shuffle(mix)
    n_val = max(1, len(mix) // 6)
    validation, train = mix[:n_val], mix[n_val:]
    data = replace(
        retrain.data,
        train=_write_split(work / "data" / "train.jsonl", train, names),
        validation=_write_split(work / "data" / "validation.jsonl", validation, names),
        test=str(Path(golden).resolve()),
        dataset=None,
        dataset_config=None,
        text_column="text",
        label_column="label",
    )
    out = work / "finetune"
    config = config_to_dict(replace(retrain, model=model, data=data, output_dir=str(out)))
    texts = reference({t for t, _ in train}, [t for t, _ in validation])
    # Imported here: Lightning loads only in a cycle that retrains (a cycle with nothing to do stays light).
    from refit.train import run_finetune

    result = run_finetune(
        model,
        data=data,
        optim=retrain.optim,
        trainer=retrain.trainer,
        tracking=retrain.tracking,
        output_dir=out,
        parent=parent,
        config=config,
        callbacks=[training_fault_callback()],
        reference_texts=texts,
        store_texts=retrain.privacy.store_texts,
    )
    return result.version_dir


def _reference_texts(c: _Cycle, *, trained: set[str], validation: list[str], size: int) -> list[str]:
    """Reference refresh policy: the challenger's drift reference is built from the cycle's held-out recent
    inputs (every new input the challenger was not trained on: unlabelled inputs, the held-out labelled
    rows and the new rows of its validation split), so a shift it was trained to serve stops reading as
    drift once it is promoted. Only when fewer than `size` such inputs exist is the rest filled from the
    replay rows of the validation split (old-domain rows, also not trained on)."""
    recent = list(
        dict.fromkeys(t for t in [*c.batch.texts, *(t for t, _ in c.batch.labelled)] if t not in trained)
    )
    rng = random.Random(c.seed + 2)
    chosen = rng.sample(recent, min(size, len(recent)))
    taken = set(chosen)
    fill = [t for t in dict.fromkeys(validation) if t not in trained and t not in taken]
    c.report.reference = {"recent": len(chosen), "replay": min(max(0, size - len(chosen)), len(fill))}
    return chosen + rng.sample(fill, c.report.reference["replay"])


def _export(c: _Cycle, version_dir: Path, deploy: DeployConfig) -> bool:
    """Build and gate the deployable artefacts (deploy.formats) inside the version before it is registered."""
    if not deploy.formats:
        return True
    try:
        passed, records, reasons = export_and_gate(
            version_dir,
            list(deploy.formats),
            max_accuracy_drop=deploy.max_accuracy_drop,
            min_agreement=deploy.min_agreement,
        )
    except RefitError as e:  # an artefact that cannot be built here: the challenger is not deployable
        c.report.gate.append(f"export {', '.join(deploy.formats)}: could not be built: {e}")
        return False
    c.report.exports = records
    c.report.gate += reasons
    return passed


def _register(c: _Cycle, version_dir: Path) -> RegisteredVersion:
    challenger = register_challenger(
        c.registry, version_dir, f"retrained in maintenance run {c.report.run_id}"
    )
    c.report.challenger = challenger.id
    return challenger


def register_challenger(registry: Registry, version_dir: Path, why: str) -> RegisteredVersion:
    """Register the challenger, then drop what the version does not need (checkpoints, the unregistered copy)."""
    challenger = registry.register(version_dir)
    registry.set_alias(CHALLENGER, challenger.id, why)
    for folder in (version_dir.parent / "checkpoints", version_dir):
        shutil.rmtree(folder, ignore_errors=True)
    return challenger


def _gate(c: _Cycle, challenger: RegisteredVersion, gate_cfg: GateConfig, max_length: int) -> bool:
    """Offline A/B of champion and challenger on the same rows (golden set, held-out recent rows), then the gate.

    Per-row correctness is kept, not only the accuracies: the rows are shared, so the gate's evidence is the
    paired (McNemar) comparison, recorded in `paired` beside the accuracies in `ab`.
    """
    correct = {
        name: {
            "golden": correct_rows(v.path, c.golden, max_length),
            "recent": correct_rows(v.path, c.recent_eval, max_length),
        }
        for name, v in (("champion", c.champion), ("challenger", challenger))
    }
    c.report.ab = {
        name: {s: (sum(rows) / len(rows) if rows else None) for s, rows in sets.items()}
        for name, sets in correct.items()
    }
    ch, cl = correct["champion"], correct["challenger"]
    verdict = gate(
        paired(ch["golden"] or [], cl["golden"] or []),
        paired(ch["recent"], cl["recent"]) if ch["recent"] and cl["recent"] else None,
        gate_cfg.golden_tolerance,
        gate_cfg.recent_margin,
        gate_cfg.recent_alpha,
    )
    c.report.paired = {s: p.to_dict() for s, p in verdict.paired.items()}
    if ch["golden"] and cl["golden"]:
        golden_ids = to_label_ids([y for _, y in c.golden], c.names)
        c.report.per_class = {"golden": per_class_recall(golden_ids, ch["golden"], cl["golden"], c.names)}
        line = largest_class_fall(c.report.per_class["golden"])
        verdict.reasons += [line] if line else []
    c.report.gate = verdict.reasons + c.report.gate
    return verdict.passed


def _promote(c: _Cycle, challenger: RegisteredVersion) -> None:
    """Compare-and-swap the champion; the alias move, its audit row and the run's end are one transaction."""
    c.report.status = "promoted"
    c.registry.promote(
        challenger.id,
        "; ".join(c.report.reasons + c.report.gate),
        c.report.ab,
        expected_champion=c.champion.id,
        run=(c.report.run_id, "promoted", _details(c.report)),
    )
    c.finished = True
    c.log(f"promoted {challenger.id}: " + "; ".join(c.report.gate))


# --- record --------------------------------------------------------------------------------------------
def _failure(e: Exception, c: _Cycle, store_texts: bool) -> tuple[str, str]:
    """The error and traceback a failed cycle records (run row, cycle.json, report.html, W&B, the log).

    With store_texts false, fail closed: the message of an error refit did not write (a library's, a bug's)
    is not kept, since it may quote an input, and the traceback keeps only where it happened (file, line,
    function, code), not the messages of the errors chained into it; any input text of the cycle a message
    still quotes whole is replaced."""
    if store_texts:
        return f"{type(e).__name__}: {e}", traceback.format_exc()[-4000:]
    message = str(e) if isinstance(e, RefitError) else f"message not kept ({_NOT_SHOWN})"
    error = f"{type(e).__name__}: {message}"
    trace = "".join(traceback.format_list(traceback.extract_tb(e.__traceback__))) + error
    texts = {*c.batch.texts, *(t for t, _ in c.batch.labelled), *(t for t, _ in c.golden)}
    return _without(error, texts), _without(trace, texts)[-4000:]


def _without(message: str, texts: set[str]) -> str:
    """`message` with every text in `texts` (as itself, or escaped as repr and JSON write it) replaced, and
    every quoted piece of one (messages cut a long value, e.g. to its first 40 or 80 characters)."""
    for text in sorted(texts, key=len, reverse=True):
        for form in dict.fromkeys((text, repr(text)[1:-1], json.dumps(text)[1:-1])):
            if len(form) >= 4:  # shorter ones would match inside words of the message itself
                message = message.replace(form, "<an input text>")

    def piece(quoted: re.Match) -> str:
        inner = quoted.group(2).removesuffix("...").removesuffix("\u2026")
        return "'<part of an input text>'" if any(inner in t for t in texts) else quoted.group(0)

    return re.sub(r"(['\"])([^'\"\n]{8,}?)\1", piece, message)


def _record(c: _Cycle, trace: str | None = None) -> None:
    """cycle.json and report.html in the run folder, then the run row (unless the promotion finished it)."""
    fault_point("report")
    details = _details(c.report)
    write_json(c.work / "cycle.json", details)
    # this cycle is drawn from `details`: its own row is left out, finished already when it promoted
    earlier = [r for r in c.registry.runs("maintain") if r["id"] != c.report.run_id]
    atomic_write_text(c.work / "report.html", render_cycle(details, earlier))
    if not c.finished:
        c.registry.finish_run(
            c.report.run_id, c.report.status, {**details, **({"traceback": trace} if trace else {})}
        )


def _details(report: CycleReport) -> dict:
    return {k: v for k, v in vars(report).items() if k != "run_id"}


def _write_split(path: Path, pairs: list[tuple[str, int]], label_names: list[str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in pairs))
    atomic_write_text(path.parent / "labels.json", json.dumps(dict(enumerate(label_names))))
    return str(path)


def _accuracy(version_dir: Path, pairs: list[tuple[str, int]], max_length: int) -> float | None:
    """The version's accuracy on the rows, from the same per-row scoring the gate's paired test uses (one
    way to score a version in a cycle, not two that could disagree at a threshold)."""
    rows = correct_rows(version_dir, pairs, max_length)
    return None if rows is None else sum(rows) / len(rows)


def correct_rows(version_dir: Path, pairs: list[tuple[str, int]], max_length: int) -> list[bool] | None:
    """Whether the version's top class is the label, row by row (None for no rows): what a paired test needs."""
    if not pairs:
        return None
    model, tokenizer, meta = load_version(version_dir)
    ids = to_label_ids([y for _, y in pairs], meta.get("labels") or [])
    probs = encode_texts(model, tokenizer, [t for t, _ in pairs], 64, max_length).probs
    return [int(top) == int(y) for top, y in zip(probs.argmax(-1).tolist(), ids)]
