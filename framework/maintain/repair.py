"""Repair after a forget: stop serving a champion that learned forgotten texts (`forget --retrain`).

Removing texts from the loop's files (refit.maintain.scrub) leaves them in every model that learned them
(refit.maintain.lineage). `refit maintain forget --retrain --loop LOOP.yaml` then, after the scrub and under
the same maintenance lock, makes ONE clean challenger and decides what serves, in this order:

1. Is there anything to repair? Only when the champion learned the texts or may have (lineage "learned" or
   "unknown"). A clean champion (e.g. a rerun after a forget that already promoted) is said and left:
   that is what makes a rerun finish the job instead of repeating it.
2. Starting point: the loop's BASE model, the loop config's `retrain.model` (a pre-trained model, what the
   loop's first champion was fine-tuned from), never a version that learned them (not the tainted
   champion), and not the newest clean ancestor either, though warm-starting from it would be allowed. Chosen so: the gate
   below compares the challenger with that ancestor, and a challenger warm-started from it would be judged
   against its own parent, not as an independent second candidate; and a base-model challenger does not
   depend on the lineage verdict "clean", which only says no run file the forget could read held a text.
   A `retrain.model` that is a refit version folder is refused unless the registry holds it and calls it
   clean.
3. Training data. What the loop's replay really holds: a cycle trains on its new labelled rows plus a
   sample of `inbox.replay_size` rows of the champion's own training file, and writes (five sixths of) that
   mix as its run folder's data/train.jsonl, which becomes the next replay source. So the champion's
   training file holds only a SAMPLE of what earlier cycles trained on: earlier cycles' rows that were not
   drawn again, and most of the first champion's own training data, are in no later file. A retrain from the
   base model on the replay file alone would learn much less than the champion did. The clean challenger
   therefore trains on the UNION (by text) of the training files of every version on the champion's parent
   chain, the first champion's own training data included (`lineage_rows`): each as its refit.json
   fingerprint recorded it, or in the state forget runs recorded after removing texts from it (replay's
   own check, refit.maintain.replay.replay_source); a file that is gone or changed is left out and named.
   Validation rows (a sixth of every cycle's mix) and held-out recent rows were never in a training file
   and are not used; like a cycle, the retrain holds out a sixth of its rows for validation.
4. Data check, fail closed: every row is tested with the forget's own matcher (refit.maintain.scrub.Match:
   the texts and their keyed hashes). One forgotten text anywhere (your own training data is not scrubbed)
   and nothing is trained (`RepairRefused`, exit 1). So is a forget that could not look for every text (a
   damaged inbox index).
5. Train, export, register, with the cycle's own functions (refit.maintain.cycle.train_challenger, the
   deploy gate, register_challenger); its files go to REGISTRY/maintain/run-forget-N/, where later forgets
   scrub and judge them like any run folder.
6. Gate, never against the tainted champion (whether to stop serving it cannot depend on its accuracy):
   with a clean ancestor, the loop's gate (golden set, refit.maintain.policy.gate) between ancestor and
   challenger: the challenger when it passes against the ancestor (and its exports passed), the ancestor
   otherwise; without one, the challenger when it passes the loop's absolute floor on the golden set
   (`policy.min_accuracy`, when set) and its exports. The winner is promoted by compare-and-swap against the
   tainted champion, in the same transaction that finishes the forget's run. When neither passes, the
   champion stays, the command exits 1 and says that the served model still carries the texts.

Exactly once: a kill before the promote commit leaves the tainted champion serving, its run 'running'
(the next forget records it 'abandoned' and drops its checkpoints), and the scrub already done (a rerun
finds nothing to rewrite). The rerun gates the clean challenger that killed run registered, when it got
that far (`_left_by_killed`: registered, trained from the same base into a run-forget-N folder of an
abandoned run, or of a run that failed after registering it, e.g. its promote's target was removed
meanwhile, and still clean), else trains one; it promotes once. `refit registry remove` takes no
maintenance lock: a clean ancestor removed (or damaged) during the retrain is not gated against, as when
there is none. A kill after the commit leaves a clean
champion: the rerun says so and trains nothing. Only version ids and counts are recorded, never texts.
"""

from __future__ import annotations

