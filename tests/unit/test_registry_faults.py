"""The registry attacked: racing registrations, an id claimed by a different version, a locked database,
version folders with links or missing and extra files. Each held or fails closed, naming what and why."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading

import pytest

from refit.errors import VersionError
from refit.models import write_version
from refit.models.version import write_manifest
from refit.registry import Registry
from refit.registry.store import RegistryError


@pytest.fixture(scope="module")
def versions(tmp_path_factory, tiny_model_dir):
    """v0 and v1: distinct weights; 'fake-v0': v1's weights under v0's id, sealed as if refit wrote it."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).config
    root = tmp_path_factory.mktemp("versions")
    out = {}
    for i in range(2):
        torch.manual_seed(i)
        model = AutoModelForSequenceClassification.from_config(config)
        out[f"v{i}"] = write_version(root / f"v{i}", model, tok, {"version_id": f"v{i}", "recipe": "test"})
    fake = shutil.copytree(out["v1"], root / "fake-v0")
    meta = json.loads((fake / "refit.json").read_text())
    (fake / "refit.json").write_text(json.dumps({**meta, "version_id": "v0"}))
    write_manifest(fake)
    out["fake-v0"] = fake
    return out


def _race(n: int, target) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        try:
            target(i)
        except BaseException as e:  # noqa: BLE001 - collected for the assertions
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.mark.parametrize("trial", range(3))
def test_racing_registrations_of_one_version_install_it_once(tmp_path, versions, trial):
    """Before: of three threads registering the same version, the losers died on sqlite3.IntegrityError
    (a traceback, not a RefitError) after replacing the folder the winner had just registered."""
    root = tmp_path / "registry"
    Registry(root)
    errors = _race(3, lambda i: Registry(root).register(versions["v0"]))
    reg = Registry(root)
    assert errors == [] and [v.id for v in reg.list_versions()] == ["v0"]
    reg.verify("v0")
    assert not [p for p in reg.versions_dir.iterdir() if p.name != "v0"]  # no staging left behind


@pytest.mark.parametrize("trial", range(3))
def test_a_different_version_claiming_a_registered_id_never_touches_its_files(tmp_path, versions, trial):
    """A crafted version with v0's id registered at the same moment as v0: exactly one is registered, the
    other is refused by name, and the registered one's files are its own (verify passes). Before, the
    loser's copy could replace the winner's folder: the registered v0 then failed verification for good."""
    root = tmp_path / "registry"
    Registry(root)
    sources = [versions["v0"], versions["fake-v0"]]
    errors = _race(2, lambda i: Registry(root).register(sources[i]))
    reg = Registry(root)
    assert len(errors) == 1 and isinstance(errors[0], VersionError), errors
    assert "A different version with id v0 is already registered" in str(errors[0])
    reg.verify("v0")


def test_a_locked_database_is_a_clear_error_and_works_again_once_released(tmp_path, versions):
    """Another process holds an exclusive lock on the database: writers and readers (serve's alias poll)
    wait SQLite's busy timeout, then fail with a RegistryError naming the lock, not a traceback; once it
    is released everything reads as before. The lock timeout is shortened (lock_timeout_s) only to keep
    it fast."""
    reg = Registry(tmp_path / "registry")
    reg.register(versions["v0"])
    reg.promote("v0", "first")
    quick = Registry(tmp_path / "registry", lock_timeout_s=0.2)
    quick_reader = Registry(tmp_path / "registry", create=False, lock_timeout_s=0.2)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(60)",
            str(reg.db_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RegistryError, match="locked"):
            quick.promote("v0", "again")
        with pytest.raises(RegistryError, match="locked"):
            quick_reader.resolve("champion")
        # opening it meanwhile (a command starting) says it is busy, never that the database is damaged
        with pytest.raises(RegistryError, match="is locked by another process") as opened:
            Registry(tmp_path / "registry", create=False, lock_timeout_s=0.2)
        assert "Restore it from a backup" not in str(opened.value)
    finally:
        holder.kill()
        holder.wait()
    assert Registry(tmp_path / "registry", create=False).resolve("champion") == "v0"


