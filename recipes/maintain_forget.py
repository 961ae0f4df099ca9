"""refit maintain forget: make the maintenance loop forget served requests, by request id.

    refit maintain forget --ids deletion-requests.txt --registry.root registry   # inbox: registry/inbox
    refit maintain forget --ids ids.txt --registry.root registry --inbox production

IDS is a text file with one request id per line (as `refit serve` returned them; blank lines and lines
starting with '#' are skipped). Every capture file in the inbox that holds one of them is rewritten without
those rows, or deleted when none is left (refit.maintain.forget). The loop keeps no captured text of its own,
so after this no later cycle can train on those texts: their late labels are counted as "labelled requests
whose capture was deleted or changed" and not used. It runs under the maintenance lock (never during a
cycle). Not covered: rows a cycle already trained on (in its run folder, and replayed from there by later
retrains), texts in versions' drift references (unless `--privacy.store_texts false`), capture files a
running server is still writing (counted: run it again once they rotate), copies outside the inbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from refit.errors import ConfigError, DataError, RefitError
from refit.maintain import cycle_lock
from refit.maintain.forget import forget_requests
from refit.registry import NoRegistry, Registry
from refit.settings import RegistryConfig


class ForgetBusy(RefitError):
    """A cycle holds the maintenance lock; exit code 75 (EX_TEMPFAIL): try again later."""

    exit_code = 75


@dataclass
class Config:
    """Remove the captured rows of the request ids listed in IDS from the inbox's capture files.

    Args:
        ids: Text file of request ids to forget, one a line.
        inbox: Inbox folder holding the capture files (default: REGISTRY/inbox, where `refit serve` captures).
    """

    ids: str = ""
    inbox: str = ""
    registry: RegistryConfig = field(default_factory=RegistryConfig)


def _read_ids(path: str) -> set[str]:
    if not path:
        raise ConfigError("Give the request ids to forget: --ids FILE (one request id a line).")
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(
            f"Cannot read 'ids' file {path} ({e}): give a UTF-8 text file, one id a line."
        ) from None
    ids = {x.strip() for x in lines if x.strip() and not x.strip().startswith("#")}
    if not ids:
        raise DataError(f"The 'ids' file {path} lists no request id (one a line; '#' starts a comment).")
    return ids


def run(cfg: Config) -> int:
    # --- setup -------------------------------------------------------------------------------------
    ids = _read_ids(cfg.ids)
    try:
        registry = Registry(cfg.registry.root, cfg.registry.db, must_exist=True)
    except NoRegistry as e:
        raise NoRegistry(f"{e} Check --registry.root (and --registry.db).") from None
    folder = Path(cfg.inbox) if cfg.inbox else registry.root / "inbox"
    if not folder.is_dir():
        raise DataError(
            f"Inbox folder not found: 'inbox' is {folder}. Point it at the folder the cycles read "
            "(their inbox.windows)."
        )
    lock_file = registry.root / "maintain.lock"

    def busy() -> ForgetBusy:
        return ForgetBusy(f"A maintenance cycle holds {lock_file}; forget again once it has finished.")

    # --- run ---------------------------------------------------------------------------------------
    with cycle_lock(lock_file, busy, wait_s=60):
        done = forget_requests(folder, ids)
    # --- report ------------------------------------------------------------------------------------
    print(
        f"forgot {len(done.found)} of {len(ids)} request id(s): {done.rows} capture row(s) removed; "
        f"{len(done.rewritten)} file(s) rewritten, {len(done.deleted)} deleted"
    )
    if len(done.found) < len(ids):
        print(f"  {len(ids) - len(done.found)} id(s) are in no capture file of {folder}")
    for line in done.unreadable:
        print(f"  not a readable capture file, left alone (cycles quarantine it): {line}")
    if done.in_progress:
        print(
            f"  {done.in_progress} capture file(s) are still being written by a server: run this again later"
        )
    return 0
