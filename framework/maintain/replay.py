"""Replay: a sample of the champion's own training rows mixed into every retrain, so it does not forget.

What replay needs is resolved from the champion's refit.json alone, from any working directory:
- `dataset: refit-demo` -> the bundled demo training file;
- a training file -> the absolute path in the version's data fingerprint (or the config's path when it
  is absolute), accepted only when its sha256 still matches the fingerprint recorded at training time, or
  the state the registry's forget runs recorded after removing forgotten texts from it (`redactions`,
  refit.maintain.scrub): a copy from before a forget (a restored backup) is refused, it holds those texts.
A retrain run by a cycle writes the replay rows it drew into the challenger's own training file, so the
next champion's replay data exists as long as its maintenance run folder does.

Replay that is configured but impossible is an error (ReplayUnavailable) by default, never a silent skip.
"""

from __future__ import annotations

import random
from pathlib import Path

from refit.data import DEMO_NAME, demo_dir, read_table, to_label_ids
from refit.errors import DataError
from refit.io import sha256_file

__all__ = ["ReplayUnavailable", "replay_source", "draw_replay"]


class ReplayUnavailable(DataError):
    """Replay is configured (replay_size > 0) but the champion's training data cannot be found or verified."""


def replay_source(meta: dict, redactions: dict[str, tuple[str, int]] | None = None) -> Path:
    """The champion's training file, verified against its fingerprint followed through `redactions`
    (sha256 before a forget -> (after, forget run id)); ReplayUnavailable says why not."""
    vid = meta.get("version_id", "the champion")
    data = (meta.get("config") or {}).get("data") or {}
    fingerprint = (meta.get("data") or {}).get("train") or {}
    advice = (
        "Set 'inbox.replay_size: 0' to retrain without replay, or 'inbox.replay_missing: warn' to go on "
        "with a warning, or restore the file."
    )
    if data.get("dataset") == DEMO_NAME:
        candidates = [demo_dir() / "train.jsonl"]
    elif data.get("dataset"):
        raise ReplayUnavailable(
            f"{vid} was trained on the hub dataset '{data['dataset']}', which replay cannot "
            f"read offline. {advice}"
        )
    else:
        candidates = [
            Path(p) for p in (fingerprint.get("path"), data.get("train")) if p and Path(p).is_absolute()
        ]
    if not candidates:
        raise ReplayUnavailable(
            f"{vid}'s refit.json names no training file with an absolute path "
            f"(config: {data.get('train')!r}). {advice}"
        )
    expected = fingerprint.get("sha256")
    chain, runs = [expected], []
    while expected and chain[-1] in (redactions or {}) and len(chain) <= len(redactions or {}):
        after, run_id = redactions[chain[-1]]
        chain.append(after)
        runs.append(run_id)
    for path in candidates:
        if path.is_file():
            actual = sha256_file(path) if expected else None
            if expected and actual in chain[:-1]:
                raise ReplayUnavailable(
                    f"{vid}'s training file {path} is in its state from before forget run "
                    f"{runs[chain.index(actual)]} removed forgotten texts from it (a restored copy?): "
                    "replay will not train on them again. Run `refit maintain forget` again with the same "
                    f"ids, or delete the file. {advice}"
                )
            if expected and actual != chain[-1]:
                raise ReplayUnavailable(
                    f"{vid}'s training file {path} changed since training (sha256 differs "
                    f"from the fingerprint in refit.json{' and from what forget runs recorded' if runs else ''}). "
                    f"{advice}"
                )
            if not expected:
                raise ReplayUnavailable(
                    f"{vid}'s refit.json has no fingerprint for {path}: cannot verify it is "
                    f"the data the champion was trained on. {advice}"
                )
            return path
    raise ReplayUnavailable(
        f"{vid}'s training data is gone: {', '.join(map(str, candidates))} not found. {advice}"
    )


def draw_replay(meta: dict, path: Path, n: int, seed: int) -> list[tuple[str, int]]:
    """A seeded sample of up to `n` (text, label id) rows of the champion's training file."""
    data = (meta.get("config") or {}).get("data") or {}
    texts, labels = read_table(path, data.get("text_column") or "text", data.get("label_column") or "label")
    pairs = list(zip(texts, to_label_ids(labels, meta.get("labels", []))))
    return random.Random(seed).sample(pairs, min(n, len(pairs)))
