"""`registry_holding`: a registry's version folder is recognised whatever its database path (--db).

Before: only ROOT/registry.db beside ROOT/versions/ was recognised, so the commands that refuse to write into
a registered version (export, benchmark, drift --refresh_reference) wrote into one whose database was
elsewhere. Now every writer leaves ROOT/refit-registry.json naming the database; an old registry without
it still works and gets it at its first open by a writer.
"""

from __future__ import annotations

import json
import stat

from refit.registry import Registry, registry_holding

MARKER = "refit-registry.json"  # the marker every writer leaves at ROOT


def test_a_registry_with_its_database_elsewhere_is_recognised(tmp_path, tiny_versions):
    reg = Registry(tmp_path / "reg", tmp_path / "dbs" / "models.db")
    held = reg.register(tiny_versions[0]).path
    assert registry_holding(held) == reg.root
    marker = reg.root / MARKER
    assert json.loads(marker.read_text())["database"] == str(reg.db_path)
    assert stat.S_IMODE(marker.stat().st_mode) == 0o600
    assert registry_holding(tiny_versions[0]) is None  # a version outside any registry
    assert registry_holding(reg.versions_dir) is None  # versions/ itself is not a version


def test_an_old_registry_without_the_marker_still_works_and_gets_it_from_a_writer(tmp_path, tiny_versions):
    default = Registry(tmp_path / "old")  # ROOT/registry.db: recognised by it even without the marker
    v = default.register(tiny_versions[0])
    (default.root / MARKER).unlink()
    assert registry_holding(v.path) == default.root

    elsewhere = Registry(tmp_path / "reg", tmp_path / "dbs" / "models.db")
    held = elsewhere.register(tiny_versions[1]).path
    (elsewhere.root / MARKER).unlink()  # as an older refit left it
    assert registry_holding(held) is None
    reader = Registry(elsewhere.root, elsewhere.db_path, create=False)
    assert (
        reader.get(held.name).id == held.name and not (elsewhere.root / MARKER).exists()
    )  # reads write nothing
    Registry(elsewhere.root, elsewhere.db_path)  # the next writer to open it leaves the marker
    assert registry_holding(held) == elsewhere.root
