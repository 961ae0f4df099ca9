"""The model version: one folder (model/, refit.json, reference/, exports/) written atomically.

`model/` is plain Hugging Face format with safetensors, so `transformers` alone can load it.

Integrity: `manifest.json` lists every file of the version (relative path, size, sha256) except itself and
exports/; it is written as the last step of the atomic write. exports/ grows after the version is made
(`refit export`, `refit benchmark`), so it carries its own `exports/manifest.json`. `adding_exports` adds
artefacts as a whole: it builds and seals the new exports/ beside the old one and swaps it in (see
`settle_exports` for what a kill mid-swap leaves and how the next export repairs it); `update_exports_manifest`
re-seals files installed in place (the maintain cycle's deploy step). An exports/ folder with files
but no manifest is refused like any other unlisted file. Every load verifies both,
and refuses a missing, extra or altered file, or a version without a manifest, naming the file: a deleted
tokenizer.json once loaded silently as a tokenizer mapping every word to [UNK].
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import platform
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Protocol

from refit.errors import VersionError
from refit.io import atomic_dir, check_name, is_bare_name, sha256_file, sha256_file_cached, write_json

__all__ = [
    "REFIT_JSON",
    "MANIFEST",
    "new_version_id",
    "package_versions",
    "write_version",
    "read_version",
    "load_version",
    "weights_file",
    "write_manifest",
    "verify_version",
    "sealed_files",
    "update_exports_manifest",
    "adding_exports",
    "settle_exports",
    "editing_version",
    "FAULT_ENV",
    "EXPORT_PHASES",
    "kill_at",
]

REFIT_JSON = "refit.json"
WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"
EXPORTS = "exports"
MANIFEST_FORMAT = "refit-manifest/1"
_PACKAGES = ("refit-ml", "torch", "transformers", "lightning", "torchmetrics", "safetensors")


def new_version_id() -> str:
    now = datetime.now(timezone.utc)
    return f"v{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def weights_file(version_dir: str | Path) -> Path:
    return Path(version_dir) / "model" / WEIGHTS


class SavesItself(Protocol):
    """Something written into the version folder inside its atomic write (the drift reference:
    refit.drift.reference.Reference, which owns the files of reference/)."""

    def save(self, folder: Path) -> None: ...


def write_version(
    dest: str | Path,
    model,
    tokenizer,
    meta: dict,
    reference: SavesItself | None = None,
    calibration: SavesItself | None = None,
) -> Path:
    """Write a complete version to `dest` atomically and return it; `meta` becomes refit.json.

    The reference (with its fitted detector state) is written inside the atomic write, before the manifest
    seals the version: nothing may be added to a version after it is written. So is the calibrator
    (refit.estimate.Calibration, which writes calibration.json at the top of the version).
    """
    dest = Path(dest)
    if meta.get("version_id") is not None:
        check_name(meta["version_id"], "version id")
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "model")
        if reference is not None:
            reference.save(tmp / "reference")
        if calibration is not None:
            calibration.save(tmp)
        (tmp / EXPORTS).mkdir()
        record = {
            "version_id": meta.get("version_id") or new_version_id(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **meta,
            "weights_sha256": sha256_file(tmp / "model" / WEIGHTS),
            "packages": package_versions(),
        }
        write_json(tmp / REFIT_JSON, record)
        write_manifest(tmp)  # last: the manifest seals exactly what is there
    return dest


# --- manifests ---------------------------------------------------------------------------------------
def _skipped(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _files(folder: Path, skip_top: tuple[str, ...], skip_hidden_top: bool) -> dict[str, Path]:
    """relative posix path -> file, for every file under `folder` (links refused: they could point anywhere)."""
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        top = here == folder
        if top:
            dirnames[:] = [
                d
                for d in dirnames
                if not _skipped(d, skip_top) and not (skip_hidden_top and d.startswith("."))
            ]
        for name in [*filenames, *[d for d in dirnames if (here / d).is_symlink()]]:
            path = here / name
            if top and (_skipped(name, skip_top) or (skip_hidden_top and name.startswith("."))):
                continue
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink() or not path.is_file():
                raise VersionError(
                    f"{path} is a link or not a regular file; a version holds plain files only."
                )
            out[rel] = path
    return out


def _manifest(folder: Path, skip_top: tuple[str, ...], skip_hidden_top: bool = False) -> dict:
    files = _files(folder, skip_top, skip_hidden_top)
    return {
        "format": MANIFEST_FORMAT,
        "algorithm": "sha256",
        "files": [
            {"path": rel, "size": files[rel].stat().st_size, "sha256": sha256_file_cached(files[rel])}
            for rel in sorted(files)
        ],
    }


def write_manifest(version_dir: str | Path) -> Path:
    """Seal a version: manifest.json over every file except itself and exports/ (written atomically)."""
    folder = Path(version_dir)
    path = folder / MANIFEST
    write_json(path, _manifest(folder, _MAIN_SKIP))
    return path


def _write_exports_manifest(exports: Path) -> Path:
    # Hidden top-level entries of exports/ are staging of an export in progress (`.staging-*`, `.*.old-*`).
    write_json(exports / MANIFEST, _manifest(exports, (MANIFEST,), skip_hidden_top=True))
    return exports / MANIFEST


def update_exports_manifest(version_dir: str | Path, changed: Iterable[str | Path]) -> Path:
    """Re-seal VERSION/exports/ after installing artefacts; call it last, once every file is in place.

    `changed`: the entries of exports/ just written or replaced (names like "model.onnx", or their paths; a
    folder covers everything in it). Everything else must still match the previous exports manifest, so
    re-sealing never blesses a file altered behind refit's back, and the main manifest is checked first, so
    an altered version cannot be re-blessed through its exports either.
    """
    folder = Path(version_dir)
    _verify_main(folder)
    _finish_swap(folder)  # never write into a half-swapped version (callers hold the export lock)
    exports = folder / EXPORTS
    exports.mkdir(exist_ok=True)
    names = {_top_entry(exports, c) for c in changed}
    kept = {
        rel: path
        for rel, path in _files(exports, (MANIFEST,), True).items()
        if rel.split("/")[0] not in names
    }
    if (exports / MANIFEST).is_file():
        _check(exports, exports / MANIFEST, kept, folder, only=lambda rel: rel.split("/")[0] not in names)
    elif kept:
        first = exports / sorted(kept)[0]
        raise VersionError(
            f"Version {folder}: {first} is not covered by {exports / MANIFEST} and was not just "
            "installed; remove it or export it again. Refusing to seal it."
        )
    return _write_exports_manifest(exports)


def _top_entry(exports: Path, entry: str | Path) -> str:
    """The top-level name in exports/ of an entry given as a name, a path relative to exports/, a path
    relative to the current folder (runs/demo/version/exports/onnx, as a user types it) or an absolute path."""
    path = Path(entry)
    if path.is_absolute():
        try:
            path = path.resolve().relative_to(exports.resolve())
        except ValueError:
            raise VersionError(f"{entry} is not inside {exports}.") from None
    elif len(path.parts) > 1:  # relative to the current folder when that lands inside exports/ (else
        with contextlib.suppress(ValueError):  # it is read as relative to exports/)
            path = path.resolve().relative_to(exports.resolve())
    if not path.parts or path.parts[0] in ("..", MANIFEST):
        raise VersionError(f"{entry} does not name an entry of {exports}.")
    return path.parts[0]


# --- adding exports: build the new exports/ complete and sealed beside the old one, then swap it in ------
# the next exports/, complete and sealed, before the swap (registry copies skip .staging-*)
NEW_EXPORTS = ".staging-exports.new"
OLD_EXPORTS = ".exports.old-swap"  # the previous exports/ during the swap (registry copies skip .*.old-*)
STAGING = ".staging-"  # prefix of folders of an export in progress, in VERSION/ (and, before, in exports/)
_MAIN_SKIP = (MANIFEST, EXPORTS, f"{STAGING}*", OLD_EXPORTS)  # top-level entries outside the main manifest
FAULT_ENV = "REFIT_FAULT_AT"  # the test hook of refit.maintain.faults, for the phases of EXPORT_PHASES
EXPORT_PHASES = ("exports-built", "exports-sealed", "exports-swapped-out", "exports-swapped-in")


def kill_at(phase: str, phases: tuple[str, ...]) -> None:
    """SIGKILL this process at `phase` when REFIT_FAULT_AT names it (a test hook; see refit.maintain.faults).

    The one copy of the hook for the version writer and the registry (both layers may import this one);
    `phases` is the caller's table, so a misspelt phase fails loudly instead of silently never firing."""
    if phase not in phases:
        raise ValueError(f"unknown fault phase {phase!r}; known: {phases}")
    if os.environ.get(FAULT_ENV) == phase:
        os.kill(os.getpid(), signal.SIGKILL)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path)


