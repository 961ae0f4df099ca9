"""refit maintain forget: make the maintenance loop forget served requests, by request id.

    refit maintain forget --ids deletion-requests.txt --registry.root registry   # inbox: registry/inbox
    refit maintain forget --ids ids.txt --registry.root registry --inbox production
    refit maintain forget --ids ids.txt --registry.root registry --retrain --loop maintain.yaml  # and repair

IDS is a text file with one request id per line (as `refit serve` returned them; blank lines and lines
starting with '#' are skipped). Under the maintenance lock (never during a cycle), it removes:
- from the inbox: every capture row of those ids (each file holding one rewritten without them, or deleted
  when none is left; refit.maintain.forget). Their late labels are then counted as "labelled requests whose
  capture was deleted or changed" and never trained on;
- from the loop's run folders (REGISTRY/maintain/run-N/data/train.jsonl and validation.jsonl, what replay
  and later gates read again): every row whose text is one of those requests' texts (read from their
  capture rows, or matched by their keyed hash in the inbox index when the capture is already gone). Rows
  carry no request id, so the same text from any source goes. The trained versions' refit.json still holds
  the old sha256 of these files: the forget's run in the registry (kind "forget") records each rewrite
  (sha256 and rows before and after) before the file is replaced, and replay accepts exactly that state.
Said: which registered versions learned from these texts (trained or validated on a run file that held
one, or warm-started from such a version; "unknown" when that cannot be checked, never "clean";
refit.maintain.lineage), and, when the champion is one, its newest clean ancestor with the `refit registry
promote` line that rolls back to it (or that none is left: retrain from the base model without them).
Not removed, and said: what a model learned from a text (its weights); texts in a registered version's drift reference (sealed; use
`--privacy.store_texts false` to keep none there): each such version is named and the exit code is 1;
capture files a running server is still writing (counted: run this again once they rotate); texts whose
capture file is already gone when the inbox index or its key is damaged (said, exit code 1); your own
training data and golden set; dropped inbox files (no request ids); copies outside the registry.

With --retrain (and --loop, the loop's maintain.yaml), the forget then repairs the model, still under the
lock, when the champion learned from the texts (refit.maintain.repair has the design): ONE clean challenger
trained from the loop's base model (retrain.model) on the union of the scrubbed training files of the
champion's lineage (checked first for every forgotten text: one found and nothing is trained), gated
against the champion's newest clean ancestor, or without one against policy.min_accuracy on the golden
set, never against the tainted champion; the winner is promoted. Exit code 1 when nothing clean could be
promoted: the champion then still carries the texts, and it says so. A rerun with the same ids after a
kill finishes the job once (a clean champion is left alone).
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from refit.config import load_yaml_file, parse_config_dict
from refit.errors import ConfigError, DataError, RefitError
from refit.maintain.forget import find_requests, remove_rows
from refit.maintain.index import request_digests
from refit.maintain.lineage import LEARNED, UNKNOWN, Lineage, judge_versions
from refit.maintain.lock import maintenance_lock, open_registry
from refit.maintain.repair import Repair, RepairRefused, close_abandoned, repair_champion
from refit.maintain.scrub import (
    FORGET_KIND,
    Match,
    apply_scrubs,
    discard,
    plan_scrubs,
    redactions,
    sealed_copies,
    trained_on,
)
from refit.recipes.maintain import Config as LoopConfig
from refit.registry import CHAMPION
from refit.settings import RegistryConfig


class ForgetBusy(RefitError):
    """A cycle holds the maintenance lock; exit code 75 (EX_TEMPFAIL): try again later."""

    exit_code = 75


@dataclass
class Config:
    """Remove the captured rows of the request ids listed in IDS, and their texts from the loop's run folders.

    Args:
        ids: Text file of request ids to forget, one a line.
        inbox: Inbox folder holding the capture files (default: REGISTRY/inbox, where `refit serve` captures).
        retrain: Then repair the model: when the champion learned from these texts, train ONE clean
            challenger from the loop's base model (the loop config's retrain.model) on the scrubbed
            training files of the champion's lineage, and promote it or the champion's newest clean
            ancestor, whichever the loop's gate prefers (never compared with the tainted champion); exit 1
            when neither passes (the champion then still carries the texts). Needs --loop.
        loop: The loop's config (the maintain.yaml its cycles run with), read by --retrain: retrain.model
            and settings, inbox.golden, policy.min_accuracy, gate, deploy, privacy and seed.
    """

    ids: str = ""
    inbox: str = ""
    retrain: bool = False
    loop: str = ""
    registry: RegistryConfig = field(default_factory=RegistryConfig)


def _read_loop(cfg: Config, registry_root: Path) -> LoopConfig | None:
    """The loop's config for --retrain, checked before any work (a bad one exits 2, nothing forgotten)."""
    if not cfg.retrain:
        if cfg.loop:
            raise ConfigError("--loop is read only with --retrain: add --retrain, or drop --loop.")
        return None
    if not cfg.loop:
        raise ConfigError(
            "--retrain needs the loop's config: --loop LOOP.yaml (the maintain.yaml its cycles run with), "
            "for the base model (retrain.model), the golden set and the gate."
        )
    loop = parse_config_dict(LoopConfig, load_yaml_file(cfg.loop) or {}, where=f"in --loop {cfg.loop}")
    if Path(loop.registry.root).resolve() != registry_root.resolve():
        raise ConfigError(
            f"--loop {cfg.loop} maintains the registry {Path(loop.registry.root).resolve()} (registry.root), "
            f"not {registry_root.resolve()} (--registry.root): give the config of this registry's loop."
        )
    if not loop.inbox.golden or not Path(loop.inbox.golden).is_file():
        raise DataError(
            f"--retrain gates on the loop's golden set: 'inbox.golden' in --loop {cfg.loop} is "
            f"{loop.inbox.golden!r}, not a file. Point it at the labelled file the loop's cycles gate on."
        )
    return loop


