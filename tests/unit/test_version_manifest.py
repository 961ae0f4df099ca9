"""Whole-version integrity: every file is in manifest.json and every load verifies it (issue #9 item 2)."""

from __future__ import annotations

import json
import shutil

import pytest

import refit.io
from refit.errors import VersionError
from refit.models import (
    MANIFEST,
    adding_exports,
    editing_version,
    load_version,
    read_version,
    update_exports_manifest,
    verify_version,
    write_manifest,
    write_version,
)
from refit.registry import Registry


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return (
        AutoModelForSequenceClassification.from_pretrained(tiny_model_dir),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, model_and_tok):
    import torch

    from refit.drift.reference import Reference, fit_states

    reference = fit_states(
        Reference(
            torch.randn(12, 4), torch.rand(12, 2), [f"text {i}" for i in range(12)], {"split": "validation"}
        ),
        0,
    )
    root = tmp_path_factory.mktemp("pristine")
    return write_version(root / "v", *model_and_tok, {"version_id": "v1", "recipe": "test"}, reference)


@pytest.fixture
def version(tmp_path, pristine):
    return shutil.copytree(pristine, tmp_path / "v")


def _listed(version) -> dict[str, dict]:
    return {e["path"]: e for e in json.loads((version / MANIFEST).read_text())["files"]}


def test_manifest_lists_every_file_with_hash_and_size(version):
    manifest = json.loads((version / MANIFEST).read_text())
    assert manifest["format"] == "refit-manifest/1" and manifest["algorithm"] == "sha256"
    on_disk = {p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file()}
    expected = {p for p in on_disk if p != MANIFEST and not p.startswith("exports/")}
    listed = _listed(version)
    assert set(listed) == expected
    assert {
        "refit.json",
        "model/model.safetensors",
        "model/config.json",
        "model/tokenizer.json",
        "reference/embeddings.safetensors",
        "reference/detector.json",
    } <= expected  # detector state is sealed too
    for rel, entry in listed.items():
        assert entry["size"] == (version / rel).stat().st_size
        assert entry["sha256"] == refit.io.sha256_file(version / rel)
    assert list((version / "exports").iterdir()) == []  # sealed when the first export is installed


def _files_of(pristine) -> list[str]:
    return sorted(_listed(pristine))