import json
import random
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from refit.errors import DataError, RefitError
from refit.io import sha256_file
from refit.maintain.cycle import correct_rows, read_golden, register_challenger, train_challenger
from refit.maintain.deploy import export_and_gate
from refit.maintain.faults import fault_point
from refit.maintain.lineage import CLEAN, LEARNED, UNKNOWN, Lineage
from refit.maintain.policy import gate, paired
from refit.maintain.replay import ReplayUnavailable, draw_replay, replay_source
from refit.maintain.scrub import FORGET_KIND, Match, redactions
from refit.models import read_version
from refit.models.version import WEIGHTS
from refit.registry import RegisteredVersion, Registry, Superseded
from refit.settings import DeployConfig, FinetuneConfig, GateConfig, InboxConfig

__all__ = ["REPAIR_PREFIX", "Repair", "RepairRefused", "close_abandoned", "lineage_rows", "repair_champion"]

REPAIR_PREFIX = "run-forget-"  # REGISTRY/maintain/run-forget-<forget run id>/: a clean retrain's files
_ALL = 1 << 62  # draw_replay's sample size that means every row


class RepairRefused(RefitError):
    """The clean retrain cannot be done safely (a forgotten text in its data, no data, a tainted base)."""

    exit_code = 1


@dataclass
class Repair:
    """What a forget's clean retrain did: version ids and counts only (it goes into the forget's run)."""

    status: str = "not_needed"  # not_needed | promoted | kept | superseded | refused
    base: str | None = None
    rows: int = 0
    files: int = 0
    left_out: list[str] = field(default_factory=list)  # training files not used: "path: why"
    challenger: str | None = None
    ancestor: str | None = None
    promoted: str | None = None
    gate: list[str] = field(default_factory=list)
    golden: dict = field(default_factory=dict)  # {version id: golden accuracy}

    def record(self) -> dict:
        return dict(vars(self))


def close_abandoned(registry: Registry) -> list[int]:
    """Under the lock, a forget run still 'running' was killed (during its retrain): record it abandoned
    and drop its checkpoints (its data files stay, scrubbed by later forgets like any run folder)."""
    closed = []
    for run in registry.runs(FORGET_KIND):
        if run["status"] == "running":
            registry.finish_run(run["id"], "abandoned", {**run["details"], "note": "process died"})
            folder = registry.root.resolve() / "maintain" / f"{REPAIR_PREFIX}{run['id']:05d}"
            shutil.rmtree(folder / "finetune" / "checkpoints", ignore_errors=True)
            closed.append(run["id"])
    return closed


def lineage_rows(
    chain: list[RegisteredVersion], names: list[str], redacted: dict[str, tuple[str, int]], seed: int
) -> tuple[list[tuple[str, int]], int, list[str]]:
    """The union by text of the training files of `chain` (newest first: a text's newest label wins), each
    verified as replay verifies its source; returns (rows, files used, "path or version: why" left out)."""
    rows: dict[str, int] = {}
    used, left_out = 0, []
    for version in chain:
        meta = read_version(version.path, verify=False)
        if list(meta.get("labels") or []) != list(names):
            left_out.append(f"{version.id}: its labels {meta.get('labels')} are not the champion's {names}")
            continue
        try:
            path = replay_source(meta, redacted)
        except ReplayUnavailable as e:  # gone, changed since training, a hub dataset: says which (no text)
            left_out.append(f"{version.id}: {str(e).split(' Set ')[0]}")
            continue
        try:
            drawn = draw_replay(meta, path, _ALL, seed)
        except DataError:  # not quoted: a reader's message may quote a value of the file
            left_out.append(f"{version.id}: its training file {path} cannot be read as text and label rows")
            continue
        used += 1
        for text, label in drawn:
            rows.setdefault(text, label)
    return list(rows.items()), used, left_out