def _read_ids(path: str) -> set[str]:
    if not path:
        raise ConfigError("Give the request ids to forget: --ids FILE (one request id a line).")
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(
            f"Cannot read 'ids' file {path} ({e}): give a UTF-8 text file, one id a line."
        ) from None
    ids = {x.strip() for x in lines if x.strip() and not x.strip().startswith("#")}
    if not ids:
        raise DataError(f"The 'ids' file {path} lists no request id (one a line; '#' starts a comment).")
    return ids


def run(cfg: Config) -> int:
    # --- setup -------------------------------------------------------------------------------------
    ids = _read_ids(cfg.ids)
    registry = open_registry(cfg.registry.root, cfg.registry.db)
    loop = _read_loop(cfg, registry.root)
    folder = Path(cfg.inbox) if cfg.inbox else registry.root / "inbox"
    if not folder.is_dir():
        raise DataError(
            f"Inbox folder not found: 'inbox' is {folder}. Point it at the folder the cycles read "
            "(their inbox.windows)."
        )

    def busy(lock_file: Path) -> ForgetBusy:
        return ForgetBusy(f"A maintenance cycle holds {lock_file}; forget again once it has finished.")

    # --- run ----------------------------------------------------------------------------------------
    maintain_dir = registry.root.resolve() / "maintain"
    with maintenance_lock(registry, busy, wait_s=60):
        for old in close_abandoned(registry):  # a forget killed during its retrain
            print(f"forget run {old} was killed before it finished: recorded as abandoned")
        done = find_requests(folder, ids)  # reads only: nothing is written before the record below
        key, digests, index_problem = request_digests(maintain_dir, ids)
        match = Match(set().union(*done.texts.values()), key, set().union(*digests.values()))
        scrubs, unreadable = plan_scrubs(maintain_dir, match)
        used = trained_on(scrubs, done.texts, key, digests)
        registered = registry.list_versions()
        lineage = judge_versions(
            registered,
            maintain_dir,
            [s.path for s in scrubs],
            unreadable,
            redactions(registry.runs(FORGET_KIND)),
            incomplete=index_problem and "the inbox index could not be read: not every text was looked for",
        )
        champion = registry.aliases().get(CHAMPION)
        leftovers = [(str(p.parent), p.parent) for p in maintain_dir.glob("run-*/finetune/**/reference")]
        sealed = sealed_copies([*((v.id, v.path) for v in registered), *leftovers], match)
        record = {
            "ids": len(ids),
            "found": len(done.found),
            "trained_on": len(used),
            "capture_rows": done.rows,
            "capture_files": {"rewritten": done.rewritten, "deleted": done.deleted},
            "redacted": [x.record() for x in scrubs],
            "not_removed": sealed,
            "versions": lineage.record(champion),
            "in_progress": done.in_progress,
            "index_problem": index_problem,
        }
        try:
            # committed before any file is replaced, with the versions that learned the texts withdrawn: once
            # the files are rewritten, a rerun could no longer tell that they did
            run_id = registry.start_run(FORGET_KIND, record, withdraw=lineage.ids(LEARNED))
        except BaseException:
            discard(scrubs)
            raise
        apply_scrubs(scrubs)
        remove_rows(folder, done)
        if loop is None:
            registry.finish_run(run_id, "done", record)
        # --- report (and the repair, still under the lock) ------------------------------------------
        _say_removed(done, ids, folder, scrubs, unreadable, used, run_id)
        _say_versions(lineage, champion, registry.root, cfg.registry.db and registry.db_path, run_id)
        _say_not_removed(sealed, index_problem, _where(registry.root, cfg.registry.db and registry.db_path))
        repaired = (
            True if loop is None else _repair(registry, run_id, record, lineage, match, loop, index_problem)
        )
    return 1 if sealed or index_problem or not repaired else 0