@pytest.mark.parametrize("loader", [read_version, verify_version])
@pytest.mark.parametrize("damage", ["delete", "alter", "truncate"])
def test_every_file_removed_or_altered_is_refused_by_name(tmp_path, pristine, loader, damage):
    """The corruption matrix: each listed file x {deleted, one byte flipped, emptied}."""
    for rel in _files_of(pristine):
        version = shutil.copytree(pristine, tmp_path / f"{damage}-{rel.replace('/', '_')}")
        target = version / rel
        if damage == "delete":
            target.unlink()
        elif damage == "alter":
            data = bytearray(target.read_bytes())
            data[len(data) // 2] ^= 0x01
            target.write_bytes(bytes(data))
        else:
            target.write_bytes(b"")
        with pytest.raises(VersionError) as err:
            loader(version)
        assert str(target) in str(err.value), (rel, str(err.value))


def test_deleted_tokenizer_is_refused_by_load_version(version):
    (version / "model" / "tokenizer.json").unlink()
    with pytest.raises(VersionError, match=r"model/tokenizer\.json is missing"):
        load_version(version)


def test_extra_file_is_refused(version):
    (version / "model" / "added_tokens.json").write_text("{}")
    with pytest.raises(VersionError, match=r"extra file .*model/added_tokens\.json"):
        load_version(version)


def test_no_manifest_is_refused(version):
    (version / MANIFEST).unlink()
    with pytest.raises(VersionError, match=r"has no manifest\.json"):
        read_version(version)


def test_removing_the_weights_hash_from_refit_json_does_not_switch_checks_off(version):
    meta = json.loads((version / "refit.json").read_text())
    del meta["weights_sha256"]
    (version / "refit.json").write_text(json.dumps(meta))
    with pytest.raises(VersionError, match=r"refit\.json does not match the hash"):
        read_version(version)


def test_corrupt_manifest_is_refused(version):
    (version / MANIFEST).write_text("{not json")
    with pytest.raises(VersionError, match="manifest.json is unreadable or corrupt"):
        verify_version(version)


def test_exports_are_sealed_and_verified(version):
    with adding_exports(version) as staging:
        (staging / "model.onnx").write_bytes(b"onnx bytes")
        (staging / "parity.json").write_text("{}")
    assert not list((version / "exports").glob(".staging-*"))
    verify_version(version)
    listed = {e["path"] for e in json.loads((version / "exports" / MANIFEST).read_text())["files"]}
    assert listed == {"model.onnx", "parity.json"}
    (version / "exports" / "model.onnx").write_bytes(b"tampered!!")
    with pytest.raises(VersionError, match=r"exports/model\.onnx does not match the hash"):
        load_version(version)


def test_export_installed_without_resealing_is_refused_until_sealed(version):
    (version / "exports" / "model.int8.onnx").write_bytes(b"int8")
    with pytest.raises(VersionError, match=r"exports/model\.int8\.onnx is not covered"):
        read_version(version)
    update_exports_manifest(version, ["model.int8.onnx"])
    (version / "exports" / "model.plan").write_bytes(b"plan")
    with pytest.raises(VersionError, match=r"extra file .*exports/model\.plan"):
        read_version(version)
    update_exports_manifest(version, [version / "exports" / "model.plan"])
    read_version(version)
    (version / "exports" / MANIFEST).unlink()
    with pytest.raises(VersionError, match=r"exports/model\.int8\.onnx is not covered"):
        read_version(version)


def test_an_entry_given_relative_to_the_current_folder_is_sealed_by_its_name(version, monkeypatch):
    """`refit export --version runs/demo/version` hands the sealer cwd-relative paths: the entry is the
    one inside exports/, not a top-level 'runs' entry (which left the real file unsealed and refused)."""
    monkeypatch.chdir(version.parent.parent)
    relative = version.relative_to(version.parent.parent) / "exports" / "model.cwd.onnx"
    relative.write_bytes(b"cwd")
    update_exports_manifest(version, [relative])
    read_version(version)
    listed = {e["path"] for e in json.loads((version / "exports" / MANIFEST).read_text())["files"]}
    assert "model.cwd.onnx" in listed


def test_failed_export_changes_nothing(version):
    with adding_exports(version) as staging:
        (staging / "model.onnx").write_bytes(b"first")
    before = (version / "exports" / MANIFEST).read_bytes()
    with pytest.raises(RuntimeError), adding_exports(version) as staging:
        (staging / "model.onnx").write_bytes(b"half")
        raise RuntimeError("gate failed")
    assert sorted(p.name for p in (version / "exports").iterdir()) == [MANIFEST, "model.onnx"]
    assert (version / "exports" / MANIFEST).read_bytes() == before
    verify_version(version)


def test_exports_cannot_rebless_an_altered_version(version):
    (version / "model" / "config.json").write_text("{}")
    with pytest.raises(VersionError, match="config.json"):
        update_exports_manifest(version, [])


def test_editing_version_reseals(version):
    with editing_version(version) as tmp:
        (tmp / "reference" / "texts.jsonl").write_text('{"text": "new"}\n')
    verify_version(version)
    assert _listed(version)["reference/texts.jsonl"]["size"] == len('{"text": "new"}\n')


def test_hashes_are_computed_once_per_unchanged_file(version, monkeypatch):
    calls = []
    real = refit.io.sha256_file
    monkeypatch.setattr(refit.io, "sha256_file", lambda p: calls.append(p) or real(p))
    verify_version(version)
    first = len(calls)
    verify_version(version)
    read_version(version)
    assert len(calls) == first  # nothing re-hashed
    (version / "model" / "config.json").write_text(
        (version / "model" / "config.json").read_text()
    )  # same bytes
    verify_version(version)
    assert len(calls) == first + 1  # only the rewritten file, which is still intact


def test_registry_refuses_a_registered_version_changed_and_resealed(tmp_path, version):
    reg = Registry(tmp_path / "reg")
    stored = reg.register(version).path
    (stored / "model" / "config.json").write_text("{}")
    write_manifest(stored)  # a consistent-looking version, but not the one that was registered
    with pytest.raises(VersionError, match="not the manifest recorded at registration"):
        reg.get("v1")
    with pytest.raises(VersionError, match="corrupt or was altered"):
        reg.promote("v1", "x")
    assert reg.aliases() == {}


def test_drift_refresh_reference_keeps_the_version_sealed(tmp_path, model_and_tok, capsys):
    """`refit drift --refresh_reference` rewrites reference/ through editing_version: still verifiable after."""
    from refit.cli import main
    from refit.drift.reference import Reference, fit_states
    from refit.models import encode_texts

    model, tok = model_and_tok
    texts = [f"a short review number {i}" for i in range(12)]
    encoded = encode_texts(model, tok, texts, 8, 32)
    meta = {"split": "validation", "pooling": "mean", "layer": -1, "max_length": 32}
    version = write_version(
        tmp_path / "v",
        model,
        tok,
        {"version_id": "v1", "recipe": "test", "labels": ["a", "b"]},
        fit_states(Reference(encoded.embeddings, encoded.probs, texts, meta), 0),
    )
    before = _listed(version)["reference/reference.json"]["sha256"]
    assert main(["drift", "--version", str(version), "--refresh_reference", "--tracking.wandb", "false"]) == 0
    verify_version(version)
    load_version(version)
    assert json.loads((version / "reference" / "reference.json").read_text())["refreshed_at"]
    assert (
        _listed(version)["reference/reference.json"]["sha256"] != before
    )  # rewritten, and the manifest follows
    assert "reference/detector.json" in _listed(version)


def test_registering_different_content_under_a_taken_id_is_refused(tmp_path, version, model_and_tok):
    reg = Registry(tmp_path / "reg")
    reg.register(version)
    reg.register(version)  # the same version again: a no-op
    impostor = write_version(tmp_path / "other", *model_and_tok, {"version_id": "v1", "recipe": "impostor"})
    with pytest.raises(VersionError, match="A different version with id v1 is already registered"):
        reg.register(impostor)
    assert read_version(reg.get("v1").path)["recipe"] == "test"


def test_resealing_exports_never_blesses_an_altered_artefact(version):
    with adding_exports(version) as staging:
        (staging / "model.onnx").write_bytes(b"onnx")
    (version / "exports" / "model.onnx").write_bytes(b"evil")  # altered behind refit's back
    (version / "exports" / "benchmark.json").write_text("{}")
    with pytest.raises(VersionError, match=r"exports/model\.onnx does not match the hash"):
        update_exports_manifest(version, ["benchmark.json"])
    (version / "exports" / "stray.bin").write_bytes(b"?")
    with pytest.raises(VersionError, match=r"extra file .*exports/stray\.bin"):
        update_exports_manifest(version, ["benchmark.json", "model.onnx"])
    update_exports_manifest(version, ["benchmark.json", "model.onnx", "stray.bin"])  # all declared: sealed
    verify_version(version)
    with pytest.raises(VersionError, match="not inside"):
        update_exports_manifest(version, [version / "model" / "config.json"])