def repair_champion(
    registry: Registry,
    run_id: int,
    record: dict,
    *,
    lineage: Lineage,
    match: Match,
    base_model: str,
    inbox: InboxConfig,
    retrain: FinetuneConfig,
    gate_cfg: GateConfig,
    deploy: DeployConfig,
    min_accuracy: float | None,
    seed: int,
    log: Callable[[str], None] = print,
    out: Repair | None = None,
) -> Repair:
    """Retrain a clean challenger from `base_model` and promote it or the newest clean ancestor (see the
    module doc). The forget's run `run_id` is finished with `record` + {"retrain": ...} in the promote's
    transaction, or by the caller on any other outcome. Raises RepairRefused before training when unsafe.
    `out` (filled in as it goes) is what the caller records when this raises: the challenger it registered
    is then named in the failed run, and a rerun gates it instead of training another."""
    out = Repair() if out is None else out
    champion_id = registry.aliases().get("champion")
    if champion_id is None:
        log("retrain: not needed: the registry has no champion")
        return out
    if lineage.status.get(champion_id) not in (LEARNED, UNKNOWN):
        log(f"retrain: not needed: the champion {champion_id} did not learn from them")
        return out
    versions = {v.id: v for v in registry.list_versions()}
    champion = versions[champion_id]
    names = list(read_version(champion.path, verify=False).get("labels") or [])
    out.base = base_model
    _check_base(base_model, lineage, versions)
    out.ancestor = lineage.clean_ancestor(champion_id)
    log(
        f"retrain: from the loop's base model {base_model} (retrain.model), not from the champion "
        f"{champion_id}" + (f" nor its clean ancestor {out.ancestor}" if out.ancestor else "")
    )
    left = _left_by_killed(registry, versions, lineage, base_model)
    if left is not None:  # a killed forget trained and registered it, and was killed before its gate
        challenger = left
        exported = not deploy.formats or _exports_passed(challenger.path, deploy.formats)
        export_reasons = [] if exported else [f"export {', '.join(deploy.formats)}: not built or FAILED"]
        out.challenger = challenger.id
        log(
            f"retrain: reusing the clean challenger {challenger.id}, trained and registered by a forget run "
            "that was killed before its gate: not trained again"
        )
    else:
        challenger, exported, export_reasons = _train_clean(
            registry,
            run_id,
            out,
            champion_id,
            lineage.chain(champion_id),
            versions,
            names,
            match,
            base_model,
            inbox,
            retrain,
            deploy,
            seed,
            log,
        )
    # --- gate: never against the tainted champion --------------------------------------------------------
    fault_point("gate")
    golden = read_golden(inbox, names, retrain.privacy.store_texts)
    cl = correct_rows(challenger.path, golden, retrain.data.max_length) or []
    out.golden[challenger.id] = sum(cl) / len(cl) if cl else None
    if out.ancestor and (ancestor := _still_registered(registry, out.ancestor)) is None:
        # `refit registry remove` takes no maintenance lock: the ancestor went (or was damaged) meanwhile.
        # Before, the gate then read its missing folder and failed with a misleading "not a refit model
        # version"; it can no longer be promoted, so the challenger is gated as when there is none.
        log(
            f"retrain: the clean ancestor {out.ancestor} is no longer in the registry or fails its check "
            "(removed meanwhile?): gating as without one"
        )
        out.ancestor = None
    if out.ancestor:
        an = correct_rows(ancestor.path, golden, retrain.data.max_length) or []
        out.golden[out.ancestor] = sum(an) / len(an) if an else None
        verdict = gate(
            paired(an, cl), None, gate_cfg.golden_tolerance, gate_cfg.recent_margin, gate_cfg.recent_alpha
        )
        # the loop's gate words its reasons for a champion: here the other side is the clean ancestor
        out.gate = [
            f"vs the clean ancestor {out.ancestor}: {r.replace('the champion', 'the ancestor')}"
            for r in verdict.reasons
        ] + export_reasons
        target = challenger.id if verdict.passed and exported else out.ancestor
        log(f"retrain: gate between the clean ancestor and the challenger: {'; '.join(out.gate)}")
    else:
        acc = out.golden[challenger.id]
        floor = "none (policy.min_accuracy is not set)" if min_accuracy is None else f"{min_accuracy:g}"
        passed = acc is not None and (min_accuracy is None or acc >= min_accuracy) and exported
        out.gate = [
            f"no clean ancestor: golden set accuracy {acc if acc is None else round(acc, 4)} on {len(cl)} rows, "
            f"floor {floor}: {'passed' if passed else 'FAILED'}",
            *export_reasons,
        ]
        target = challenger.id if passed else None
        log(f"retrain: {'; '.join(out.gate)}")
    if target is None:
        out.status = "kept"
        log(
            f"retrain: NOT repaired: the champion {champion_id} still serves and still carries the forgotten "
            f"texts (no clean ancestor, and the clean challenger {challenger.id} failed the loop's floor). "
            f"Fix the loop config (retrain settings, policy.min_accuracy) and run this again, or promote a "
            f"clean version by hand: refit registry promote --version ID"
        )
        return out
    # --- promote: compare-and-swap against the tainted champion, finishing the forget's run ---------------
    out.status, out.promoted = "promoted", target
    how = "learned" if lineage.status[champion_id] == LEARNED else "may have learned"
    fault_point("promote")
    try:
        registry.promote(
            target,
            f"forget run {run_id}: {champion_id} {how} from forgotten requests; clean "
            f"{'challenger' if target == challenger.id else 'ancestor'} {target}",
            {"golden": out.golden.get(target)},
            expected_champion=champion_id,
            run=(run_id, "done", {**record, "retrain": out.record()}),
        )
    except Superseded as e:
        out.status, out.promoted = "superseded", None
        log(f"retrain: NOT promoted: {e} Run this forget again with the same ids.")
        return out
    fault_point("promoted")
    log(f"retrain: promoted {target} (was {champion_id}): the served model no longer carries the texts")
    # the tainted champion stays registered: withdrawn (no alias moves back to it) when it learned them
    tainted = [v for v in lineage.ids(LEARNED) + lineage.ids(UNKNOWN) if v in versions]
    log(
        f"retrain: NOT removed: {champion_id} is still registered (withdrawn if it learned them: rollback and "
        f"promote refuse it); remove each version that (may have) learned them ({', '.join(tainted)}) once no "
        f"alias points at it: refit registry remove --version ID --root {shlex.quote(str(registry.root))} --yes"
    )
    return out