@pytest.mark.parametrize(
    "damage",
    ["missing file", "extra file", "link to a file outside", "link to a folder outside", "folder is a link"],
)
def test_damaged_version_folders_are_refused_naming_the_file(tmp_path, versions, damage):
    reg = Registry(tmp_path / "registry")
    path = reg.register(versions["v0"]).path
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not part of any version")
    if damage == "missing file":
        (path / "model" / "tokenizer.json").unlink()
    elif damage == "extra file":
        (path / "model" / "extra.bin").write_bytes(b"x")
    elif damage == "link to a file outside":
        (path / "model" / "tokenizer.json").unlink()
        os.symlink(outside / "secret.txt", path / "model" / "tokenizer.json")
    elif damage == "link to a folder outside":
        os.symlink(outside, path / "reference-extra")
    else:  # the whole version folder replaced by a link to a look-alike outside the registry
        moved = shutil.copytree(path, outside / "v0")
        (moved / "model" / "extra.bin").write_bytes(b"x")
        shutil.rmtree(path)
        os.symlink(moved, path)
    with pytest.raises(VersionError) as refused:
        reg.get("v0")
    message = str(refused.value)
    assert "v0" in message and "Refusing" in message
    assert {"missing file": "tokenizer.json", "extra file": "extra.bin"}.get(damage, "") in message


@pytest.mark.parametrize("change", ["re-sealed swap", "added after registration"])
def test_exports_changed_and_re_sealed_after_registration_are_refused(tmp_path, versions, change):
    """Before: the registry pinned only the main manifest. exports/ carries its own manifest, so rewriting
    exports/parity.json (the tolerance serve checks an export against) or dropping in a new model.onnx and
    re-sealing exports/manifest.json passed every check. Now the exports manifest is pinned too."""
    from refit.models import update_exports_manifest

    source = shutil.copytree(versions["v1"], tmp_path / "v1")
    if change == "re-sealed swap":
        (source / "exports").mkdir(exist_ok=True)
        (source / "exports" / "parity.json").write_text(json.dumps({"model.onnx": {"parity": {}}}))
        update_exports_manifest(source, ["parity.json"])
    reg = Registry(tmp_path / "registry")
    path = reg.register(source).path
    reg.get("v1")  # as registered: fine
    loose = {"model.onnx": {"parity": {"max_abs_diff": 1e9, "argmax_agreement": 0.0}}}
    (path / "exports").mkdir(exist_ok=True)
    (path / "exports" / "parity.json").write_text(json.dumps(loose))
    update_exports_manifest(path, ["parity.json"])
    with pytest.raises(VersionError, match="exports is not what was registered"):
        reg.get("v1")


def test_versions_registered_before_exports_were_pinned_still_load(tmp_path, versions):
    reg = Registry(tmp_path / "registry")
    reg.register(versions["v0"])
    with sqlite3.connect(reg.db_path) as db:
        db.execute("UPDATE versions SET exports_manifest_sha256 = NULL")
    reg.get("v0")


def test_the_registry_and_the_version_writer_share_one_fault_hook_that_refuses_a_misspelt_phase(monkeypatch):
    """The registry had its own copy of the SIGKILL hook; now both call refit.models.version.kill_at, whose
    table check makes a misspelt phase fail loudly (before, it silently never fired)."""
    import refit.registry.store as store
    from refit.models.version import EXPORT_PHASES, kill_at
    from refit.registry.store import FAULT_PHASES

    assert store.kill_at is kill_at
    monkeypatch.setenv("REFIT_FAULT_AT", "alias-moved")
    kill_at("alias-verified", FAULT_PHASES)  # another phase: nothing happens, the test goes on
    for phase, table in (("alias-moveed", FAULT_PHASES), ("exports-build", EXPORT_PHASES)):
        with pytest.raises(ValueError, match=f"unknown fault phase '{phase}'"):
            kill_at(phase, table)
