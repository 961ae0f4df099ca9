"""refit drift: is production text still like what the model was validated on?

    refit drift --version runs/demo/version --data production/ --window 200
    refit drift --version runs/demo/version --data events.jsonl --by_time day --tests [mmd,ks,bbsd]
    refit drift --version runs/demo/version --refresh_reference --reference_data holdout.jsonl
    refit drift --version champion --registry.root registry --data registry/inbox

Each window of inputs is embedded as the version's reference was (by the version's base model for new
versions, or the version's own layers; --encoder tries another for one check), the version itself gives
the probabilities (BBSD, estimates), and both are tested against the reference (reference/ in the version). Writes drift.json and report.html to --output_dir
(default runs/drift/<version id>-<time> under the current folder: never inside the version, which is
immutable once written). Exit code: 0 no window drifted, 3 at least one drifted, 2 a mistake in the input
or nothing could be tested (an empty file, a missing text column, every window under --min_window).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveInt

from refit.config import config_to_dict
from refit.data import read_table
from refit.drift import DETECTORS
from refit.drift.check import run_window
from refit.drift.embed import VersionEncoder
from refit.drift.html import render_report
from refit.drift.reference import (
    DEFAULT_LAYER,
    DEFAULT_POOLING,
    REFERENCE_DIRNAME,
    Reference,
    fit_states,
    load_reference,
)
from refit.drift.windows import Period, Window, check_window_labels, read_windows
from refit.errors import ConfigError, DataError
from refit.estimate import PRIMARY, load_calibration, twoview_unavailable
from refit.export.lock import export_lock
from refit.io import atomic_write_text, write_json
from refit.models import Pooling, editing_version, read_version
from refit.registry import registry_holding, version_folder
from refit.settings import PrivacyConfig, RegistryConfig, TrackingConfig
from refit.tracking import log_drift_run, resolve_wandb_mode

DRIFT_EXIT = 3
VERSION_ITSELF = "version"  # --encoder version (with --refresh_reference): the version's own layers
# The classifier test trains on half of reference + window, stratified: smaller windows cannot be split.
CLASSIFIER_MIN_WINDOW = 10


@dataclass
class Config:
    """Drift check of production windows against a version's reference.

    Args:
        version: The model version whose reference is the baseline: its folder, or an id or alias
            (champion, challenger, ...) of the registry at registry.root.
        data: Production inputs: a JSONL/CSV/Parquet file or a folder of them (one window per file).
        window: Cut the inputs into windows of this many rows (0 = one window per file).
        by_time: Instead, one window per 'hour', 'day', 'week' or 'month' of `time_column`.
        time_column: Column with ISO 8601 times, for by_time.
        text_column: Column holding the text.
        label_column: Column with labels, where they have arrived (accuracy per window is then reported).
        tests: Which tests to run: mmd, ks, classifier, bbsd.
        alpha: Family-wise false-alarm rate per window (split evenly across the tests: Bonferroni).
        permutations: Permutations for the MMD test.
        min_window: Windows smaller than this are skipped, with the reason in the report.
        encoder: Embed with this fixed encoder for this check (the reference's texts are re-embedded): a
            pre-trained model ('minilm', a hub id or a local Hugging Face folder; its mean-pooled last
            layer) or another version (embedded like the reference). With refresh_reference it is stored
            in the reference instead ('version': the version's own hidden layers). A new version's
            reference is embedded by its base model already (data.reference_encoder). BBSD and the
            accuracy estimates always use the version's own outputs.
        refresh_reference: Re-embed the reference (in place: the version is re-sealed) with the encoder it
            records, as that encoder loads now, or with --encoder; refit the detectors; then stop unless
            data is given too.
        reference_data: With refresh_reference: a file of held-out inputs to build the reference from
            (default: the reference's own texts).
        reference_size: Inputs sampled from reference_data for a refreshed reference.
        pooling: With refresh_reference: pool the refreshed reference 'mean' or 'cls' (default: as the
            reference was made; a new version's default is in the README's drift section).
        layers: With refresh_reference: the hidden layer(s) the refreshed reference is embedded from,
            pooled one by one and concatenated (0 = the embedding layer, -1 = the last; default: as the
            reference was made). Windows are then embedded the same way, with no flag.
        output_dir: Where drift.json and report.html go (default runs/drift/<version id>-<time>).
        seed: Seed for permutations and sampling.
        registry: Where an id or alias given as version is looked up (root default ./registry, as
            `refit registry` uses; db default ROOT/registry.db).
        tracking: W&B run of the check (offline by default).
        privacy: store_texts false keeps only sha256 hashes of inputs in drift.json, the report and W&B.
    """

    version: str | None = None
    data: str | None = None
    window: NonNegativeInt = 0
    by_time: Period | None = None
    time_column: str = "timestamp"
    text_column: str = "text"
    label_column: str | None = "label"
    # A label-blind test on the reference's embedding plus BBSD on the model's outputs, alpha / 2 each:
    # the pair with the most power on subtle shifts in scripts/results/drift_power.md (ks added nothing).
    tests: list[str] = field(default_factory=lambda: ["mmd", "bbsd"])
    alpha: OpenUnitInterval = 0.05
    permutations: PositiveInt = 500
    min_window: PositiveInt = 20
    encoder: str | None = None
    refresh_reference: bool = False
    reference_data: str | None = None
    reference_size: PositiveInt = 512
    pooling: Pooling | None = None
    layers: list[int] | None = None
    output_dir: str | None = None
    seed: int = 0
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    def __post_init__(self) -> None:
        unknown = [t for t in self.tests if t not in DETECTORS]
        if unknown:
            raise ValueError(f"Unknown drift test(s) {unknown} in 'tests'; allowed: {', '.join(DETECTORS)}.")
        if not self.tests:
            raise ValueError(f"'tests' is empty: give at least one of {', '.join(DETECTORS)}.")
        if "classifier" in self.tests and self.min_window < CLASSIFIER_MIN_WINDOW:
            raise ValueError(
                f"'min_window' is {self.min_window}, but the classifier test needs windows of at least "
                f"{CLASSIFIER_MIN_WINDOW} inputs (it trains on half of each): raise --min_window or drop classifier "
                "from 'tests'."
            )
        if self.window and self.by_time:
            raise ValueError("Give either 'window' or 'by_time', not both.")
        if (self.pooling is not None or self.layers is not None) and not self.refresh_reference:
            raise ValueError(
                "'pooling' and 'layers' choose how a refreshed reference is embedded: add "
                "--refresh_reference (windows always follow the reference's own choice)."
            )
        if self.layers is not None and not self.layers:
            raise ValueError("'layers' is empty: give at least one hidden layer index, e.g. [-1].")


def _refresh_reference(cfg: Config, encoder: VersionEncoder, version: Path) -> None:
    """Re-embed held-out inputs with the reference's encoder and store them, with refitted detector state."""
    if cfg.reference_data:
        texts, _ = read_table(cfg.reference_data, cfg.text_column, None)
        rng = random.Random(cfg.seed)
        texts = [texts[i] for i in sorted(rng.sample(range(len(texts)), min(cfg.reference_size, len(texts))))]
    else:
        texts = load_reference(version, finite=False).texts
        if not texts:
            raise ConfigError(
                f"{version}/reference has no texts (or only their hashes, privacy.store_texts false): "
                "pass --reference_data FILE."
            )
    encoded = encoder.encode(texts)
    meta = {
        "split": cfg.reference_data or "previous reference texts",
        **encoder.how(),
        "refreshed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    reference = Reference(encoded.embeddings, encoded.probs, texts, meta, store_texts=cfg.privacy.store_texts)
    # a whole-version rewrite (re-sealed, so later loads verify it) copies exports/ too: under the export
    # lock, or an export swapping exports/ meanwhile is lost, or the copy is sealed without any exports/
    with export_lock(version, wait_s=600), editing_version(version) as tmp:
        fit_states(reference, cfg.seed).save(tmp / "reference")
    print(
        f"Reference refreshed: {len(texts)} inputs embedded, detector state refitted in {version / 'reference'}"
    )


def _require_testable(windows: list[Window], cfg: Config) -> None:
    """Refuse to report "no drift" when nothing was tested: every window empty, unreadable or too small."""
    if any(not w.skipped for w in windows):
        return
    reasons = "; ".join(f"{w.name} ({w.source}): {w.skipped.rstrip('.')}" for w in windows[:5])
    raise DataError(
        f"Nothing to test in --data {cfg.data}: every window was skipped, so no drift decision can be made. "
        f"{reasons}{' ...' if len(windows) > 5 else ''}. Check the file(s) and --text_column "
        f"('{cfg.text_column}'), or lower --min_window (now {cfg.min_window})."
    )


def _drop_texts(results: list[dict]) -> None:
    """privacy.store_texts false: the inputs a report shows are named by their row in the window only (a
    sha256 was shown before: a short text's is reversed by guessing)."""
    for w in results:
        for item in w.get("most_unlike") or []:
            item.pop("text", None)


# The printed interval is read as "the accuracy is in here"; it covers the window's sampling only. Measured
# (scripts/results/estimate.md): DoC off by 15 points on a domain where its interval covered no window,
# and a near-chance model on a label-shifted domain printed [0.445, 0.575] where labels showed 0.21-0.28.
ESTIMATE_CAVEAT = (
    "est.acc [low, high]: 95% for the window's sampling only, not for the estimator's own error under a "
    "shift (several points on most domains, 15 on one: scripts/results/estimate.md); labels decide."
)


def _accuracy_text(w: dict) -> str:
    """'  est.acc=0.84 [0.78, 0.90] (doc)  acc=0.86' for the printed table: estimate beside the tests."""
    out = ""
    if w.get("estimate"):
        e = w["estimate"][PRIMARY]
        out += f"  est.acc={e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}] ({PRIMARY})"
    if w.get("accuracy") is not None:
        out += f"  acc={w['accuracy']:.3f}"
    return out


def run(cfg: Config) -> int:
    # --- setup -------------------------------------------------------------------------------------
    if not cfg.version:
        raise ConfigError(
            "refit drift needs --version: a model version folder (runs/demo/version after the quickstart), "
            "or an id or alias of a registry (--version champion --registry.root registry)."
        )
    version, registered = version_folder(cfg.version, cfg.registry.root, cfg.registry.db)
    if registered:
        print(f"--version {cfg.version}: {version}")
    meta = read_version(version)
    # before any data is read: nothing else of this run could change the answer
    if cfg.refresh_reference and (root := registry_holding(version)) is not None:
        raise ConfigError(
            f"--refresh_reference rewrites the version's reference in place, but --version {cfg.version} "
            f"({version}) is registered in the registry {root}: its files are pinned at registration, so "
            "the registry would refuse it from then on (the champion too, in serve and maintain). To check "
            f"against a refreshed reference, refresh a copy outside the registry: cp -r {version} "
            "my-copy, then refit drift --version my-copy --refresh_reference ... (the copy keeps its "
            "version id, so it cannot be registered beside the original; a retrain by refit maintain "
            "gets a new version with a new reference). A one-off check with another encoder needs no "
            "refresh: --encoder MODEL."
        )
    if not cfg.data and not cfg.refresh_reference:
        raise ConfigError(
            "refit drift needs --data: production inputs, a JSONL/CSV/Parquet file or a folder of them "
            "(--data refit-demo checks the bundled demo windows; a registry's captures are in REGISTRY/inbox)."
        )
    windows = (
        read_windows(
            cfg.data,
            cfg.text_column,
            cfg.label_column,
            cfg.window,
            cfg.by_time,
            cfg.time_column,
            cfg.min_window,
        )
        if cfg.data
        else []
    )
    if cfg.data:
        _require_testable(windows, cfg)
        check_window_labels(windows, meta.get("labels") or [])  # before any window is embedded
    if cfg.refresh_reference:
        if cfg.reference_data and not (version / REFERENCE_DIRNAME).exists():
            # a version trained with data.reference_size 0 has none: its first one is embedded as a version's
            # own reference is by default (before, this refused, advising the very command that was run)
            trained = (meta.get("config") or {}).get("data", {}).get("max_length") or 128
            how = {"layer": DEFAULT_LAYER, "pooling": DEFAULT_POOLING, "max_length": trained}
        else:
            how = dict(load_reference(version, finite=False).meta)  # replaced: its NaNs may be why
        how.pop("encoder_sha256", None)  # re-embedding records the encoder's weights as they load now
        if cfg.encoder:  # stored in the refreshed reference: "version" is the version's own layers
            how["encoder"] = None if cfg.encoder == VERSION_ITSELF else cfg.encoder
            if how["encoder"] is None:
                how["layer"], how["pooling"] = DEFAULT_LAYER, DEFAULT_POOLING
        if (cfg.pooling is not None or cfg.layers is not None) and how.get("encoder"):
            raise ConfigError(
                f"--pooling and --layers choose the version's own hidden layers, but this reference is "
                f"embedded by the fixed encoder '{how['encoder']}': add --encoder version to use them."
            )
        if cfg.pooling is not None:
            how["pooling"] = cfg.pooling
        if cfg.layers is not None:
            how["layer"] = cfg.layers if len(cfg.layers) > 1 else cfg.layers[0]
        _refresh_reference(cfg, VersionEncoder.like_reference(version, how), version)
        if not cfg.data:
            return 0
    override = None if cfg.refresh_reference else cfg.encoder  # a refreshed reference already has it
    if override == VERSION_ITSELF:
        raise ConfigError(
            "--encoder version re-embeds the stored reference with the version's own layers: add "
            "--refresh_reference (a one-off check with another encoder takes a model or version)."
        )
    reference = load_reference(version)
    encoder = VersionEncoder.like_reference(version, reference.meta, encoder=override)
    calibration = load_calibration(version)  # the probabilities are the version's, --encoder or not
    if override:  # a fixed encoder: the reference must be embedded by it too, and its state fitted anew
        if not reference.texts:
            raise ConfigError(
                f"--encoder re-embeds the reference texts, but {version}/reference holds none (or "
                "only their hashes): refresh it with --refresh_reference --reference_data FILE."
            )
        encoded = encoder.encode(reference.texts)
        how = {**reference.meta, **encoder.how()}
        reference = Reference(encoded.embeddings, encoded.probs, reference.texts, how)
    # Never inside the version: it is immutable once written (the registry copies and verifies it whole).
    out = Path(
        cfg.output_dir or Path("runs") / "drift" / f"{meta['version_id']}-{datetime.now():%Y%m%d-%H%M%S}"
    )
    inside = [
        p for p in (out.resolve(), *out.resolve().parents) if registry_holding(p) or p == version.resolve()
    ]
    if inside:  # an extra file in a version makes every later load refuse it; gc removes unregistered folders
        raise ConfigError(
            f"--output_dir {out} is inside {inside[-1]}, a model version or a registry's versions/ folder: a "
            "version stays as it was written (its manifest lists every file; an extra one makes every load "
            "refuse it) and gc removes what is not a version. Choose a folder outside it."
        )

    # --- run ---------------------------------------------------------------------------------------
    results = [
        run_window(
            w,
            reference,
            encoder,
            meta.get("labels", []),
            cfg.tests,
            cfg.alpha,
            cfg.permutations,
            cfg.seed,
            calibration,
        )
        for w in windows
    ]
    if not cfg.privacy.store_texts:
        _drop_texts(results)

    # --- report ------------------------------------------------------------------------------------
    from refit.drift.explain import class_shares, pca_2d

    ref_points, _ = pca_2d(reference.embeddings, seed=cfg.seed)
    twoview_missing = twoview_unavailable(calibration, encoder.encoder_sha256)
    report = {
        "version": {"id": meta["version_id"], "path": str(version.resolve())},
        "encoder": str(override or reference.meta.get("encoder") or version),
        "config": config_to_dict(cfg),
        "tests": cfg.tests,
        "alpha": cfg.alpha,
        "labels": meta.get("labels", []),
        "reference": {
            "size": len(reference.embeddings),
            "meta": reference.meta,
            "class_shares": class_shares(reference.probs) if reference.probs is not None else [],
        },
        "reference_projection": ref_points,
        "windows": results,
        "drift": any(w["drift"] for w in results),
        "calibration": calibration.metrics() if calibration is not None else None,
        # estimators left out of every window's estimates, each with why (not a silent absence)
        "unavailable_estimates": {"twoview": twoview_missing} if twoview_missing else {},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(out / "drift.json", report)
    atomic_write_text(out / "report.html", render_report(report))
    log_drift_run(
        report, out, resolve_wandb_mode(cfg.tracking.wandb, cfg.tracking.mode), cfg.tracking.project
    )
    for w in results:
        status = f"skipped ({w['skipped']})" if w["skipped"] else ("DRIFT" if w["drift"] else "no drift")
        # "mmd p=0.002" as `refit maintain` prints it: a bare "mmd=0.002" read as the statistic
        pvals = "  ".join(f"{t} p={r['p_value']:.3g}" for t, r in w.get("results", {}).items())
        print(f"{w['name']:<28} n={w['size']:<6} {status:<10} {pvals}{_accuracy_text(w)}")
    if cut := [w for w in results if w.get("truncated_rows")]:  # a long post is judged on its head only
        print(
            f"Cut at max_length {encoder.max_length} tokens (embedded and classified on their first "
            f"{encoder.max_length} tokens only): "
            + ", ".join(f"{w['name']} {w['truncated_rows']} of {w['size']} rows" for w in cut)
        )
    if any(w.get("estimate") for w in results):
        print(ESTIMATE_CAVEAT)
    for name, why in report["unavailable_estimates"].items():
        print(f"Estimate {name} not available: {why}")
    print(f"Report: {out / 'report.html'}   Data: {out / 'drift.json'}")
    return DRIFT_EXIT if report["drift"] else 0
