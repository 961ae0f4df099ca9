"""`refit <recipe> [--config FILE] [--key value ...]`, `refit configs`.

Recipes are imported only when run, so `refit --help` stays instant. User mistakes (RefitError) are
printed as one message with exit code 2; programming errors keep their traceback.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from refit.errors import RefitError

__all__ = ["main", "RECIPES", "shipped_configs"]

# name -> (module, one-line description). Adding a recipe is one file and one line here.
RECIPES: dict[str, tuple[str, str]] = {
    "finetune": ("refit.recipes.finetune", "fine-tune a pre-trained transformer and write a model version"),
    "tune": ("refit.recipes.tune", "search hyper-parameters with Ray Tune; keep the best config and version"),
    "drift": ("refit.recipes.drift", "test production inputs for drift against a version's reference"),
    "maintain": ("refit.recipes.maintain", "retrain on drift or schedule; promote only a better challenger"),
    "registry": ("refit.recipes.registry", "register, list, promote, roll back and audit model versions"),
    "compress": ("refit.recipes.compress", "prune or cast a version into a gated child version"),
    "export": (
        "refit.recipes.export",
        "export a version to ONNX, int8 ONNX, TensorRT or an edge bundle, gated",
    ),
    "benchmark": (
        "refit.recipes.benchmark",
        "size, accuracy, latency and throughput of a version per format",
    ),
    "serve": (
        "refit.recipes.serve",
        "serve the champion over HTTP with micro-batching, capture and hot swap",
    ),
}


def shipped_configs() -> list[Path]:
    root = Path(str(resources.files("refit.configs")))
    return sorted(root.rglob("*.yaml"))


def _configs_root() -> Path:
    return Path(str(resources.files("refit.configs")))


def _resolve_config_args(argv: list[str]) -> list[str]:
    """`--config finetune/demo.yaml` also finds the shipped config when no such file is here."""
    out = list(argv)
    for i, tok in enumerate(out[:-1]):
        if tok == "--config" and not Path(out[i + 1]).exists():
            name = out[i + 1].removeprefix("configs/")
            candidate = _configs_root() / name
            if candidate.is_file():
                out[i + 1] = str(candidate)
    return out


def _usage() -> str:
    width = max(len(n) for n in RECIPES)
    lines = [
        "usage: refit <command> [--config FILE] [--section.key VALUE ...] [--print_config] [--help]",
        "       refit --version",
        "",
        "Keep transformer models good after they ship.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {desc}" for name, (_, desc) in RECIPES.items()),
        f"  {'configs':<{width}}  list the shipped configs and the command that runs each (--format json)",
        "",
        "`refit <command> --help` lists every key of that command with its default and meaning.",
    ]
    return "\n".join(lines)


def _list_configs(fmt: str = "table") -> int:
    root = _configs_root()
    rows = []
    for path in shipped_configs():
        first = path.read_text().splitlines()[0].lstrip("# ").strip() if path.stat().st_size else ""
        rows.append({"config": str(path.relative_to(root)), "command": first, "path": str(path)})
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['config']:<32} {row['command']}")
    return 0


# Known third-party notices that say nothing about the user's run (issue #13.1). Matched one by one, so any
# other warning still reaches the terminal; applied by the CLI only (the library changes no global state).
_NOISY_WARNINGS = [
    r".*weights_only.*",  # torch.load default change, raised from inside Lightning's checkpoint loading
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # torch pytree API used by Lightning
    r"Exporting aten::index operator of advanced indexing.*",  # ONNX exporter on BERT's position ids (non-negative)
    r"Converting a tensor to a Python boolean might cause the trace.*",  # HF masking under the ONNX tracer
    # torch 2.13's notice on quantised tensors (raised as a UserWarning by torch.ao's dynamic int8, which
    # refit measures as a baseline row in `refit benchmark`; the served int8 path is ONNX Runtime)
    r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor creation.*",
    # Lightning on every mid-epoch `refit finetune --resume` ("... your dataloader is not resumable ...
    # unreliable results"). refit's resume does continue correctly there: the global step, learning-rate
    # schedule and optimizer state go on from the checkpoint (tests/recipes/test_resume.py); only the
    # resumed epoch's remaining batches come from a restarted loader order (in that one epoch some examples
    # may repeat and others be skipped), which is what the notice warns about.
    r"You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not.*",
    # Lightning on every `--resume`: the folder is the run's own OUTPUT_DIR/checkpoints, holding its
    # last.ckpt (a run without --resume on a folder holding one is refused before training)
    r"Checkpoint directory .* exists and is not empty.*",
]
# Lightning's per-run notices (accelerator availability, the litlogger tip, checkpoint restore chatter).
_NOISY_LOGGERS = [
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.trainer.connectors.checkpoint_connector",
    "lightning.pytorch.accelerators.cuda",
]
# logger -> message starts dropped from it (the logger's other messages still show).
_NOISY_MESSAGES = {
    # onnxruntime's quantizer advises pre-processing on the root logger (refit's graphs need none: dynamic
    # int8, and the edge bundle's Q/DQ model); ORT words it two ways (the second from static quantisation)
    "": (
        "Please consider to run pre-processing before quantization",
        "Please consider pre-processing before quantization",
    ),
    # Ray's notice that its secure default is on (the warning that it is OFF still shows)
    "ray._private.authentication.authentication_token_setup": (
        "Token authentication is enabled for this Ray",
    ),
}


class _DropStarting(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


_MESSAGE_FILTERS = {name: _DropStarting(starts) for name, starts in _NOISY_MESSAGES.items()}


def _quiet_third_party() -> None:
    """Keep the terminal to refit's own progress and results: silence the known notices above, W&B's
    per-run banners and run-history summary (refit prints where the run is), and Hugging Face's
    per-load progress bars. Environment variables a user set win (WANDB_SILENT=false brings W&B back)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for pattern in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name, drop in _MESSAGE_FILTERS.items():
        logging.getLogger(name).addFilter(
            drop
        )  # the same object each call: added once, however often main runs