def _repair(
    registry, run_id: int, record: dict, lineage: Lineage, match: Match, loop: LoopConfig, index_problem
) -> bool:
    """--retrain: the clean challenger and what serves (refit.maintain.repair), one line a step; whether
    the champion no longer carries the texts. The forget's run is finished here on every outcome the
    promotion's transaction did not finish."""
    retrain = dataclasses.replace(
        loop.retrain,
        privacy=loop.privacy,
        tracking=dataclasses.replace(loop.retrain.tracking, wandb=False),
    )
    outcome = Repair()
    try:
        if index_problem:
            raise RepairRefused(
                "Refusing to retrain: the inbox index could not be read, so the training data cannot be "
                "checked for every forgotten text. Restore the index and forget again with --retrain."
            )
        outcome = repair_champion(
            registry,
            run_id,
            record,
            lineage=lineage,
            match=match,
            base_model=loop.retrain.model,
            inbox=loop.inbox,
            retrain=retrain,
            gate_cfg=loop.gate,
            deploy=loop.deploy,
            min_accuracy=loop.policy.min_accuracy,
            seed=loop.seed,
            out=outcome,  # filled in as it goes: a failure's run names the challenger it registered
        )
    except RepairRefused as e:
        outcome.status = "refused"
        print(f"retrain: REFUSED: {e}")
    except Exception as e:
        registry.finish_run(
            run_id, "failed", {**record, "retrain": {**outcome.record(), "error": type(e).__name__}}
        )
        raise
    if outcome.status != "promoted":
        registry.finish_run(run_id, "done", {**record, "retrain": outcome.record()})
    return outcome.status in ("promoted", "not_needed")