def _finish_swap(folder: Path) -> None:
    """Put exports/ back in place after a kill between the swap's two renames (see settle_exports)."""
    exports, new, old = folder / EXPORTS, folder / NEW_EXPORTS, folder / OLD_EXPORTS
    if old.is_dir() and not exports.exists() and new.is_dir():
        os.replace(new, exports)  # committed: finish the swap
    if old.is_dir() and not exports.exists():
        os.replace(old, exports)  # (no new one to move in: put the old one back)


def settle_exports(version_dir: str | Path) -> list[Path]:
    """Finish or undo an exports swap a kill interrupted, then remove killed exports' staging; call it only
    under the export lock (refit.export.lock). Returns what was removed.

    The swap is two renames, exports/ -> OLD_EXPORTS (the commit point), then NEW_EXPORTS -> exports/. Killed
    before the first, the old sealed exports/ stays and the sealed new one is dropped (the export did not
    finish); killed between them, the new one is moved in; killed after them, the old one is deleted. Each
    rule looks only at what is on disk, so a kill during this repair is repaired the same way next time.
    """
    folder = Path(version_dir)
    exports, new, old = folder / EXPORTS, folder / NEW_EXPORTS, folder / OLD_EXPORTS
    _finish_swap(folder)
    removed = [p for p in (old, new) if p.exists() or p.is_symlink()]
    removed += sorted(p for p in folder.glob(f"{STAGING}*") if p not in removed)
    if exports.is_dir():  # exports of earlier refits staged inside exports/ (.staging-*, .NAME.old-*)
        removed += sorted(p for p in exports.iterdir() if p.name.startswith("."))
    for path in removed:
        _remove(path)
    return removed