def run_recipe(name: str, argv: Sequence[str]):
    """Parse argv for recipe `name` and run it; returns whatever the recipe returns."""
    from refit.config import build_parser, parse_config

    module = importlib.import_module(RECIPES[name][0])
    args = list(argv)
    # A recipe's sub-recipes with their own Config (`refit maintain init ...`): SUBCOMMANDS = {word: module}.
    subcommands = getattr(module, "SUBCOMMANDS", {})
    if args and args[0] in subcommands:
        name, module, args = f"{name} {args[0]}", importlib.import_module(subcommands[args[0]]), args[1:]
    if hasattr(module, "parse_args"):  # a recipe with its own subcommands (`refit registry promote ...`)
        return module.run(module.parse_args(args))
    parser = build_parser(module.Config, prog=f"refit {name}", description=module.__doc__)
    # Recipes with sub-actions (`refit registry promote ...`) take them as leading positional words.
    for key in getattr(module, "POSITIONAL", ()):
        if args and not args[0].startswith("-"):
            args = [f"--{key}", args[0], *args[1:]]
    cfg = parse_config(parser, module.Config, _resolve_config_args(args))
    return module.run(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        # The first thing many users type to check an install, and what a bug report needs.
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"refit {version('refit-ml')}")
        except PackageNotFoundError:
            print("refit (not installed as a package: run `pip install -e .` in the checkout)")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "configs":
        fmt = rest[1] if len(rest) == 2 and rest[0] == "--format" else "table" if not rest else None
        if fmt not in ("table", "json"):
            print(
                f"refit configs: error: takes only --format table|json, got {' '.join(rest)}.",
                file=sys.stderr,
            )
            return 2
        return _list_configs(fmt)
    if command not in RECIPES:
        import difflib

        close = difflib.get_close_matches(command, [*RECIPES, "configs"], n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"refit: unknown command '{command}'.{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_third_party()
    try:
        result = run_recipe(command, rest)
    except RefitError as e:
        print(f"refit {command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"refit {command}: interrupted.", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
