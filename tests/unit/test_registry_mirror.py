"""The W&B mirror logs a version's sealed files only: those its manifests list, and the manifests.

Before: `artifact.add_dir(version)` (the registry's mirror and a fine-tune's version artifact) took the whole
folder, staging of a write in progress included (`.staging-*` and `.exports.old-swap` of an export,
`exports/.NAME.tmp-*`, `exports/.NAME.old-*`), none of which any load of the version accepts. Real W&B,
offline.
"""

from __future__ import annotations

import json

import pytest

from refit.registry.mirror import mirror_alias
from tests.conftest import sealed_files_version

pytest.importorskip("wandb", reason="needs wandb (the [dev] extra)")

STAGING = (  # what an export in progress leaves inside a version; no manifest lists any of it
    ".staging-exports.new/model.onnx",
    ".exports.old-swap/model.onnx",
    "exports/.model.onnx.tmp-1a2b3c4d",
    "exports/.onnx.old-1a2b3c4d/model.onnx",
)


@pytest.fixture
def version(tmp_path):
    """A sealed version with sealed exports and, inside it, the staging of writes in progress."""
    v = sealed_files_version(tmp_path)
    for rel in STAGING:
        (v / rel).parent.mkdir(parents=True, exist_ok=True)
        (v / rel).write_bytes(b"half-written")
    return v


def _listed(v) -> set[str]:
    main = json.loads((v / "manifest.json").read_text())["files"]
    exports = json.loads((v / "exports" / "manifest.json").read_text())["files"]
    return (
        {e["path"] for e in main}
        | {f"exports/{e['path']}" for e in exports}
        | {
            "manifest.json",
            "exports/manifest.json",
        }
    )


def test_the_artifact_holds_the_manifest_listed_files_only(version):
    from refit.models.version import sealed_files
    from refit.tracking import version_artifact  # what the mirror and a fine-tune's artifact are built by

    expected = _listed(version)
    assert "model/model.safetensors" in expected and "exports/model.onnx" in expected
    assert set(sealed_files(version)) == expected
    artifact = version_artifact("refit-model", version, {"version_id": "v"})
    assert set(artifact.manifest.entries) == expected


def test_the_registry_mirror_logs_no_staging(version, tmp_path, monkeypatch):
    """mirror_alias into a real offline run: the run's log names every sealed file and no staging one."""
    monkeypatch.setenv("WANDB_SILENT", "true")
    folder = mirror_alias(tmp_path / "out", version, "v1", "champion", "test", "offline", "refit-test")
    logged = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*.wandb"))
    assert folder and logged
    for rel in _listed(version):
        assert rel.encode() in logged, rel
    for rel in STAGING:
        hidden = next(part for part in rel.split("/") if part.startswith("."))
        assert hidden.encode() not in logged, rel