def _carry(src: Path, dest: Path) -> None:
    """Copy an entry of the old exports/ into the new one, as hard links where the file system allows."""
    try:
        if src.is_dir():
            shutil.copytree(src, dest, copy_function=os.link)
        else:
            os.link(src, dest)
    except OSError:
        _remove(dest)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest)


@contextlib.contextmanager
def adding_exports(version_dir: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success its entries replace those of the same name in exports/.

        with export_lock(version), adding_exports(version) as staging:
            build(staging / "model.onnx")
    Call it under the export lock. First a swap a kill left half done is finished or undone and killed
    staging removed (settle_exports). Then the new exports/ is built complete beside the old one (the old
    entries not replaced, as hard links, plus the staged ones), sealed, and swapped in by two renames: a kill
    at any point leaves the old sealed exports/ or the new sealed one, once the next export settles it. On
    error nothing in exports/ changes.
    """
    folder = Path(version_dir)
    settle_exports(folder)
    verify_version(folder)  # the old exports/ must be intact: its entries are carried into the new one
    exports = folder / EXPORTS
    tag = uuid.uuid4().hex[:8]
    staging, build = folder / f"{STAGING}{tag}", folder / f"{STAGING}{tag}-exports"
    staging.mkdir()
    try:
        yield staging
        kill_at("exports-built", EXPORT_PHASES)
        build.mkdir()
        replaced = {p.name for p in staging.iterdir()}
        if exports.is_dir():
            for entry in sorted(exports.iterdir()):
                if entry.name != MANIFEST and not entry.name.startswith(".") and entry.name not in replaced:
                    _carry(entry, build / entry.name)
        for src in sorted(staging.iterdir()):
            os.replace(src, build / src.name)
        _write_exports_manifest(build)
        os.replace(build, folder / NEW_EXPORTS)  # complete and sealed: the swap may begin
        kill_at("exports-sealed", EXPORT_PHASES)
        if exports.exists():
            os.replace(exports, folder / OLD_EXPORTS)  # the commit point (see settle_exports)
        kill_at("exports-swapped-out", EXPORT_PHASES)
        os.replace(folder / NEW_EXPORTS, exports)
        kill_at("exports-swapped-in", EXPORT_PHASES)
        _remove(folder / OLD_EXPORTS)
    finally:
        _remove(staging)
        _remove(build)


@contextlib.contextmanager
def editing_version(version_dir: str | Path) -> Iterator[Path]:
    """Change a verified version as a whole: yield an editable copy; on success it is re-sealed and swapped in.

    For the rare in-place change (a refreshed drift reference). A registered version records its manifest's
    hash, so the registry still refuses a copy in it changed this way: register the result as a new version.
    """
    folder = Path(version_dir)
    verify_version(folder)
    with atomic_dir(folder) as tmp:
        shutil.copytree(
            folder, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".staging-*", ".*.old-*")
        )
        yield tmp
        if (tmp / EXPORTS / MANIFEST).is_file() or _files(tmp / EXPORTS, (MANIFEST,), True):
            _write_exports_manifest(tmp / EXPORTS)
        write_manifest(tmp)


def _check(
    folder: Path,
    manifest_file: Path,
    actual: dict[str, Path],
    version: Path,
    only: Callable[[str], bool] = lambda rel: True,
) -> None:
    try:
        manifest = json.loads(manifest_file.read_text())
        listed = {e["path"]: e for e in manifest["files"] if only(e["path"])}
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown format {manifest.get('format')!r}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise VersionError(
            f"{manifest_file} is unreadable or corrupt ({e}); refusing to use {version}."
        ) from None
    missing, extra = sorted(listed.keys() - actual.keys()), sorted(actual.keys() - listed.keys())
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise VersionError(
            f"Version {version} is incomplete: {folder / missing[0]} is missing{more} (listed in "
            f"{manifest_file.name}). Refusing to use it."
        )
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise VersionError(
            f"Version {version} has an extra file {folder / extra[0]}{more} that its "
            f"{manifest_file.name} does not list (added after the version was written). "
            "Refusing to use it."
        )
    for rel in sorted(listed):
        entry, path = listed[rel], actual[rel]
        if path.stat().st_size != entry.get("size") or sha256_file_cached(path) != entry.get("sha256"):
            raise VersionError(
                f"Version {version} was altered: {folder / rel} does not match the hash (sha256, size) "
                f"recorded in {manifest_file.name}. Refusing to use it."
            )


def _not_a_version(folder: Path, why: str) -> VersionError:
    """The error for a folder that is not a version, with the likely fix: the first mistake users make is
    giving a fine-tune's run folder (OUTPUT_DIR) instead of the version inside it (OUTPUT_DIR/version)."""
    inner = folder / "version"
    if (inner / REFIT_JSON).is_file():
        hint = f" It is a run folder: its model version is {inner}."
    elif is_bare_name(str(folder)):
        # `--version champion`: a bare name is most often a registry alias or id
        hint = (
            f" If '{folder}' is a registry alias or id: refit drift and refit benchmark take it as --version "
            "and refit serve (an alias) as --alias, each with --registry.root; the other commands take a "
            f"folder (`refit registry show --version {folder}` prints its path; a registered version is "
            "read-only, so export before registering)."
        )
    else:
        hint = f" Give the folder a fine-tune printed as 'Model version:' (OUTPUT_DIR/version, with {REFIT_JSON})."
    return VersionError(f"{folder} is not a refit model version ({why}).{hint}")


def _verify_main(folder: Path) -> None:
    manifest_file = folder / MANIFEST
    if not manifest_file.is_file() and not (folder / REFIT_JSON).is_file():
        raise _not_a_version(folder, f"no {REFIT_JSON}")
    if not manifest_file.is_file():
        raise VersionError(
            f"{folder} has no {MANIFEST}, so its files cannot be verified; refusing to use it. Versions written "
            "by this refit always have one: re-create it (refit finetune / compress) from its parent."
        )
    _check(folder, manifest_file, _files(folder, _MAIN_SKIP, False), folder)


def verify_version(version_dir: str | Path) -> None:
    """Refuse a version with a missing, extra or altered file (VersionError naming it); exports/ too when sealed.

    Hashes are cached per (path, size, mtime, ctime, inode) within the process, so repeated loads are cheap.
    """
    folder = Path(version_dir)
    if not folder.is_dir():
        raise _not_a_version(folder, "no such folder")
    _verify_main(folder)
    exports = folder / EXPORTS
    if not exports.is_dir() and (folder / OLD_EXPORTS).is_dir():
        for _ in range(20):  # a live swap is between its two renames for microseconds
            time.sleep(0.05)
            if exports.is_dir():
                break
        else:
            raise VersionError(
                f"Version {folder}: an export was killed while swapping in its new exports/ (the old one is "
                f"{folder / OLD_EXPORTS}). Run `refit export --version {folder}` again: it finishes the swap "
                "first. Refusing to use it until then."
            )
    if not exports.is_dir():
        return
    found = _files(exports, (MANIFEST,), True)
    if (exports / MANIFEST).is_file():
        _check(exports, exports / MANIFEST, found, folder)
    elif found:
        first = exports / sorted(found)[0]
        raise VersionError(
            f"Version {folder}: {first} is not covered by {exports / MANIFEST} (exports must be "
            "installed with refit.models.version.update_exports_manifest). Refusing to use it."
        )


def sealed_files(version_dir: str | Path) -> list[str]:
    """The version's files its manifests list, with the manifests themselves, as relative posix paths: what
    to copy or upload when the version is shipped whole. Verified first (VersionError otherwise), so each
    listed file is there as sealed; staging of writes in progress (`.staging-*`, `.exports.old-swap`, hidden
    entries of exports/), which no manifest lists, is never among them."""
    folder = Path(version_dir)
    verify_version(folder)
    out = [MANIFEST]
    for prefix, manifest in (("", folder / MANIFEST), (f"{EXPORTS}/", folder / EXPORTS / MANIFEST)):
        if manifest.is_file():
            out += [prefix + e["path"] for e in json.loads(manifest.read_text())["files"]]
    if (folder / EXPORTS / MANIFEST).is_file():
        out.append(f"{EXPORTS}/{MANIFEST}")
    return sorted(out)


def read_version(version_dir: str | Path, verify: bool = True) -> dict:
    """refit.json of a version, after verifying every file against its manifest (see verify_version)."""
    path = Path(version_dir)
    meta_file = path / REFIT_JSON
    if verify:
        verify_version(path)
    if not meta_file.is_file():
        raise _not_a_version(path, f"no {REFIT_JSON}")
    if not weights_file(path).is_file():
        raise VersionError(f"{path} is incomplete: {weights_file(path)} is missing.")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise VersionError(f"{meta_file} is corrupt ({e.msg}).") from None
    check_record(meta, meta_file)
    return meta


_INT_KEYS = ("max_length", "batch_size", "eval_batch_size")
_TEXT_KEYS = ("train", "validation", "test", "dataset", "text_column", "label_column")


def check_record(meta: object, where: str | Path) -> None:
    """Refuse a refit.json whose keys have the wrong types (VersionError naming the key and the type).

    A manifest proves the file is what was sealed, not that it is well formed: a hand edit that was then
    re-sealed, or a record written by other code, crashed `refit export` and `refit compress` with a
    TypeError/KeyError traceback deep inside (`"max_length": "32"`, `"metrics": "good"`). Only keys that
    are present are checked: older records may lack some.
    """

    def bad(key: str, want: str, got: object) -> VersionError:
        return VersionError(
            f"{where}: '{key}' must be {want}, not {type(got).__name__} {got!r:.80}. The record was edited "
            "or written by other code: restore the version, or re-create it (refit finetune / compress)."
        )

    if not isinstance(meta, dict):
        raise bad("(the whole record)", "a JSON object", meta)
    for key in ("version_id", "parent", "recipe", "base_model"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise bad(key, "a string", meta[key])
    labels = meta.get("labels")
    if labels is not None and (
        not isinstance(labels, list) or not labels or not all(isinstance(v, str) for v in labels)
    ):
        raise bad("labels", "a non-empty list of label names (strings)", labels)
    for key in ("config", "metrics", "data"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise bad(key, "a mapping", meta[key])
    for split, values in (meta.get("metrics") or {}).items():
        if not isinstance(values, dict):
            raise bad(f"metrics.{split}", "a mapping of metric names to numbers", values)
    data = (meta.get("config") or {}).get("data")
    if data is None:
        return
    if not isinstance(data, dict):
        raise bad("config.data", "a mapping", data)
    for key in _INT_KEYS:
        v = data.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            raise bad(f"config.data.{key}", "an integer > 0", v)
    for key in _TEXT_KEYS:
        if data.get(key) is not None and not isinstance(data[key], str):
            raise bad(f"config.data.{key}", "a string (a path or name) or null", data[key])


def load_version(version_dir: str | Path, verify: bool = True):
    """(model, tokenizer, meta) of a version, verified file by file against its manifest first."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    meta = read_version(version_dir, verify=verify)
    folder = Path(version_dir) / "model"
    try:
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise VersionError(f"Cannot load the model in {folder}: {e}") from None
    return model.eval(), tokenizer, meta
