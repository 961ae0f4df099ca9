"""One maintenance cycle: new data -> drift -> decide -> retrain -> gate -> promote or keep.

Safety: the champion alias moves only at the very end, in one registry transaction, so a crash or a kill
at any earlier step leaves the champion and the database as they were. Input files are marked as read
only by a finished cycle, so the next cycle retries whatever a failed one did not finish.
"""

from __future__ import annotations

import json
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from refit.config import config_to_dict
from refit.data import SUFFIXES, read_rows, read_table, to_label_ids
from refit.drift.check import run_window
from refit.drift.embed import VersionEncoder
from refit.drift.reference import load_reference
from refit.drift.windows import Window
from refit.errors import DataError
from refit.io import atomic_write_text, write_json
from refit.maintain.policy import gate, retrain_reasons
from refit.maintain.report import render_cycle
from refit.models import read_version
from refit.registry import CHALLENGER, CHAMPION, Registry
from refit.settings import FinetuneConfig, GateConfig, InboxConfig, PolicyConfig
from refit.train import evaluate_version, run_finetune

__all__ = ["CycleReport", "run_cycle"]

DONE_STATUSES = ("no_action", "promoted", "rejected")


@dataclass
class CycleReport:
    run_id: int
    status: str  # no_new_data | no_action | promoted | rejected | failed
    champion: str
    challenger: str | None = None
    reasons: list[str] = field(default_factory=list)
    gate: list[str] = field(default_factory=list)
    drift: dict = field(default_factory=dict)
    ab: dict = field(default_factory=dict)  # {model: {set: accuracy}}: champion vs challenger, same rows
    files: list[str] = field(default_factory=list)
    error: str | None = None
    work_dir: str | None = None


def _new_files(registry: Registry, folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"Inbox folder not found: {folder}")
    seen = {f for run in registry.runs("maintain") if run["status"] in DONE_STATUSES
            for f in run["details"].get("files", [])}
    return [p for p in sorted(folder.iterdir()) if p.suffix.lower() in SUFFIXES and str(p.resolve()) not in seen]


def _read_new(files: list[Path], text_column: str, label_column: str, label_names: list[str]):
    """All new texts, and the labelled subset as (text, label id) for the champion's label set."""
    texts, labelled = [], []
    for file in files:
        for i, row in enumerate(read_rows(file), 1):
            text = row.get(text_column)
            if not isinstance(text, str):
                raise DataError(f"{file}, row {i}: no text in column '{text_column}'.")
            texts.append(text)
            label = row.get(label_column)
            if label is None or label == "":
                continue
            try:
                labelled.append((text, to_label_ids([label], label_names)[0]))
            except DataError as e:
                raise DataError(f"{file}, row {i}: {e}") from None
    return texts, labelled


def _write_split(path: Path, pairs: list[tuple[str, int]], label_names: list[str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in pairs))
    (path.parent / "labels.json").write_text(json.dumps(dict(enumerate(label_names))))
    return str(path)


def _replay(champion_meta: dict, n: int, seed: int) -> list[tuple[str, int]]:
    """A sample of the champion's own training rows, so retraining does not forget the old domain."""
    train = (champion_meta.get("config") or {}).get("data", {}).get("train")
    if not n or not train or not Path(train).is_file():
        return []
    cfg = champion_meta["config"]["data"]
    texts, labels = read_table(train, cfg.get("text_column", "text"), cfg.get("label_column", "label"))
    pairs = list(zip(texts, to_label_ids(labels, champion_meta.get("labels", []))))
    return random.Random(seed).sample(pairs, min(n, len(pairs)))


def _accuracy(version_dir: Path, pairs: list[tuple[str, int]], max_length: int) -> float | None:
    if not pairs:
        return None
    return evaluate_version(version_dir, [t for t, _ in pairs], [y for _, y in pairs],
                            max_length=max_length)["accuracy"]


