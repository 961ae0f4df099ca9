"""refit maintain: notice decay, retrain, and promote only a challenger that is better.

    refit maintain init --dir demo-loop                                # a demo loop: registry, champion, inbox
    refit maintain --config demo-loop/maintain.yaml --once             # one cycle (cron, Airflow, k8s)
    refit maintain --config configs/maintain/demo.yaml --every 6h      # foreground loop
    refit maintain --config configs/maintain/demo.yaml --cron "0 */6 * * *"

A cycle reads the files that arrived in inbox.windows since the last finished cycle, tests them for drift
against the champion's reference, measures the champion on any labels that came with them, and, when a
policy says so (drift, an accuracy floor, the champion's age, or a plain schedule), retrains from the
champion on the new labelled rows plus a replay of its old training data. The challenger is exported in
deploy.formats (default onnx-int8) and replaces the champion only if its artefacts pass the parity and
accuracy gates and it passes the gate on the golden set and the held-out recent rows; the move is a
compare-and-swap against the champion the cycle started from (a manual promote meanwhile wins and the
cycle is recorded as `superseded`). Everything is recorded in the registry (runs, the audit log) and in
REGISTRY/maintain/run-N/{cycle.json,report.html}.

The inbox holds files dropped by hand (JSONL/CSV/Parquet with a text and an optional label column) and what
`refit serve` captures (capture-*.parquet) with late labels (feedback-*.parquet, joined by request id),
which it writes to REGISTRY/inbox: `--inbox.windows registry/inbox` reads them (the demo config reads
production/).
A file that cannot be used is quarantined (named with its reason in the run and report), not retried.

Reference refresh policy: a retrained challenger's drift reference is built from the cycle's held-out
recent inputs (new inputs that were not training rows), filled up to retrain.data.reference_size with the
retrain's validation rows (new labelled rows and replay) only when there are too few. So once a challenger
trained on a shifted domain is promoted, that domain is what "no drift" means, and the accepted shift stops
triggering a retrain every cycle.

Replay comes from the champion's own training data (the bundled demo set, or a file whose absolute path
and sha256 are in refit.json); when it is configured but cannot be found or verified the cycle fails
before any work (inbox.replay_missing: warn retrains without it, with a warning in the run and report).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from refit.drift import DETECTORS
from refit.errors import ConfigError, RefitError
from refit.export import TARGETS
from refit.maintain import CycleReport, check_cron, parse_every, run_cycle, run_forever
from refit.maintain.lock import maintenance_lock, open_registry
from refit.registry.mirror import mirror_alias
from refit.settings import (
    DeployConfig,
    FinetuneConfig,
    GateConfig,
    InboxConfig,
    PolicyConfig,
    PrivacyConfig,
    RegistryConfig,
    TrackingConfig,
)
from refit.tracking import log_summary_run, resolve_wandb_mode


class MaintainBusy(RefitError):
    """Another cycle is running; exit code 75 (EX_TEMPFAIL) tells a scheduler to try again later."""

    exit_code = 75


# `refit maintain init --dir DIR`: lay out a runnable demo loop (registry, champion, inbox, golden set, config);
# `refit maintain forget --ids FILE`: remove requests' captured rows from the inbox (the loop forgets them).
SUBCOMMANDS = {"init": "refit.recipes.maintain_init", "forget": "refit.recipes.maintain_forget"}


@dataclass
class Config:
    """Maintenance cycles over a registry's champion.

    Args:
        tracking: W&B for the cycles (one run per cycle, promotions mirrored as artifact aliases).
        once: Run one cycle and exit (for external schedulers).
        deploy: Export formats built and gated before a challenger may be promoted.
        every: Run a cycle now and then every interval, e.g. 30m, 6h, 1d; at least 1m (foreground; stops on SIGTERM).
        cron: Run cycles on a cron expression, e.g. "0 */6 * * *" (foreground; stops on SIGTERM).
        seed: Seed for sampling, splits and permutations.
        privacy: store_texts false keeps input texts out of what the cycle writes (passed to the retrain;
            quarantine reasons then name where a file was refused, not the values they would quote),
            except the labelled rows it trains and validates on (its run folder's data/).
    """

    registry: RegistryConfig = field(default_factory=RegistryConfig)
    inbox: InboxConfig = field(default_factory=InboxConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    retrain: FinetuneConfig = field(default_factory=FinetuneConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    once: bool = False
    every: str | None = None
    cron: str | None = None
    seed: int = 0
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    def __post_init__(self) -> None:
        # Checked against the tables at parse time, so a registered drift test or export target is allowed here.
        unknown = [t for t in self.policy.tests if t not in DETECTORS]
        if unknown:
            raise ValueError(
                f"Unknown drift test(s) {unknown} in 'policy.tests'; allowed: {', '.join(DETECTORS)}."
            )
        unknown = [f for f in self.deploy.formats if f not in TARGETS or TARGETS[f].file is None]
        if unknown:
            runnable = [n for n, t in TARGETS.items() if t.file]
            raise ValueError(
                f"Unknown or non-servable format(s) {unknown} in 'deploy.formats'; allowed: "
                f"{', '.join(runnable)} ([] = none)."
            )


def run(cfg: Config) -> int:
    # --- setup -------------------------------------------------------------------------------------
    if sum(bool(x) for x in (cfg.once, cfg.every, cfg.cron)) != 1:
        raise ConfigError("Give exactly one of --once, --every INTERVAL or --cron EXPRESSION.")
    every_s = parse_every(cfg.every) if cfg.every else None  # a bad schedule is refused before any cycle
    if cfg.cron:
        check_cron(cfg.cron)
    # A cycle needs a registry with a champion: a misspelt --registry.root is refused, never created empty.
    registry = open_registry(cfg.registry.root, cfg.registry.db)
    if "champion" not in registry.aliases():
        raise ConfigError(
            f"The registry {registry.root} has no champion yet: `refit registry register --version DIR` "
            "then `refit registry promote --version ID`."
        )

    def busy(lock_file: Path) -> MaintainBusy:
        return MaintainBusy(f"Another maintenance cycle holds {lock_file}; not starting a second one.")

    def one_cycle() -> str:
        # --once fails fast when another cycle holds the lock; a loop waits for it to finish.
        with maintenance_lock(registry, busy, wait_s=0 if cfg.once else math.inf):
            # One W&B run per cycle (the summary run below): the retrain keeps its curves in CSV logs only.
            retrain = dataclasses.replace(
                cfg.retrain,
                privacy=cfg.privacy,
                tracking=dataclasses.replace(cfg.retrain.tracking, wandb=False),
            )
            report = run_cycle(
                registry,
                inbox=cfg.inbox,
                policy=cfg.policy,
                retrain=retrain,
                gate_cfg=cfg.gate,
                deploy=cfg.deploy,
                seed=cfg.seed,
            )
        mode = resolve_wandb_mode(cfg.tracking.wandb, cfg.tracking.mode)
        details = {k: v for k, v in vars(report).items() if k != "files"}
        mirror = None
        if report.status == "promoted":  # the promotion is mirrored into the cycle's own run
            new = registry.get("champion")

            def mirror(run) -> None:
                mirror_alias(
                    registry.root,
                    new.path,
                    new.id,
                    "champion",
                    "; ".join(report.reasons),
                    mode,
                    cfg.tracking.project,
                    run=run,
                )

        log_summary_run(
            "maintain",
            f"cycle-{report.run_id}",
            details,
            registry.root,
            mode,
            cfg.tracking.project,
            Path(report.work_dir) / "report.html",
            also=mirror,
        )
        # --- report --------------------------------------------------------------------------------
        print(
            f"cycle {report.run_id}: {report.status}; {_champion_line(report, registry.aliases()['champion'])}"
        )
        for line in report.reasons + report.gate:
            print(f"  - {line}")
        for q in report.quarantined:
            print(f"  quarantined {q['file']}: {q['reason']}")
        for note in report.notes:
            print(f"  note: {note}")
        if report.ab:
            for model, scores in report.ab.items():
                print(
                    f"  {model:<10} "
                    + "  ".join(f"{k} acc {v:.4f}" for k, v in scores.items() if v is not None)
                )
        if report.error:
            print(f"  error: {report.error}")
        print(f"  report: {Path(report.work_dir) / 'report.html'}")
        return report.status

    # --- run ---------------------------------------------------------------------------------------
    if cfg.once:
        return 1 if one_cycle() == "failed" else 0
    return run_forever(one_cycle, every_s, cfg.cron)


def _champion_line(report: CycleReport, champion_now: str) -> str:
    """Who serves after the cycle, and what became of its challenger: "champion B (was A)" after a
    promotion, "champion A; challenger B not promoted" otherwise (it printed the same id twice)."""
    if report.status == "promoted" and report.challenger == champion_now:
        return f"champion {champion_now} (was {report.champion})"
    if report.challenger:
        return f"champion {champion_now}; challenger {report.challenger} not promoted"
    return f"champion {champion_now}"