def _train_clean(
    registry: Registry,
    run_id: int,
    out: Repair,
    champion_id: str,
    chain_ids: list[str],
    versions: dict[str, RegisteredVersion],
    names: list[str],
    match: Match,
    base_model: str,
    inbox: InboxConfig,
    retrain: FinetuneConfig,
    deploy: DeployConfig,
    seed: int,
    log: Callable[[str], None],
) -> tuple[RegisteredVersion, bool, list[str]]:
    """Steps 3-5 of the module doc: the checked union of the lineage's training files, then the cycle's
    own train, export gate and register. Returns (challenger, whether its exports passed, their reasons)."""
    # --- data: the union of the lineage's training files, checked for every forgotten text -------------
    chain = [versions[v] for v in chain_ids if v in versions]
    # an ancestor removed from the registry (`refit registry remove`, gc): its refit.json, so its training
    # file and fingerprint, went with it; named as left out (it used to be dropped in silence)
    gone = [
        f"{v}: not in the registry (removed): its training file cannot be found and verified"
        for v in chain_ids
        if v not in versions
    ]
    started = (read_version(chain[-1].path, verify=False).get("config") or {}).get("model")
    if started and started != base_model:
        log(
            f"retrain: note: the lineage's first version {chain[-1].id} was fine-tuned from {started}, not from "
            f"retrain.model {base_model}: set retrain.model in the loop config if that is the base you mean"
        )
    rows, out.files, left_out = lineage_rows(chain, names, redactions(registry.runs(FORGET_KIND)), seed)
    out.left_out = gone + left_out
    out.rows = len(rows)
    for line in out.left_out:
        log(f"retrain: training file left out: {line}")
    if not rows:
        raise RepairRefused(
            f"No training data for the clean retrain: none of the training files of {champion_id}'s lineage "
            "could be read and verified (listed above). The champion still carries the forgotten texts: "
            "promote a clean version by hand, or fine-tune one from the base model on your data."
        )
    tainted = sum(1 for text, _ in rows if match(text))
    if tainted:
        raise RepairRefused(
            f"Refusing to train: {tainted} row(s) of the clean retrain's training data (the training files of "
            f"{champion_id}'s lineage) still hold a forgotten text, e.g. your own training data, which a "
            "forget does not rewrite. Remove them from that file (and forget again), or promote a clean "
            f"version by hand. The champion {champion_id} still carries the texts."
        )
    log(
        f"retrain: training data: {len(rows)} row(s) from the training files of {out.files} version(s) on "
        f"{champion_id}'s lineage; checked: none holds a forgotten text"
    )
    # --- train, export, register: the cycle's own functions ------------------------------------------------
    work = registry.root.resolve() / "maintain" / f"{REPAIR_PREFIX}{run_id:05d}"

    def reference(trained: set[str], validation: list[str]) -> list[str]:
        held_out = [t for t in dict.fromkeys(validation) if t not in trained]  # never a training input
        rng = random.Random(seed + 2)
        return rng.sample(held_out, min(retrain.data.reference_size, len(held_out)))

    fault_point("retrain")
    version_dir = train_challenger(
        work,
        rows,
        names,
        model=base_model,
        parent=None,
        golden=inbox.golden,
        retrain=retrain,
        seed=seed,
        reference=reference,
    )
    fault_point("export")
    exported, export_reasons = True, []
    if deploy.formats:
        exported, _, export_reasons = export_and_gate(
            version_dir,
            list(deploy.formats),
            max_accuracy_drop=deploy.max_accuracy_drop,
            min_agreement=deploy.min_agreement,
        )
        log(f"retrain: export {', '.join(deploy.formats)}: {'passed' if exported else 'FAILED'}")
    fault_point("register")
    challenger = register_challenger(registry, version_dir, f"clean retrain of forget run {run_id}")
    out.challenger = challenger.id
    log(f"retrain: trained and registered the clean challenger {challenger.id}")
    return challenger, exported, export_reasons