def run_cycle(
    registry: Registry,
    inbox: InboxConfig,
    policy: PolicyConfig,
    retrain: FinetuneConfig,
    gate_cfg: GateConfig,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> CycleReport:
    """Run one cycle under the caller's lock; every outcome, failures included, is recorded in the registry."""
    for run in registry.runs("maintain"):  # under the lock, a run still 'running' was killed
        if run["status"] == "running":
            registry.finish_run(run["id"], "abandoned", {**run["details"], "note": "process died mid-cycle"})
    champion = registry.get(CHAMPION)
    champion_meta = read_version(champion.path)
    names = champion_meta.get("labels", [])
    files = _new_files(registry, Path(inbox.windows))
    run_id = registry.start_run("maintain", {"champion": champion.id, "files": [str(f.resolve()) for f in files]})
    report = CycleReport(run_id, "no_new_data", champion.id, files=[str(f.resolve()) for f in files])
    work = registry.root / "maintain" / f"run-{run_id:05d}"
    report.work_dir = str(work)
    try:
        if not files:
            log("no new data since the last cycle")
        else:
            _cycle(report, registry, champion, champion_meta, names, files, inbox, policy, retrain, gate_cfg,
                   seed, work, log)
    except Exception as e:  # any failure is recorded with its traceback; the next cycle retries
        report.status, report.error = "failed", f"{type(e).__name__}: {e}"
        log(f"cycle failed: {report.error}")
        registry.finish_run(run_id, "failed", {**_details(report), "traceback": traceback.format_exc()[-4000:]})
        atomic_write_text(work / "report.html", render_cycle(_details(report)))
        return report
    registry.finish_run(run_id, report.status, _details(report))
    write_json(work / "cycle.json", _details(report))
    atomic_write_text(work / "report.html", render_cycle(_details(report)))
    return report


def _details(report: CycleReport) -> dict:
    return {k: v for k, v in vars(report).items() if k != "run_id"}


def _cycle(report, registry, champion, champion_meta, names, files, inbox, policy, retrain, gate_cfg, seed,
           work, log) -> None:
    texts, labelled = _read_new(files, inbox.text_column, inbox.label_column, names)
    log(f"{len(files)} new file(s): {len(texts)} inputs, {len(labelled)} labelled")

    # drift of the new inputs against the champion's reference
    reference = load_reference(champion.path)
    encoder = VersionEncoder.like_reference(champion.path, reference.meta)
    sample = texts if len(texts) <= inbox.max_drift_sample else random.Random(seed).sample(texts, inbox.max_drift_sample)
    window = run_window(Window("new data", sample), reference, encoder, names, policy.tests, policy.alpha,
                        policy.permutations, seed, champion.path)
    report.drift = {t: {"p_value": r["p_value"], "drift": r["drift"]} for t, r in window["results"].items()}
    report.drift["drift"] = window["drift"]

    rng = random.Random(seed)
    rng.shuffle(labelled)
    n_hold = int(round(len(labelled) * inbox.holdout_fraction)) if len(labelled) >= 2 else 0
    recent_eval, recent_train = labelled[:n_hold], labelled[n_hold:]
    max_length = retrain.data.max_length
    champion_recent = _accuracy(champion.path, recent_eval or labelled, max_length)
    created = datetime.fromisoformat(champion_meta.get("created_at", datetime.now(timezone.utc).isoformat()))
    age_days = (datetime.now(timezone.utc) - created).total_seconds() / 86400
    detail = ", ".join(f"{t} p={r['p_value']:.3g}" for t, r in window["results"].items())
    report.reasons = retrain_reasons(window["drift"], detail, champion_recent, policy.min_accuracy, age_days,
                                     policy.max_age_days, policy.always_retrain)
    if not report.reasons:
        report.status = "no_action"
        log(f"no reason to retrain ({detail})")
        return
    log("retrain because " + "; ".join(report.reasons))
    if len(recent_train) < policy.min_new_labels:
        report.status = "no_action"
        report.reasons.append(f"only {len(recent_train)} new labelled rows (min {policy.min_new_labels}): not retraining")
        log(report.reasons[-1])
        return

    # retrain: warm start from the champion on new labelled rows plus a replay of its own training data
    mix = recent_train + _replay(champion_meta, inbox.replay_size, seed)
    rng.shuffle(mix)
    n_val = max(1, len(mix) // 6)
    data = replace(retrain.data, train=_write_split(work / "data" / "train.jsonl", mix[n_val:], names),
                   validation=_write_split(work / "data" / "validation.jsonl", mix[:n_val], names),
                   test=inbox.golden, dataset=None, dataset_config=None, text_column="text", label_column="label")
    result = run_finetune(str(champion.path), data=data, optim=retrain.optim, trainer=retrain.trainer,
                          tracking=retrain.tracking, output_dir=work / "finetune", parent=champion.id,
                          config=config_to_dict(replace(retrain, model=str(champion.path), data=data,
                                                        output_dir=str(work / "finetune"))))
    challenger = registry.register(result.version_dir)
    report.challenger = challenger.id
    registry.set_alias(CHALLENGER, challenger.id, f"retrained in maintenance run {report.run_id}")

    # offline A/B on the same rows, then the gate
    golden = _golden(inbox, names)
    report.ab = {
        "champion": {"golden": _accuracy(champion.path, golden, max_length),
                     "recent": _accuracy(champion.path, recent_eval, max_length)},
        "challenger": {"golden": _accuracy(challenger.path, golden, max_length),
                       "recent": _accuracy(challenger.path, recent_eval, max_length)},
    }
    ch, cl = report.ab["champion"], report.ab["challenger"]
    if ch["golden"] is None:
        raise DataError("A gate needs a golden set: set 'inbox.golden' to a labelled file.")
    verdict = gate(ch["golden"], cl["golden"], ch["recent"], cl["recent"], gate_cfg.golden_tolerance,
                   gate_cfg.recent_margin)
    report.gate = verdict.reasons
    if verdict.passed:
        registry.promote(challenger.id, "; ".join(report.reasons + verdict.reasons), report.ab)
        report.status = "promoted"
        log(f"promoted {challenger.id}: " + "; ".join(verdict.reasons))
    else:
        report.status = "rejected"
        log(f"kept {champion.id}: challenger failed the gate: " + "; ".join(verdict.reasons))


def _golden(inbox: InboxConfig, names: list[str]) -> list[tuple[str, int]]:
    if not inbox.golden:
        return []
    texts, labels = read_table(inbox.golden, inbox.text_column, inbox.label_column)
    return list(zip(texts, to_label_ids(labels, names)))


