"""A registry root is opened only with the database its marker (ROOT/refit-registry.json) names.

Before: `--db OTHER.db` on a root whose marker named another database opened (or created) OTHER.db over
the same ROOT/versions/: two databases then both believed they owned those folders (each registering,
pinning and gc-ing what the other held rows for). Now that open is refused, naming both databases and
how to proceed; a registry without a marker (made by an older refit) still opens, and a registry copied
or moved whole still opens at its new place (a database inside the root is named relative to it).
"""

from __future__ import annotations

import json
import shutil

import pytest

from refit.cli import main
from refit.registry import Registry, RegistryError

MARKER = "refit-registry.json"


def _refused(root, db, *, create=True) -> str:
    with pytest.raises(RegistryError) as e:
        Registry(root, db, create=create)
    return str(e.value)


def test_a_second_database_on_a_root_is_refused_naming_both(tmp_path, tiny_versions, capsys):
    reg = Registry(tmp_path / "reg")  # the default ROOT/registry.db, named by the marker
    reg.register(tiny_versions[0])
    other = tmp_path / "other.db"
    # one that does not exist yet was already refused, not created (the marker's advice, s9)
    message = _refused(reg.root, other)
    assert f"says the database is {reg.db_path}" in message and not other.exists(), message

    # one that exists (made for another root, or by hand): opened over this root's versions before
    Registry(tmp_path / "elsewhere", other).register(tiny_versions[1])
    before = other.read_bytes()
    for create in (True, False):  # a writer and a reader alike
        message = _refused(reg.root, other, create=create)
        assert f"belongs to the database {reg.db_path} (its {MARKER} names it)" in message, message
        assert f"not to {other} (given with --db)" in message and f"--db {reg.db_path}" in message
    assert other.read_bytes() == before
    assert [v.id for v in Registry(reg.root).list_versions()] == ["v0"]  # its own database still opens it

    # through the CLI: exit 2, the message, no traceback
    assert main(["registry", "list", "--root", str(reg.root), "--db", str(other)]) == 2
    err = capsys.readouterr().err
    assert str(reg.db_path) in err and str(other) in err and "Traceback" not in err, err


def test_the_default_database_on_a_root_whose_marker_names_one_elsewhere_is_refused(tmp_path, tiny_versions):
    db = tmp_path / "dbs" / "models.db"
    reg = Registry(tmp_path / "reg", db)
    reg.register(tiny_versions[0])
    assert f"says the database is {db}" in _refused(reg.root, None)  # missing: refused already (s9)
    assert not (reg.root / "registry.db").exists()
    shutil.copy(db, reg.root / "registry.db")  # a stale copy of the database left in the root
    reg.register(tiny_versions[1])  # ... which the real one moves on from
    message = _refused(reg.root, None)
    assert f"belongs to the database {db}" in message and "(the default, no --db given)" in message


def test_a_marker_naming_a_database_that_is_gone_is_refused_until_the_marker_is_removed(
    tmp_path, tiny_versions
):
    db = tmp_path / "dbs" / "models.db"
    reg = Registry(tmp_path / "reg", db)
    reg.register(tiny_versions[0])
    moved = tmp_path / "moved.db"
    shutil.move(db, moved)  # the user moved the database
    message = _refused(reg.root, moved)
    assert f"belongs to the database {db}, which no longer exists" in message, message
    assert f"delete {reg.root / MARKER}" in message
    (reg.root / MARKER).unlink()  # as the message says
    assert [v.id for v in Registry(reg.root, moved).list_versions()] == ["v0"]
    assert json.loads((reg.root / MARKER).read_text())["database"] == str(moved)


def test_a_registry_without_a_marker_still_opens_with_its_database(tmp_path, tiny_versions):
    db = tmp_path / "dbs" / "models.db"
    reg = Registry(tmp_path / "reg", db)
    reg.register(tiny_versions[0])
    (reg.root / MARKER).unlink()  # as an older refit left it
    assert [v.id for v in Registry(reg.root, db, create=False).list_versions()] == ["v0"]
    assert not (reg.root / MARKER).exists()  # a reader writes nothing
    Registry(reg.root, db)  # a writer leaves the marker, naming this database
    assert json.loads((reg.root / MARKER).read_text())["database"] == str(db)
    assert f"says the database is {db}" in _refused(reg.root, tmp_path / "third.db")


def test_a_registry_copied_whole_opens_at_its_new_place(tmp_path, tiny_versions):
    """A backup restored elsewhere: its marker names the database relative to the root, so the copy
    names its own database, not the original's (which still exists beside it)."""
    reg = Registry(tmp_path / "reg")
    reg.register(tiny_versions[0])
    assert json.loads((reg.root / MARKER).read_text())["relative"] == "registry.db"
    copy = shutil.copytree(reg.root, tmp_path / "restored")
    assert [v.id for v in Registry(copy, create=False).list_versions()] == ["v0"]
    Registry(copy).register(tiny_versions[1])
    assert [v.id for v in Registry(reg.root).list_versions()] == ["v0"]  # the original is untouched
    assert "belongs to the database" in _refused(copy, reg.db_path)  # nor opened with the original's


@pytest.mark.parametrize("damage", ["not json", "no database", "a link", "a folder"])
def test_a_marker_that_cannot_be_read_is_refused_not_taken_for_none(tmp_path, tiny_versions, damage):
    """Before: a marker that could not be read was taken for no marker, so the root opened with any
    database (the fail-open the marker exists to stop). Now it is refused, naming the marker."""
    reg = Registry(tmp_path / "reg")
    reg.register(tiny_versions[0])
    marker = reg.root / MARKER
    marker.unlink()
    if damage == "not json":
        marker.write_text("{half a marker")
    elif damage == "no database":
        marker.write_text(json.dumps({"format": "refit-registry/1"}))
    elif damage == "a link":
        (tmp_path / "planted.json").write_text(json.dumps({"database": str(tmp_path / "other.db")}))
        marker.symlink_to(tmp_path / "planted.json")
    else:
        marker.mkdir()
    other = tmp_path / "other.db"
    for db in (None, other):
        message = _refused(reg.root, db)
        assert f"The registry marker {marker} cannot be read" in message, message
    assert not other.exists()
