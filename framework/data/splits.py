"""Labelled train/validation/test splits from files, the bundled demo set or a Hugging Face dataset."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from refit.data.files import file_fingerprint, read_table
from refit.errors import DataError

__all__ = ["Splits", "check_data_file", "load_splits", "demo_dir", "to_label_ids", "DEMO_NAME"]

DEMO_NAME = "refit-demo"
SPLITS = ("train", "validation", "test")
log = logging.getLogger("refit.data")


def _warn_leakage(texts: dict[str, list[str]], sources: dict[str, str]) -> dict[str, int]:
    """Held-out rows whose text also occurs in training, per split: a warning with the counts (their metrics
    overstate the model on unseen text), returned for the caller. Exact matches after stripping whitespace."""
    train = {t.strip() for t in texts["train"]}
    found = {}
    for split in ("validation", "test"):
        rows = texts.get(split) or []
        shared = sum(t.strip() in train for t in rows)
        if shared:
            found[split] = shared
            log.warning(
                "%d of %d %s rows (%s) have a text that also occurs in the training data (%s): their "
                "metrics and the drift reference are not on unseen text. Remove the duplicates from one side.",
                shared,
                len(rows),
                split,
                sources.get(split, split),
                sources.get("train", "train"),
            )
    return found


@dataclass
class Splits:
    """Texts and integer labels per split, with the label names they map to."""

    texts: dict[str, list[str]]
    labels: dict[str, list[int]]
    label_names: list[str]
    fingerprints: dict[str, dict] = field(default_factory=dict)


def demo_dir() -> Path:
    """Folder of the bundled demo data (written for refit; see its README.md)."""
    return Path(str(resources.files("refit.data") / "demo"))


def _label_names_file(path: Path) -> list[str] | None:
    """labels.json beside a data file ({"0": "negative", ...}) names integer labels."""
    names_file = path.parent / "labels.json"
    if not names_file.is_file():
        return None
    hint = 'it must map every integer label to its name, e.g. {"0": "negative", "1": "positive"}'
    try:
        mapping = json.loads(names_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{names_file} is not valid JSON ({e}); {hint}.") from None
    if not isinstance(mapping, dict) or not mapping:
        raise DataError(f"{names_file} holds {type(mapping).__name__} {mapping!r}; {hint}.")
    bad = [k for k, v in mapping.items() if not k.strip().isdigit() or not isinstance(v, (str, int))]
    if bad:
        raise DataError(f"{names_file}: bad entry {bad[0]!r}: {mapping[bad[0]]!r}; {hint}.")
    ids = sorted(int(k) for k in mapping)
    if ids != list(range(len(ids))):
        raise DataError(
            f"{names_file} names labels {ids}; it must name 0 to {len(ids) - 1} with no gaps; {hint}."
        )
    names = [str(mapping[k]) for k in sorted(mapping, key=int)]
    if len(set(names)) != len(names):
        raise DataError(f"{names_file} gives two labels the same name ({names}); {hint}.")
    return names


def _normalise_labels(values: list, source: str) -> list:
    """Raw labels of one split, whole floats made integers and NaN refused.

    A float that is a whole number is that integer (pandas writes an int column holding a gap as 1.0, so
    1 and 1.0 were two classes); NaN (pandas' missing value, which Python's JSON reader accepts) is a
    missing label. Mixed kinds within a file (1 beside "negative", true beside "positive") are refused
    where the file is read (refit.data.labels)."""
    out = []
    for row, v in enumerate(values, 1):
        if isinstance(v, float):
            if v != v:
                raise DataError(
                    f"{source}, row {row}: the label is NaN (a missing value); give every row a label."
                )
            v = int(v) if v.is_integer() else v
        out.append(v)
    return out


def _encode_labels(raw: dict[str, list], label_names: list[str] | None, sources: dict[str, str]):
    """Map raw labels (ints or strings) to ids; the label set comes from the training split."""
    raw = {split: _normalise_labels(values, sources[split]) for split, values in raw.items()}
    train = raw["train"]
    if any(v is None for v in train):
        rows = [i for i, v in enumerate(train, 1) if v is None]
        raise DataError(
            f"{sources['train']}: {len(rows)} row(s) have no label (row {rows[0]} first); give every "
            "training row a label (an integer or a name), or check 'data.label_column'."
        )
    if all(isinstance(v, int) and not isinstance(v, bool) for v in train):
        n = max(train) + 1
        names = label_names if label_names and len(label_names) >= n else [str(i) for i in range(n)]
        to_id = {i: i for i in range(len(names))}
    else:
        names = sorted({str(v) for v in train})
        to_id = {name: i for i, name in enumerate(names)}
        # CSV gives every label as a string: keep integer-looking ones in numeric order.
        if all(n.lstrip("-").isdigit() for n in names):
            names = sorted(names, key=int)
            to_id = {name: i for i, name in enumerate(names)}
    encoded = {}
    for split, values in raw.items():
        ids = []
        for row, v in enumerate(values, 1):
            key = v if isinstance(v, int) and not isinstance(v, bool) and v in to_id else str(v)
            if key not in to_id and isinstance(v, str) and v.strip().lstrip("-").isdigit():
                key = int(v)  # integer labels in training (JSONL), the same ids as text elsewhere (CSV)
            if key not in to_id:
                raise DataError(
                    f"{sources[split]}, row {row}: label {v!r} does not occur in the training data "
                    f"(known labels: {', '.join(map(str, names))})."
                )
            ids.append(to_id[key])
        encoded[split] = ids
    return encoded, names


def _from_hub(name: str, config: str | None, text_column: str, label_column: str) -> tuple[dict, dict, list]:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"data.dataset '{name}' is a Hugging Face dataset: install the extra with `pip install refit-ml[hub]`."
        ) from None
    try:
        ds = datasets.load_dataset(name, config)
    except Exception as e:  # network, unknown name, ...: all user-facing
        raise DataError(f"Cannot load Hugging Face dataset '{name}' ({type(e).__name__}: {e}).") from None
    texts, labels = {}, {}
    aliases = {"train": ["train"], "validation": ["validation", "valid", "dev"], "test": ["test"]}
    for split, names in aliases.items():
        found = next((n for n in names if n in ds), None)
        if found is None:
            continue
        part = ds[found]
        if text_column not in part.column_names:
            raise DataError(f"Dataset '{name}' has no column '{text_column}': {part.column_names}.")
        texts[split] = list(part[text_column])
        labels[split] = list(part[label_column])
    feature = ds["train"].features.get(label_column)
    names = list(getattr(feature, "names", []) or [])
    return texts, labels, names


def check_data_file(split: str, path: str) -> None:
    """A missing file is a DataError naming its key (`refit tune` checks before Ray starts any trial)."""
    if Path(path).is_dir():
        # A dataset folder (train/validation/test files) is the usual cause: name its files per key.
        found = sorted(p.name for p in Path(path).iterdir() if p.suffix in (".jsonl", ".csv", ".parquet"))
        inside = f" It holds {', '.join(found[:6])}{' ...' if len(found) > 6 else ''}." if found else ""
        raise DataError(
            f"'data.{split}' is {path}, a folder, not a data file: point it at a .jsonl, .csv or .parquet "
            f"file (one per split: --data.train, --data.validation, --data.test).{inside}"
        )
    if not Path(path).is_file():  # name the key: a config's relative paths are read from the cwd
        raise DataError(
            f"Data file not found: 'data.{split}' is {path} (looked for {Path(path).absolute()}). "
            f"Point 'data.{split}' at a .jsonl, .csv or .parquet file; a relative path is read from "
            "the current folder, not from the config's."
        )


def load_splits(
    train: str | None,
    validation: str | None,
    test: str | None,
    dataset: str | None = None,
    dataset_config: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    max_train_samples: int = 0,
) -> Splits:
    """Read and label-encode the splits; a missing file, column, label or an empty split is a DataError."""
    if dataset == DEMO_NAME:
        folder = demo_dir()
        train, validation, test = (str(folder / f"{s}.jsonl") for s in SPLITS)
        dataset = None
    paths = {"train": train, "validation": validation, "test": test}
    if dataset:
        texts, raw, names = _from_hub(dataset, dataset_config, text_column, label_column)
        sources = {s: f"{dataset}[{s}]" for s in texts}
        fingerprints = {
            s: {
                "dataset": dataset,
                "config": dataset_config,
                "rows": len(t),
                "sha256": hashlib.sha256("\n".join(t).encode()).hexdigest(),
            }
            for s, t in texts.items()
        }
    else:
        if not train:
            raise DataError(
                "No training data: set 'data.train' (a .jsonl, .csv or .parquet file), 'data.dataset' "
                "('refit-demo' for the bundled demo, or a Hugging Face dataset) or give --config "
                "(`refit configs` lists the shipped ones, e.g. finetune/demo.yaml)."
            )
        texts, raw, sources, fingerprints, names = {}, {}, {}, {}, None
        for split, path in paths.items():
            if not path:
                continue
            check_data_file(split, path)
            texts[split], raw[split] = read_table(path, text_column, label_column)
            sources[split] = path
            fingerprints[split] = file_fingerprint(path, len(texts[split]))
        names = _label_names_file(Path(train))
    if "train" not in texts:
        raise DataError(f"Dataset '{dataset}' has no training split.")
    if max_train_samples:
        texts["train"], raw["train"] = texts["train"][:max_train_samples], raw["train"][:max_train_samples]
    for split, values in texts.items():
        if not values:
            raise DataError(f"The {split} split ({sources[split]}) is empty.")
    labels, label_names = _encode_labels(raw, names, sources)
    _warn_leakage(texts, sources)
    present = sorted(set(labels["train"]))
    if len(present) < 2:  # integer labels (or labels.json) can name two classes while the rows hold one
        raise DataError(
            f"{sources['train']}: every training row has the same label ({label_names[present[0]]}): only one "
            "label, and a classifier needs at least two classes. Check 'data.label_column' and the file."
        )
    return Splits(texts=texts, labels=labels, label_names=label_names, fingerprints=fingerprints)


def to_label_ids(values: list, label_names: list[str]) -> list[int]:
    """Labels given as names ('positive') or ids (1, '1') -> ids of a model's label set."""
    ids = []
    for v in values:
        key = str(v)
        if key in label_names:
            ids.append(label_names.index(key))
        # ASCII digits only: str.isdigit() is true for '²' (int() then fails) and '١' (read as 1)
        elif key.isascii() and key.isdigit() and int(key) < len(label_names):
            ids.append(int(key))
        else:
            raise DataError(f"label {v!r} is not one of the model's labels {label_names}.")
    return ids
