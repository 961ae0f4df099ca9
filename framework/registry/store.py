"""The model registry: version folders plus one SQLite database of versions, aliases and an audit log.

`Registry` is the one way in: opening the registry, registering and verifying versions, moving aliases,
removing what gc chose, and the runs table. It calls the owners of the parts: the database file (db.py),
the audit log and the aliases it vouches for (audit.py, chain.py), the folder and its staging
(layout.py); what gc may remove is gc.py's. Every alias move is one compare-and-swap transaction that
also appends its audit row, so the log and the aliases can never disagree. Rollback is itself an alias
move, and is audited like any other.

Fail closed: read-only use (`create=False`) never creates anything; a missing, zero-byte or corrupt
database is an error, never silently rebuilt; every version is verified against its manifest (and the
manifest against the hash recorded at registration) before anything uses or points at it.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path

from refit.errors import VersionError
from refit.io import check_name, child_path, make_private, private_dir, sha256_file
from refit.models.version import MANIFEST, kill_at, read_version, verify_version, weights_file
from refit.registry import audit
from refit.registry import db as database
from refit.registry.audit import (
    CHALLENGER,
    CHAMPION,
    AliasMove,
    Checked,
    Superseded,
    alias_states,
    append_move,
    logged_aliases,
    previous_holder,
    tampered,
    to_move,
)
from refit.registry.chain import check_chain
from refit.registry.db import NoRegistry, RegistryError
from refit.registry.layout import (
    MARKER,
    STALE_AFTER_S,
    install,
    is_staging,
    marker_database,
    registry_holding,
    stale_staging,
    write_marker,
)

__all__ = [
    "Registry",
    "RegisteredVersion",
    "AliasMove",
    "Superseded",
    "RegistryError",
    "NoRegistry",
    "CHAMPION",
    "CHALLENGER",
    "STALE_AFTER_S",
    "FAULT_PHASES",
    "MARKER",
    "registry_holding",
]

EXPORT_WAIT_S = 600.0  # registering waits this long for an export of the version to finish
# Test hooks: REFIT_FAULT_AT=<phase> SIGKILLs the process there (refit.models.version.kill_at).
FAULT_PHASES = ("alias-verified", "alias-moved", "gc-row-removed", "gc-folder-moved")


@dataclass(frozen=True)
class RegisteredVersion:
    id: str
    path: Path
    parent: str | None
    recipe: str | None
    created_at: str | None
    registered_at: str
    weights_sha256: str
    metrics: dict
    withdrawn: str | None = None  # why no alias may be moved to it again (Registry.start_run's `withdraw`)


class Registry:
    """A folder `root/` with `versions/<id>/` and `registry.db` (or a database path of your choosing).

    `create=True` (writers: register, promote, maintain) makes the folder and database when they do not
    exist yet; `create=False` (list, show, history, verify, resolve) requires an existing registry and
    writes nothing. Paths are resolved to absolute ones at open, so a relative root works from anywhere.
    """

    def __init__(
        self,
        root: str | Path,
        db_path: str | Path | None = None,
        *,
        create: bool = True,
        must_exist: bool = False,
        lock_timeout_s: float = 30.0,
    ) -> None:
        """Open the registry at `root`. `create=False` opens an existing one read-only (inspecting commands);
        `must_exist=True` opens an existing one for writing and refuses a missing one (NoRegistry) instead of
        creating it: a job that needs a champion must not start an empty registry at a misspelt path.
        `lock_timeout_s` is how long a call waits for another process's lock before it fails (see
        `with_lock_timeout` for a caller that must answer sooner)."""
        self.lock_timeout_s = lock_timeout_s
        # How far this process has checked the audit log (see `_logged_aliases`); a dict so that the copies
        # `with_lock_timeout` makes share it.
        self._checked: dict[str, Checked] = {}
        self.root = Path(root).expanduser().resolve()
        self.versions_dir = self.root / "versions"
        self.db_path = Path(db_path).expanduser().resolve() if db_path else self.root / "registry.db"
        self.writable = create
        for path, what in ((self.root, "folder"), (self.versions_dir, "folder")):
            if path.exists() and not path.is_dir():  # a writer's mkdir would raise NotADirectoryError
                raise RegistryError(f"The registry {what} {path} is not a folder. Check --root.")
        if self.db_path.exists() and not self.db_path.is_file():  # a folder or FIFO: not "missing"
            raise RegistryError(
                f"The registry database {self.db_path} is not a regular file (a folder, FIFO or device). "
                "Check --db (and --root)."
            )
        if not self.db_path.is_file():
            self._refuse_missing_db(create and not must_exist)
        self._refuse_other_database()
        if not self.db_path.is_file():
            private_dir(self.versions_dir)
            private_dir(self.db_path.parent)
            database.create(self.db_path)
        database.check(self.db_path, self.writable, self.lock_timeout_s, self.versions_dir)
        if create:
            private_dir(self.versions_dir)
            write_marker(self.root, self.db_path)
            self.clean_staging()

    def with_lock_timeout(self, seconds: float) -> Registry:
        """This registry (same paths, nothing reopened) whose calls wait at most `seconds` for a lock: for a
        request that must answer promptly (serve's /admin/reload) while other callers keep the default."""
        other = copy.copy(self)
        other.lock_timeout_s = seconds
        return other

    def _refuse_missing_db(self, create: bool) -> None:
        versions = (
            [p for p in self.versions_dir.iterdir() if not is_staging(p.name)]
            if self.versions_dir.is_dir()
            else []
        )
        named = marker_database(self.root)
        if named is not None and named.is_file() and named.resolve() != self.db_path.resolve():
            raise RegistryError(
                f"The registry {self.root} has no database {self.db_path}: its {MARKER} says the database is "
                f"{named}. Give it with --db {named} (--registry.db for serve, maintain, drift and benchmark)."
            )
        if versions:
            raise RegistryError(
                f"The registry {self.root} holds {len(versions)} version folder(s) in {self.versions_dir} but its "
                f"database {self.db_path} is missing. Refusing to start an empty one over them (the aliases and "
                "audit log would be lost). Restore the database from a backup, or move versions/ aside and "
                "re-register each version with `refit registry register --version DIR`."
            )
        if not create:
            what = "no such folder" if not self.root.exists() else f"no database {self.db_path}"
            raise NoRegistry(
                f"No registry at {self.root} ({what}); `refit registry register --version DIR` creates one."
            )

    def _refuse_other_database(self) -> None:
        """Refuse a database other than the one ROOT/refit-registry.json names, whether or not that one still
        exists: two databases would both believe they own ROOT/versions/ (each registering, pinning and
        gc-ing folders the other holds rows for). A root without a marker (an older registry) opens with
        any database, and its first writer names that one."""
        named = marker_database(self.root)
        if named is None or named.expanduser().resolve() == self.db_path:
            return
        given = (
            f"{self.db_path} (the default, no --db given)"
            if self.db_path == self.root / "registry.db"
            else f"{self.db_path} (given with --db)"
        )
        state = "" if named.is_file() else ", which no longer exists"
        raise RegistryError(
            f"The registry {self.root} belongs to the database {named}{state} (its {MARKER} names it), not to "
            f"{given}. Refusing to open it with a second database: both would claim the version folders in "
            f"{self.versions_dir}. Give --db {named} (--registry.db for serve, maintain and drift) to use "
            f"this registry, or a new --root for a new one. If you moved the database to {self.db_path} on "
            f"purpose, delete {self.root / MARKER}; the next command that writes names the new one."
        )

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        """One transaction on the database (refit.registry.db.transaction)."""
        return database.transaction(self.db_path, self.writable, self.lock_timeout_s)

    def _require_writable(self, what: str) -> None:
        if not self.writable:
            raise RegistryError(f"The registry {self.root} was opened read-only; cannot {what}.")

    # --- versions ----------------------------------------------------------------------------------
    def register(self, version_dir: str | Path) -> RegisteredVersion:
        """Copy a finished, verified version into the registry (atomically); record its manifest's hash.

        The copy is staged and verified outside any lock; then one write transaction checks the id is still
        free, renames the copy into place and inserts its row. So of two registrations racing for one id,
        one installs and the other finds it registered: before, the loser replaced the winner's folder
        after the winner's row was in (a crafted version with a registered id overwrote that version's
        files) and then died on the UNIQUE constraint with a traceback. The hashes recorded are those of
        the verified copy, taken before it is visible.
        """
        self._require_writable("register a version")
        source = Path(version_dir).expanduser().resolve()
        meta = read_version(source)  # verifies every file against the manifest
        vid = check_name(meta.get("version_id"), "version id", source / "refit.json")
        dest = child_path(self.versions_dir, vid)
        existing = self._row(vid)
        if existing is not None:
            self._same_version(existing, vid, sha256_file(source / MANIFEST))
            return self.get(vid)
        staged = self._stage(source, vid) if source != dest else None
        folder = staged or dest
        try:
            if staged is not None:
                meta = read_version(staged, verify=False)  # the copy's own refit.json, verified with it
            manifest_sha, weights_sha = sha256_file(folder / MANIFEST), sha256_file(weights_file(folder))
            exports_sha = _exports_sha(folder)
            with self._tx() as db:  # BEGIN IMMEDIATE: one registration of an id at a time
                row = db.execute("SELECT * FROM versions WHERE id = ?", (vid,)).fetchone()
                if row is not None:
                    self._same_version(row, vid, manifest_sha)
                else:
                    if staged is not None:
                        install(staged, dest)
                    db.execute(
                        "INSERT INTO versions (id, path, parent, recipe, created_at, registered_at, weights_sha256,"
                        " metrics, manifest_sha256, exports_manifest_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            vid,
                            str(dest),
                            meta.get("parent"),
                            meta.get("recipe"),
                            meta.get("created_at"),
                            database.now(),
                            weights_sha,
                            json.dumps(meta.get("metrics", {})),
                            manifest_sha,
                            exports_sha,
                        ),
                    )
        finally:
            if staged is not None and staged.exists():
                shutil.rmtree(staged, ignore_errors=True)
        return self.get(vid)

    @staticmethod
    def _same_version(row: sqlite3.Row, vid: str, manifest_sha: str) -> None:
        if row["manifest_sha256"] not in (None, manifest_sha):
            raise VersionError(f"A different version with id {vid} is already registered; not replacing it.")

    def _stage(self, source: Path, vid: str) -> Path:
        """A private, verified copy of `source` in a staging folder of versions/ (`gc` removes a killed one)."""
        from refit.export.lock import exports_read_lock  # here: refit.export costs 0.5 s of imports

        staged = self.versions_dir / f".{vid}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            # under the version's shared export lock: an export swaps a new exports/ in by two renames, and
            # a copy made between them verified without any exports/ (registered without them)
            with exports_read_lock(source, EXPORT_WAIT_S):
                shutil.copytree(
                    source, staged, ignore=shutil.ignore_patterns(".staging-*", ".*.old-*", ".*.tmp-*")
                )
            # copytree gives the copy the source's mtime: a version written over STALE_AFTER_S ago made its
            # staging look stale at once, and any writer opening the registry meanwhile deleted it mid-register.
            os.utime(staged)
            make_private(staged)
            verify_version(staged)  # the copy is whole (and the source did not change while copied)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return staged

    def _row(self, version_id: str) -> sqlite3.Row | None:
        with self._tx() as db:
            return db.execute("SELECT * FROM versions WHERE id = ?", (version_id,)).fetchone()

    def _to_version(self, row: sqlite3.Row) -> RegisteredVersion:
        # The folder is derived from the validated id under this root, never read back from the database.
        path = child_path(
            self.versions_dir, check_name(row["id"], "version id", f"{self.db_path} (versions table)")
        )
        metrics = self._json(row["metrics"], f"the metrics of version {row['id']}")
        if not isinstance(metrics, dict):
            raise RegistryError(
                database.edited(self.db_path, f"the metrics of version {row['id']} are not a JSON object")
            )
        return RegisteredVersion(
            row["id"],
            path,
            row["parent"],
            row["recipe"],
            row["created_at"],
            row["registered_at"],
            row["weights_sha256"],
            metrics,
            # a reader of a registry not yet migrated has no such column (`in row` would test the values)
            row["withdrawn"] if "withdrawn" in row.keys() else None,  # noqa: SIM118
        )

    def _json(self, text: str | None, what: str):
        return database.parse_json(self.db_path, text, what)

    def check_audit(self, doing: str) -> None:
        """RegistryError unless the audit log's hash chain is intact and the aliases are what it says.

        Rollback and gc decide from the log (the version to step back to; the champions to keep): a row
        edited by hand once made rollback promote a version that had never been champion, and an alias
        row deleted by hand let gc remove the version the log says is champion."""
        rows = self.audit_rows()
        problems = [p.message for p in check_chain(rows)[0]]
        problems += [
            f"alias '{a}' points at {have or 'nothing'} but the audit log says {want or 'nothing'}"
            for a, want, have in alias_states(rows, self.aliases())
            if want != have
        ]
        if problems:
            raise RegistryError(self._tampered(problems, doing))

    def _tampered(self, problems: list[str], doing: str) -> str:
        return tampered(self.db_path, self.root, problems, doing)

    def _logged_aliases(self, db: sqlite3.Connection, doing: str) -> dict[str, str]:
        """The aliases as the audit log says they are now, its hash chain checked (RegistryError if broken);
        only the rows since this process's last check are read (refit.registry.audit.logged_aliases)."""
        aliases, problems = logged_aliases(db, self._checked)
        if problems:
            raise RegistryError(self._tampered(problems, doing))
        return aliases

    def resolve(self, ref: str) -> str:
        """A version id from an id or an alias; an alias only if it agrees with the audit log (RegistryError)."""
        try:
            check_name(ref, "version id or alias")
        except VersionError as e:
            if isinstance(ref, str) and "/" in ref:  # a version folder where the registry wants its id
                raise VersionError(
                    f"{e} A folder? `refit registry register --version {ref}` copies a version in; the other "
                    "actions take its id or an alias (`refit registry list` shows them)."
                ) from None
            raise
        with self._tx() as db:
            alias = db.execute("SELECT version_id FROM aliases WHERE name = ?", (ref,)).fetchone()
            if alias:
                self._check_alias(db, ref, alias["version_id"])
                return alias["version_id"]
            if db.execute("SELECT 1 FROM versions WHERE id = ?", (ref,)).fetchone():
                return ref
            self._check_alias(db, ref, None)  # an alias the log moved whose row was deleted by hand
            names = [r["name"] for r in db.execute("SELECT name FROM aliases")]
        raise VersionError(
            f"No version or alias '{ref}' in the registry {self.root}"
            + (f" (aliases: {', '.join(sorted(names))})." if names else " (it has no aliases yet).")
        )

    def _check_alias(self, db: sqlite3.Connection, name: str, have: str | None) -> None:
        """RegistryError unless the alias row agrees with the audit log's latest move of `name`: a row edited
        by hand (champion -> a version never promoted, or one rolled away from) was served before."""
        want = self._logged_aliases(db, f"use '{name}'").get(name)
        if want == have:
            return
        if have is None:
            problem = f"alias '{name}' has no row in the aliases table but the audit log says '{want}'"
        elif want is None:
            problem = (
                f"alias '{name}' points at '{have}' but the audit log says nothing (it never moved '{name}')"
            )
        else:
            problem = (
                f"alias '{name}' points at '{have}' but the audit log says '{want}' (its latest move of it)"
            )
        raise RegistryError(self._tampered([problem], f"use '{name}'"))

    def get(self, ref: str, verify: bool = True) -> RegisteredVersion:
        """The version behind an id or alias; with `verify`, refuses one with any missing, extra or altered file."""
        vid = self.resolve(ref)
        row = self._row(vid)
        # removed since resolve() (gc), or an alias at no version: only a hand edit can make one
        if row is None:
            raise RegistryError(
                f"The registry database {self.db_path}: '{ref}' points at version {vid!r}, which has no row in "
                "its versions table (removed meanwhile by `refit registry gc`, or the database was edited by "
                "hand). Refusing to use it; `refit registry verify` lists what else is wrong."
            )
        version = self._to_version(row)
        if verify:
            self.verify(version.id, row)
        return version

    def verify(self, version_id: str, row: sqlite3.Row | None = None) -> None:
        """VersionError unless the version's files match its manifest and the manifest is the one registered."""
        row = row if row is not None else self._row(check_name(version_id))
        if row is None:
            raise VersionError(f"No version '{version_id}' in the registry {self.root}.")
        path = child_path(self.versions_dir, row["id"])
        try:
            verify_version(path)
            recorded = row["manifest_sha256"] if "manifest_sha256" in row.keys() else None  # noqa: SIM118 (Row)
            if recorded is None:  # registered before manifests: the weights hash is all we have
                if sha256_file(weights_file(path)) != row["weights_sha256"]:
                    raise VersionError(
                        f"{weights_file(path)} does not match the hash recorded at registration."
                    )
            elif sha256_file(path / MANIFEST) != recorded:
                raise VersionError(
                    f"{path / MANIFEST} is not the manifest recorded at registration (the version "
                    "was changed and re-sealed after it was registered)."
                )
            keys = row.keys()  # a Row: `in row` looks at values, not column names
            recorded_exports = row["exports_manifest_sha256"] if "exports_manifest_sha256" in keys else None
            if recorded_exports is not None and _exports_sha(path) != recorded_exports:
                raise VersionError(
                    f"{path / 'exports'} is not what was registered with the version (artefacts added, replaced "
                    "or re-sealed after registration: its own manifest agreed with the swapped files). Export "
                    "a copy outside the registry and register it as a new version."
                )
        except VersionError as e:
            said = str(e)  # most of refit.models.version's messages refuse already: said once, not twice
            refuse = "The aliases" if "refusing to use" in said.lower() else "Refusing to use it; the aliases"
            raise VersionError(
                f"Version {row['id']} in the registry is corrupt or was altered: {said} {refuse} are unchanged."
            ) from None
        except OSError as e:  # a file went while it was read: gc removed the version meanwhile, or damage
            raise VersionError(
                f"Version {row['id']} in the registry could not be read whole ({e}): removed meanwhile (`refit "
                "registry gc`?) or damaged. Refusing to use it; the aliases are unchanged."
            ) from None

    def list_versions(self) -> list[RegisteredVersion]:
        with self._tx() as db:
            rows = db.execute("SELECT * FROM versions ORDER BY registered_at, id").fetchall()
        return [self._to_version(r) for r in rows]

    # --- aliases -----------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        with self._tx() as db:
            return {r["name"]: r["version_id"] for r in db.execute("SELECT name, version_id FROM aliases")}

    def set_alias(
        self,
        alias: str,
        ref: str,
        reason: str | None = None,
        metrics: dict | None = None,
        action: str = "move",
        actor: str | None = None,
        *,
        expected: str | None = None,
        run: tuple[int, str, dict] | None = None,
    ) -> AliasMove:
        """Point `alias` at a version: the move, its audit row (and optionally a run's end) are one transaction.

        Already there (the alias row and the audit log agree): nothing is written but the run's end, and the
        move that put it there is returned with `moved=False`.

        Compare-and-swap: with `expected`, the move happens only if `alias` still points at that version
        when the transaction commits; otherwise Superseded is raised and nothing changes. With
        `run=(run_id, status, details)` the run row is finished in the same transaction, so a kill can
        never leave a committed move whose run still reads 'running' (and is then retried).
        """
        self._require_writable("move an alias")
        check_name(alias, "alias name")
        if expected is not None:
            check_name(expected, "expected version id")
        target = self.get(ref).id  # verifies the version before anything points at it
        kill_at("alias-verified", FAULT_PHASES)
        with self._tx() as db:
            row = db.execute("SELECT version_id FROM aliases WHERE name = ?", (alias,)).fetchone()
            previous = row["version_id"] if row else None
            if not db.execute("SELECT 1 FROM versions WHERE id = ?", (target,)).fetchone():
                raise VersionError(  # removed (gc) after get() verified it: the foreign key would raise
                    f"Version {target} was removed from the registry (`refit registry gc`?) while '{alias}' was "
                    "being moved to it; nothing was changed."
                )
            withdrawn = db.execute("SELECT withdrawn FROM versions WHERE id = ?", (target,)).fetchone()[0]
            if withdrawn and previous != target:
                raise VersionError(
                    f"Version {target} was withdrawn by {withdrawn} (it learned texts that run forgot): no alias "
                    f"can be moved to it again, so '{alias}' was not changed. Promote a version trained without "
                    "them (`refit maintain forget --help` names them; `refit registry remove` deletes this one)."
                )
            if expected is not None and previous != expected:
                raise Superseded(
                    f"'{alias}' now points at {previous or 'nothing'}, not {expected} as expected: someone else "
                    f"moved it meanwhile. {target} was not made {alias}; nothing was changed."
                )
            if previous == target and self._log_says(db, alias) == target:
                # already there, and the audit log agrees: nothing moves, so nothing is audited (a "v -> v"
                # row said nothing). An alias row edited by hand to `target` is not this case: the move
                # below is then the operator's repair, and its row re-seals the log.
                if run is not None:
                    self._finish_run_in(db, *run)
                return self._latest_move(db, alias)
            db.execute(
                "INSERT INTO aliases VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "version_id = excluded.version_id, updated_at = excluded.updated_at",
                (alias, target, database.now()),
            )
            content = {
                "at": database.now(),
                "alias": alias,
                "from_version": previous,
                "to_version": target,
                "actor": actor or audit.actor(),
                "action": action,
                "reason": reason,
                "metrics": json.dumps(metrics, sort_keys=True) if metrics is not None else None,
            }
            seq = append_move(db, content)
            if run is not None:
                self._finish_run_in(db, *run)
        kill_at("alias-moved", FAULT_PHASES)
        return next(m for m in self.history(alias) if m.seq == seq)

    def _log_says(self, db: sqlite3.Connection, alias: str) -> str | None:
        """Where the audit log says `alias` points now; None when it never moved it or its chain is broken
        (a move is then written as before, and `refit registry verify` names the damage)."""
        try:
            return self._logged_aliases(db, f"move '{alias}'").get(alias)
        except RegistryError:
            return None

    def _latest_move(self, db: sqlite3.Connection, alias: str) -> AliasMove:
        """The move that put `alias` where it is, marked `moved=False`: what a move to where it already is
        returns (it writes nothing)."""
        row = db.execute("SELECT * FROM audit WHERE alias = ? ORDER BY seq DESC LIMIT 1", (alias,)).fetchone()
        return replace(to_move(row, self.db_path), moved=False)

    def promote(
        self,
        ref: str,
        reason: str,
        metrics: dict | None = None,
        actor: str | None = None,
        *,
        expected_champion: str | None = None,
        run: tuple[int, str, dict] | None = None,
    ) -> AliasMove:
        """Make `ref` the champion; compare-and-swap against `expected_champion` when given (see set_alias)."""
        return self.set_alias(
            CHAMPION, ref, reason, metrics, action="promote", actor=actor, expected=expected_champion, run=run
        )

    def rollback(
        self, reason: str = "manual rollback", actor: str | None = None, alias: str = CHAMPION
    ) -> AliasMove:
        """Point the alias back at the version it held before its latest move (compare-and-swap on it)."""
        check_name(alias, "alias name")
        self.check_audit(f"roll '{alias}' back")
        moves = self.history(alias)
        if not moves:
            raise VersionError(f"'{alias}' has never been set: nothing to roll back.")
        current = self.aliases().get(alias)
        previous = previous_holder(moves, current)
        if previous is None:
            raise VersionError(f"'{alias}' has no earlier version to roll back to (it is {current}).")
        if self._row(previous) is None:
            raise VersionError(
                f"'{alias}' would step back to {previous}, which is no longer in the registry (`refit registry gc` "
                f"removed it, keeping only the last --keep champions, or `refit registry remove` did). Nothing "
                "was changed; promote a version "
                "that is still registered (`refit registry list`)."
            )
        return self.set_alias(alias, previous, reason, action="rollback", actor=actor, expected=current)

    def history(self, alias: str | None = None) -> list[AliasMove]:
        if alias is not None:
            check_name(alias, "alias name")
        return [to_move(r, self.db_path) for r in self.audit_rows(alias)]

    def audit_rows(self, alias: str | None = None) -> list[dict]:
        """The raw audit rows in order (hash-chain columns included; None where the database predates them)."""
        query = "SELECT * FROM audit" + (" WHERE alias = ?" if alias else "") + " ORDER BY seq"
        with self._tx() as db:
            rows = db.execute(query, (alias,) if alias else ()).fetchall()
        return [{"prev_hash": None, "hash": None, **dict(r)} for r in rows]

    # --- staging and garbage -----------------------------------------------------------------------
    def staging(self, older_than_s: float = STALE_AFTER_S) -> list[Path]:
        """Leftover staging folders of killed writes in versions/ (only there: nothing outside is looked at)."""
        return stale_staging(self.versions_dir, older_than_s)

    def clean_staging(self, older_than_s: float = STALE_AFTER_S) -> list[Path]:
        """Remove stale staging folders (killed registrations); returns what was removed."""
        removed = []
        for path in self.staging(older_than_s):
            if path.parent == self.versions_dir and is_staging(path.name):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def remove_version(self, version_id: str, run: tuple[str, dict] | None = None) -> int | None:
        """Delete an unreferenced version: its row (refused if an alias points at it) and then its folder.

        With `run=(kind, details)` a finished ('done') run recording the removal is inserted in the
        transaction that deletes the row, and its id returned: a removal killed before its folder is moved
        (gc removes that folder) is recorded done, never left 'running' (a run started before and finished
        after did). A version whose row is already gone (another remove, or gc, won the race) is refused
        (VersionError), so two removes never both say and record that they removed it."""
        self._require_writable("remove a version")
        path = child_path(self.versions_dir, check_name(version_id))
        run_id = None
        with self._tx() as db:
            if db.execute("SELECT 1 FROM aliases WHERE version_id = ?", (version_id,)).fetchone():
                raise RegistryError(f"Version {version_id} is pointed at by an alias; not removing it.")
            if db.execute("DELETE FROM versions WHERE id = ?", (version_id,)).rowcount != 1:
                raise VersionError(
                    f"Version {version_id} is no longer in the registry (removed meanwhile by another "
                    "`refit registry remove` or gc): not removed again."
                )
            if run is not None:
                now = database.now()
                cur = db.execute(
                    "INSERT INTO runs (kind, started_at, finished_at, status, details) VALUES (?, ?, ?, 'done', ?)",
                    (run[0], now, now, json.dumps(run[1], default=str)),
                )
                run_id = int(cur.lastrowid)
        kill_at("gc-row-removed", FAULT_PHASES)
        self.remove_unregistered(path.name)  # a kill before this leaves an unregistered folder: gc's next run
        return run_id

    def remove_unregistered(self, name: str) -> bool:
        """Delete versions/NAME unless it is a registered version (again); True if it was removed.

        The check and the move aside happen under the database's write lock, which `register` holds from
        installing a folder to recording its row: a folder gc planned to remove (unregistered, old) that a
        registration installed meanwhile is kept. Before, gc deleted it after its row was in."""
        self._require_writable("remove a folder")
        path = child_path(self.versions_dir, name, "folder name")
        with self._tx() as db:
            if db.execute("SELECT 1 FROM versions WHERE id = ?", (name,)).fetchone():
                return False
            if not path.is_dir() or path.is_symlink():
                return False
            trash = self.versions_dir / f".{name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, trash)
        kill_at("gc-folder-moved", FAULT_PHASES)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    # --- runs (drift checks, maintenance cycles) ---------------------------------------------------
    def start_run(self, kind: str, details: dict | None = None, withdraw: Iterable[str] = ()) -> int:
        """Record a run as started; in the same transaction, mark the versions in `withdraw` as withdrawn by
        it: no alias may be moved to them again (set_alias refuses; an alias already on one stays). A forget
        withdraws the versions that learned the forgotten texts before it rewrites a file, since a rerun
        after a kill can no longer tell from the rewritten files that they did."""
        self._require_writable("start a run")
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO runs (kind, started_at, status, details) VALUES (?, ?, 'running', ?)",
                (kind, database.now(), json.dumps(details or {})),
            )
            run_id = int(cur.lastrowid)
            for vid in withdraw:
                db.execute(
                    "UPDATE versions SET withdrawn = ? WHERE id = ? AND withdrawn IS NULL",
                    (f"{kind} run {run_id}", check_name(vid)),
                )
            return run_id

    def finish_run(self, run_id: int, status: str, details: dict | None = None) -> None:
        self._require_writable("finish a run")
        with self._tx() as db:
            self._finish_run_in(db, run_id, status, details)

    @staticmethod
    def _finish_run_in(db: sqlite3.Connection, run_id: int, status: str, details: dict | None) -> None:
        cur = db.execute(
            "UPDATE runs SET finished_at = ?, status = ?, details = ? WHERE id = ?",
            (database.now(), status, json.dumps(details or {}, default=str), run_id),
        )
        if cur.rowcount != 1:
            raise VersionError(f"No run {run_id} in the registry: cannot record its end.")

    def runs(self, kind: str | None = None) -> list[dict]:
        query = "SELECT * FROM runs" + (" WHERE kind = ?" if kind else "") + " ORDER BY id"
        with self._tx() as db:
            rows = db.execute(query, (kind,) if kind else ()).fetchall()
        return [{**dict(r), "details": json.loads(r["details"] or "{}")} for r in rows]


def _exports_sha(folder: Path) -> str:
    """sha256 of exports/manifest.json, '' when the version has none: pinned at registration, so an export
    swapped and re-sealed later (its own manifest then agrees with it) is refused like any other change."""
    manifest = folder / "exports" / MANIFEST
    return sha256_file(manifest) if manifest.is_file() else ""
