"""Generate refit's bundled demo data: short binary-sentiment texts in two styles, written for this project.

Why generated: the quickstart must run on a fresh machine with no network and no user files, and real
datasets are not ours to redistribute. Templates and word lists below are our own; the script is seeded,
so the shipped files are reproducible:

    python scripts/make_demo_data.py        # writes framework/data/demo/*.jsonl

Style "reviews" (train/validation/test): formal sentences reviewing products and services, written as one
pool of unique texts and then split at random (label-balanced), so that the three splits are exchangeable.
Writing them one after the other instead (train, then validation, then test, each refusing texts already
used) made them differ: a template with few variants runs out as the pool fills, and the shipped
validation and test splits ended up with different template mixes (chi-square p = 0.001), which the
classifier drift test rightly flagged on the demo's own test split (issue #13.6,
scripts/results/classifier_demo.md).
Style "chat" (shifted.jsonl): casual, lowercase social-media messages about the same things, for showing
that `refit drift` notices a change of input style.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "framework" / "data" / "demo"
SEED = 20261122

THINGS = [
    "coffee maker",
    "pair of headphones",
    "hotel",
    "novel",
    "blender",
    "backpack",
    "laptop stand",
    "restaurant",
    "desk lamp",
    "phone case",
    "rain jacket",
    "guided tour",
    "kettle",
    "keyboard",
    "cookbook",
    "yoga mat",
    "electric toothbrush",
    "airline",
    "board game",
    "pair of running shoes",
]
ASPECTS = [
    "build quality",
    "customer service",
    "price",
    "design",
    "battery life",
    "delivery",
    "comfort",
    "sound",
    "instructions",
    "packaging",
    "staff",
    "performance",
]
GOOD = ["excellent", "outstanding", "reliable", "delightful", "superb", "well made", "impressive", "pleasant"]
BAD = ["disappointing", "flimsy", "unreliable", "frustrating", "poor", "badly made", "mediocre", "unpleasant"]
INTENS = ["", "", "truly ", "remarkably ", "consistently ", "genuinely "]

REVIEW_POS = [
    "The {thing} is {intens}{good}, and the {aspect} exceeded my expectations.",
    "I would happily recommend this {thing}; the {aspect} is {good}.",
    "After a month of use, the {thing} remains {intens}{good}.",
    "Not bad at all: the {aspect} of this {thing} is {good}.",
    "Our family has been very satisfied with the {thing}, especially its {aspect}.",
    "The {aspect} was {intens}{good}, which made the {thing} worth every penny.",
    "I was sceptical at first, but the {thing} turned out to be {good}.",
    "Few purchases have pleased me as much as this {thing}.",
]
REVIEW_NEG = [
    "The {thing} is {intens}{bad}, and the {aspect} fell well short of my expectations.",
    "I cannot recommend this {thing}; the {aspect} is {bad}.",
    "After a month of use, the {thing} has become {intens}{bad}.",
    "Hardly worth the money: the {aspect} of this {thing} is {bad}.",
    "Our family has been very dissatisfied with the {thing}, especially its {aspect}.",
    "The {aspect} was {intens}{bad}, which made the {thing} a waste of money.",
    "I had high hopes, but the {thing} turned out to be {bad}.",
    "Few purchases have annoyed me as much as this {thing}.",
]
CHAT_POS = [
    "omg this {thing} is sooo good lol",
    "ngl the {aspect} on my new {thing} slaps :)",
    "@{user} u HAVE to get this {thing}, {aspect} is amazing #happy",
    "lowkey obsessed w my {thing} rn :D",
    "10/10 would buy this {thing} again #winning",
    "my {thing} just arrived n the {aspect} is perfect lol",
    "best {thing} ever fr fr",
    "ok the {thing} hype is real, love the {aspect} <3",
]
CHAT_NEG = [
    "ugh this {thing} is trash lol",
    "ngl the {aspect} on my new {thing} is awful :(",
    "@{user} dont buy this {thing}, {aspect} is a joke #fail",
    "so done w my {thing} rn >:(",
    "0/10 would never buy this {thing} again #annoyed",
    "my {thing} just arrived n the {aspect} is broken smh",
    "worst {thing} ever fr fr",
    "the {thing} hype is fake, hate the {aspect} tbh",
]
USERS = ["sam_k", "techmom", "joey88", "the_real_lu", "mika", "dr_dee", "bencodes", "ana_b"]


def _fill(template: str, rng: random.Random) -> str:
    thing, aspect = rng.choice(THINGS), rng.choice(ASPECTS)
    return template.format(
        thing=thing,
        aspect=aspect,
        good=rng.choice(GOOD),
        bad=rng.choice(BAD),
        intens=rng.choice(INTENS),
        user=rng.choice(USERS),
    )


def _make(pos: list[str], neg: list[str], n: int, rng: random.Random, seen: set[str]) -> list[dict]:
    """n unique, label-balanced rows, never repeating a text already in `seen`."""
    rows: list[dict] = []
    while len(rows) < n:
        label = len(rows) % 2
        text = _fill(rng.choice(pos if label else neg), rng)
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
    rng.shuffle(rows)
    return rows


SPLITS = {"train": 400, "validation": 100, "test": 100}


def _split(rows: list[dict], rng: random.Random) -> dict[str, list[dict]]:
    """Random, label-balanced parts of one pool: no split is drawn after another has used up texts."""
    by_label = [[r for r in rows if r["label"] == label] for label in (0, 1)]
    for part in by_label:
        rng.shuffle(part)
    out, start = {}, 0
    for name, n in SPLITS.items():
        out[name] = [r for part in by_label for r in part[start // 2 : (start + n) // 2]]
        rng.shuffle(out[name])
        start += n
    return out


def main() -> None:
    rng = random.Random(SEED)
    seen: set[str] = set()
    reviews = [r for n in SPLITS.values() for r in _make(REVIEW_POS, REVIEW_NEG, n, rng, seen)]
    files = {
        **_split(reviews, random.Random(SEED + 1)),  # its own stream: shifted.jsonl stays as it was
        "shifted": _make(CHAT_POS, CHAT_NEG, 200, rng, seen),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        (OUT / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (OUT / "labels.json").write_text(json.dumps({"0": "negative", "1": "positive"}, indent=2) + "\n")
    print({name: len(rows) for name, rows in files.items()})


if __name__ == "__main__":
    main()
