"""refit benchmark: size, accuracy, latency and throughput of a model version in every format.

    refit benchmark --config configs/benchmark/cpu.yaml --version runs/demo/version
    refit benchmark --version runs/demo/version --formats '[pytorch, onnx-int8]' --seq_len 128
    refit benchmark --version champion --registry.root registry   # results to --output_dir

One row per format (PyTorch eager fp32, PyTorch dynamic int8, ONNX Runtime fp32 and int8, TensorRT):
file size, validation accuracy, p50/p95 latency at batch 1, throughput at batch 32 and speed-up over
eager fp32. A format that cannot run here gets a row saying why. Results go to VERSION/exports/
benchmark.{json,md} (for a registry's version, pinned at registration: to OUTPUT_DIR) and, when tracking
is on, to a W&B run (offline by default) in OUTPUT_DIR.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveInt

from refit.config import config_to_dict
from refit.errors import ConfigError, ExportError
from refit.evaluate import evaluation_texts
from refit.export.benchmark import (
    Skip,
    add_speedups,
    benchmark_row,
    formats,
    machine,
    noise_warning,
    rows_to_json,
    skipped_row,
    to_markdown,
)
from refit.export.lock import export_lock, exports_read_lock
from refit.inference import encode
from refit.io import atomic_write_text, write_json
from refit.models import MANIFEST, adding_exports, load_version, settle_exports
from refit.registry import registry_holding, version_folder
from refit.settings import RegistryConfig, TrackingConfig
from refit.tracking import build_loggers, finish, resolve_wandb_mode


@dataclass
class Config:
    """Benchmark a model version across formats.

    Args:
        version: The model version (required): its folder, or an id or alias (champion, ...) of the
            registry at registry.root.
        formats: Rows to measure: pytorch, pytorch-int8, onnx, onnx-int8, tensorrt. ONNX files missing from
            exports/ are built for the run only.
        seq_len: Tokens per input for latency and throughput (validation texts padded or cut to this).
        latency_batch: Batch size of the latency measurement.
        throughput_batch: Batch size of the throughput measurement.
        iters: Timed calls per latency measurement (a tenth of that, at least 3, for throughput).
        max_samples: Validation inputs scored for accuracy (0 = all).
        validation: Validation file (default: the one in the version's refit.json config).
        registry: Where an id or alias given as version is looked up (root default ./registry; db
            default ROOT/registry.db).
        tracking: W&B logging of the table (offline by default).
        output_dir: Folder for the W&B run and CSV logs, and for the results of a registry's version
            (benchmark.json/.md; any other version gets them in its exports/).
        lock_wait_s: Seconds to wait for an export of the version that is running (to read its exports/
            whole, and again to write the results), before giving up with an error.
    """

    version: str | None = None
    formats: list[str] = field(
        default_factory=lambda: ["pytorch", "pytorch-int8", "onnx", "onnx-int8", "tensorrt"]
    )
    seq_len: PositiveInt = 64
    latency_batch: PositiveInt = 1
    throughput_batch: PositiveInt = 32
    iters: PositiveInt = 50
    max_samples: NonNegativeInt = 0
    validation: str | None = None
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    output_dir: str = "runs/benchmark"
    lock_wait_s: NonNegativeFloat = 600.0


def _log_wandb(cfg: Config, rows: list[dict]) -> str | None:
    mode = resolve_wandb_mode(cfg.tracking.wandb, cfg.tracking.mode)
    if mode == "disabled":
        return None
    import wandb

    loggers = build_loggers(
        Path(cfg.output_dir),
        cfg.tracking.name or "benchmark",
        config_to_dict(cfg),
        mode,
        cfg.tracking.project,
    )
    run = next(lg for lg in loggers if type(lg).__name__ == "WandbLogger").experiment
    columns = list(rows[0])
    run.log({"benchmark": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})
    return finish(loggers)


def _exports_seal(version: Path) -> dict[str, str]:
    """path -> sha256 of the files in exports/ now (from its manifest), other benchmarks' results aside:
    the results describe these files, and are written only if they are still the files there."""
    seal = version / "exports" / MANIFEST
    if not seal.is_file():
        return {}
    try:
        files = json.loads(seal.read_text())["files"]
        return {f["path"]: f["sha256"] for f in files if not f["path"].startswith("benchmark.")}
    except (OSError, ValueError, KeyError, TypeError):
        return {"?": "unreadable"}  # (load_version refused one unreadable before the measurement)


def _measure(
    cfg: Config, version: Path, model, tokenizer, meta: dict, staging: Path, makers: dict
) -> tuple[list, dict, list[str]]:
    """One row per format, measured on the version's validation texts (under the caller's read lock)."""
    data = (meta.get("config") or {}).get("data") or {}
    val = evaluation_texts(meta, "validation", cfg.validation)
    if val is None:
        raise ConfigError("The version's config names no validation data: pass --validation FILE.")
    texts, labels = val if not cfg.max_samples else (val[0][: cfg.max_samples], val[1][: cfg.max_samples])
    eval_batches = encode(tokenizer, texts, data.get("max_length", 128), data.get("eval_batch_size", 64))
    fixed = encode(
        tokenizer,
        (texts * cfg.throughput_batch)[: cfg.throughput_batch],
        cfg.seq_len,
        cfg.throughput_batch,
        pad_to_max=True,
    )[0]
    lat = encode(tokenizer, texts[: cfg.latency_batch], cfg.seq_len, cfg.latency_batch, pad_to_max=True)[0]

    # run
    rows = []
    for fmt in cfg.formats:
        try:
            predictor, files, note = makers[fmt](model, version, staging / fmt)
        except Skip as e:
            rows.append(skipped_row(fmt, str(e)))
            continue
        rows.append(
            benchmark_row(
                fmt,
                predictor,
                files,
                eval_batches=eval_batches,
                labels=np.asarray(labels),
                latency_batch=lat,
                throughput_batch=fixed,
                iters=cfg.iters,
                note=note,
            )
        )
    settings = {
        "seq_len": cfg.seq_len,
        "latency batch": cfg.latency_batch,
        "throughput batch": cfg.throughput_batch,
        "iters": cfg.iters,
        "validation inputs": len(texts),
    }
    return rows, settings, texts


def run(cfg: Config) -> Path:
    # setup
    if not cfg.version:
        raise ConfigError(
            "refit benchmark needs --version: the model version to measure (its folder, or an id or alias "
            "of a registry: --version champion --registry.root registry)."
        )
    makers = formats()
    unknown = [f for f in cfg.formats if f not in makers]
    if unknown:
        raise ConfigError(
            f"Unknown format(s) {', '.join(unknown)} in 'formats'; choose from {', '.join(makers)}."
        )
    version, _ = version_folder(cfg.version, cfg.registry.root, cfg.registry.db)
    # a registry's version is pinned at registration (exports/ included): writing the results into it made
    # the registry refuse it from then on, the champion too; it is only read, and the results go elsewhere
    registered = registry_holding(version) is not None
    if registered:
        reading = exports_read_lock(version, wait_s=cfg.lock_wait_s)
    elif (version / "refit.json").is_file():
        # finish or undo a killed export's swap first (refit.export.lock)
        with export_lock(version, wait_s=cfg.lock_wait_s):
            settle_exports(version)
        reading = exports_read_lock(version, wait_s=cfg.lock_wait_s)
    else:  # not a version: load_version says why
        reading = contextlib.nullcontext()
    # a shared lock while the version is loaded and its exports/ timed: an export swapping a new exports/
    # in meanwhile made a row fail on a missing file, or time half old, half new files
    with reading, tempfile.TemporaryDirectory(prefix="refit-bench-") as staging:
        model, tokenizer, meta = load_version(version)
        measured = _exports_seal(version)
        rows, settings, texts = _measure(cfg, version, model, tokenizer, meta, Path(staging), makers)
    rows = add_speedups(rows)
    host = machine()
    markdown = to_markdown(rows, f"refit benchmark: {meta.get('version_id')}", settings, host)
    results = {"version_id": meta.get("version_id"), "machine": host, "settings": settings}
    results["noisy"] = noise_warning(rows, host)  # also in the Markdown, under the table
    results["rows"] = rows_to_json(rows)
    if registered:  # pinned by its registry: the results go beside the W&B run, the version stays as it is
        where = Path(cfg.output_dir)
        write_json(where / "benchmark.json", results)
        atomic_write_text(where / "benchmark.md", markdown)
    else:  # added to exports/ as a whole (refit.models.adding_exports), after any export running now
        where = version / "exports"
        with export_lock(version, wait_s=cfg.lock_wait_s):
            if _exports_seal(version) != measured:  # an export ran between the measurement and this write
                raise ExportError(
                    f"{where} changed while {version} was being benchmarked (another refit export ran), so "
                    "these results may not describe its files and were not written. Run refit benchmark again."
                )
            with adding_exports(version) as staged:
                write_json(staged / "benchmark.json", results)
                atomic_write_text(staged / "benchmark.md", markdown)
    wandb_dir = _log_wandb(cfg, rows_to_json(rows))

    # report
    print(markdown)  # plain Markdown: readable in a terminal and pasteable into an issue
    print(
        f"Wrote {where / 'benchmark.json'} and {where / 'benchmark.md'}"
        + (f"; W&B run: {wandb_dir}" if wandb_dir else "")
    )
    return where / "benchmark.json"