def _left_by_killed(
    registry: Registry, versions: dict[str, RegisteredVersion], lineage: Lineage, base_model: str
) -> RegisteredVersion | None:
    """The newest registered clean challenger of a forget run killed (abandoned) or failed before its promote
    committed (trained from `base_model` into its run-forget-N folder, then registered), so a rerun gates it
    instead of training again; None when there is none."""
    killed = {  # a run that failed after registering it (an error in its gate or promote) left one too
        f"{REPAIR_PREFIX}{r['id']:05d}"
        for r in registry.runs(FORGET_KIND)
        if r["status"] in ("abandoned", "failed")
    }
    maintain_dir = registry.root.resolve() / "maintain"
    for vid in reversed(lineage.ids(CLEAN)):
        meta = read_version(versions[vid].path, verify=False)
        train = Path(((meta.get("config") or {}).get("data") or {}).get("train") or "")
        if (
            meta.get("parent") is None
            and (meta.get("config") or {}).get("model") == base_model
            and train.parent.parent.name in killed
            and train.parent.parent.parent == maintain_dir
        ):
            return versions[vid]
    return None


def _still_registered(registry: Registry, vid: str) -> RegisteredVersion | None:
    """`vid` as the registry has it now, verified; None when it is gone or fails its check."""
    try:
        return registry.get(vid)
    except RefitError:
        return None


def _exports_passed(version_dir: Path, formats: list[str]) -> bool:
    """Whether the version carries exports of every format in `formats`, all passed (refit.maintain.deploy
    installs exports only when every artefact passed, with their parity.json)."""
    parity = version_dir / "exports" / "parity.json"
    if not parity.is_file():
        return False
    records = json.loads(parity.read_text()).values()
    return all(any(r.get("format") == f and r.get("passed") for r in records) for f in formats)


def _check_base(base_model: str, lineage: Lineage, versions: dict[str, RegisteredVersion]) -> None:
    """A base that is a refit version, or a version's `model/` folder, or a copy of the weights of a
    registered version, must be one the forget calls clean.

    A version's `model/` folder is plain Hugging Face files (loadable with no refit installed), so a base
    pointed at it, or at a copy of it, warm-starts from that version's weights: before, only a folder
    holding refit.json itself was checked, and the "clean" challenger of such a base learned the texts."""
    folder = Path(base_model).expanduser()
    for at in (folder, folder.parent):
        if (at / "refit.json").is_file():
            _refuse_unless_clean(base_model, read_version(at, verify=False).get("version_id"), lineage)
            return
    weights = folder / WEIGHTS
    if not weights.is_file():
        return  # a hub id or a folder without our weights file: not one of ours
    sha = sha256_file(weights)
    for vid, version in versions.items():
        if version.weights_sha256 == sha:
            _refuse_unless_clean(base_model, vid, lineage)


def _refuse_unless_clean(base_model: str, vid: str | None, lineage: Lineage) -> None:
    if lineage.status.get(vid) != CLEAN:
        why = lineage.why.get(vid, "it is not in this registry, so what it learned cannot be judged")
        raise RepairRefused(
            f"The loop's retrain.model {base_model} is (the weights of) the version {vid}, which is not clean "
            f"({why}): a clean retrain must not start from it. Set retrain.model in the loop config to the "
            "pre-trained model the first champion was fine-tuned from."
        )