def _say_removed(
    done, ids: set[str], folder: Path, scrubs, unreadable: list[str], used: set[str], run_id: int
) -> None:
    """What the forget removed from the inbox and the run folders, and that weights keep what they learned."""
    print(
        f"forgot {len(done.found)} of {len(ids)} request id(s): {done.rows} capture row(s) removed; "
        f"{len(done.rewritten)} file(s) rewritten, {len(done.deleted)} deleted"
    )
    if len(done.found) < len(ids):
        print(f"  {len(ids) - len(done.found)} id(s) are in no capture file of {folder}")
    removed = sum(x.rows_before - x.rows_after for x in scrubs)
    if used:
        print(
            f"  {len(used)} of the {len(ids)} request(s) had already been used by earlier cycles: their texts "
            f"were in the loop's training/validation data"
        )
    else:
        print(
            "  none of them had been used by a cycle: no run folder's training/validation data held their texts"
        )
    print(
        f"  run folders: {removed} training/validation row(s) with those texts removed from {len(scrubs)} "
        f"file(s) (recorded in registry run {run_id}, which replay checks them against)"
    )
    for line in done.unreadable:
        print(f"  not a readable capture file, left alone (cycles quarantine it): {line}")
    for line in unreadable:
        print(f"  not a readable run file, left alone: {line}")
    if done.in_progress:
        print(
            f"  {done.in_progress} capture file(s) are still being written by a server: run this again later"
        )
    if used:
        print(
            f"  NOT removed: what models trained on these {len(used)} request(s) learned from them: their "
            "weights keep it (the versions, and what to roll back to, are named below)"
        )
    else:
        print("  NOT removed: what a model learned from these texts if your own training data held them")


def _where(root: Path, db: Path | None) -> str:
    """The registry options of a printed command line."""
    return f"--root {shlex.quote(str(root))}" + (f" --db {shlex.quote(str(db))}" if db else "")


def _say_not_removed(sealed: list[str], index_problem: str | None, where: str) -> None:
    for line in sealed:
        print(f"  NOT removed (sealed into the version): {line}")
    if sealed:  # a version is immutable (its manifest is verified on every load): it goes whole, or stays
        print(
            "  to remove them, remove each such version once no alias points at it: `refit registry remove "
            f"--version ID {where} --yes` (a champion: promote a clean version first, or forget with "
            "--retrain)"
        )
    if index_problem:  # fail closed: the run folders may still hold texts of capture files already deleted
        print(
            f"  NOT checked: {index_problem}; texts of these requests whose capture file is already deleted "
            "could not be looked for in the run folders (restore the index from a backup and forget again)"
        )


def _say_versions(lineage: Lineage, champion: str | None, root: Path, db: Path | None, run_id: int) -> None:
    """Which registered versions learned from the forgotten texts, and what to serve instead of the champion."""
    learned, unknown = lineage.ids(LEARNED), lineage.ids(UNKNOWN)

    def named(ids: list[str]) -> str:
        return ", ".join(f"{v} (champion)" if v == champion else v for v in ids)

    if learned:
        print(f"  versions that learned from them (their weights keep it): {named(learned)}")
        print(
            f"  withdrawn by forget run {run_id}: no alias can be moved to {'it' if len(learned) == 1 else 'them'} "
            "again (promote and rollback refuse; an alias already on one stays until it moves)"
        )
    elif unknown:
        print("  no registered version is known to have learned from them")
    else:
        print("  no registered version learned from them")
    if unknown:
        print(f"  versions that may have learned from them (unknown, not called clean): {named(unknown)}")
    for vid in [*learned, *unknown]:
        print(f"    {vid}: {lineage.why[vid]}")
    if champion not in (*learned, *unknown):
        if champion:
            print(f"  the champion {champion} did not learn from them")
        return
    target = lineage.clean_ancestor(champion)
    if target is None:
        print(
            f"  no clean version on the champion {champion}'s lineage to roll back to: retrain from the base "
            "model without them (--retrain --loop LOOP.yaml does it)"
        )
        return
    where = _where(root, db)
    how = "learned" if champion in learned else "may have learned"
    reason = shlex.quote(f"forget run {run_id}: {champion} {how} from forgotten requests")
    print(
        f"  newest clean ancestor of the champion, to roll back to: {target}\n"
        f"    refit registry promote --version {target} {where} --reason {reason}"
    )
