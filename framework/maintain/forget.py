"""Forget served requests by id: rewrite the inbox's capture files without their rows.

The maintenance loop keeps no captured text (refit.maintain.index): a text is read back from its capture
file when a label arrives, and only if that file is unchanged. So forgetting a request in the inbox is
removing its row from the files on disk (what earlier cycles already trained on is refit.maintain.scrub's
part; `find_requests` reads the texts for it before anything is written): each complete capture file
(`capture-*.parquet`) holding one of the ids is rewritten without those rows (a temporary dot-file, 0600, fsynced, renamed over the old one, the
folder fsynced), or deleted when no row is left. The next cycle reads a rewritten file as a new file whose
other requests it already knows (nothing is used twice; their late labels still join), and counts each
label for a forgotten request as "labelled requests whose capture was deleted or changed".

Run under the maintenance lock, so a cycle never reads a file half-way through a forget. Files a running
server is still writing (dot-files) are not touched: they are counted, to forget again after they rotate.
A file this cannot read as a capture file (too big, not Parquet, another schema) is left alone and named:
a cycle quarantines it, so it is never trained on either.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from refit.maintain.inbox import MAX_FILE_BYTES, MAX_ROWS
from refit.maintain.safe_read import NotAFile, TooBig, read_entry
from refit.serve.capture import CAPTURE, CAPTURE_SCHEMA, being_written, file_kind

__all__ = ["Forgotten", "find_requests", "forget_requests", "remove_rows"]


@dataclass
class Forgotten:
    """What a forget did."""

    rows: int = 0  # capture rows removed
    found: set[str] = field(default_factory=set)  # ids found in a capture file
    rewritten: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "file: why" (left alone)
    in_progress: int = 0  # dot-files a server may still be writing
    # the found rows' stored texts by request id, in memory only: what refit.maintain.scrub removes from the
    # run folders, and how a forget tells which of the requests a cycle had trained on
    texts: dict[str, set[str]] = field(default_factory=dict, repr=False)
    plan: list[tuple[str, object]] = field(default_factory=list, repr=False)  # (file, kept rows | None)


def forget_requests(folder: Path, ids: set[str]) -> Forgotten:
    """Remove every capture row of the request ids in `ids` from the capture files in `folder`."""
    found = find_requests(folder, ids)
    remove_rows(folder, found)
    return found


def find_requests(folder: Path, ids: set[str]) -> Forgotten:
    """Read which capture files in `folder` hold rows of `ids`, and their texts; writes nothing, so the
    caller can scrub and record everything else first (`remove_rows` then writes the plan)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = Forgotten()
    wanted = pa.array(sorted(ids), pa.string())
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = sorted(os.listdir(dir_fd))
        out.in_progress = sum(being_written(n, CAPTURE) for n in names)
        for name in names:
            if file_kind(name) != CAPTURE:
                continue
            try:
                data, _ = read_entry(dir_fd, name, MAX_FILE_BYTES)
                meta = pq.ParquetFile(pa.BufferReader(data))
                if meta.metadata.num_rows > MAX_ROWS or meta.schema_arrow.names != CAPTURE_SCHEMA.names:
                    raise ValueError("not a capture file of this format")
                table = meta.read(use_threads=False)
            except (NotAFile, TooBig, OSError, ValueError, pa.ArrowException) as e:
                out.unreadable.append(f"{folder / name}: {e}")
                continue
            hit = pc.is_in(table.column("request_id"), value_set=wanted).fill_null(False)
            n = pc.sum(hit).as_py() or 0
            if not n:
                continue
            out.rows += n
            out.found.update(table.column("request_id").filter(hit).to_pylist())
            rids, texts = (table.column(c).filter(hit).to_pylist() for c in ("request_id", "text"))
            for rid, text in zip(rids, texts, strict=True):
                if text is not None:
                    out.texts.setdefault(rid, set()).add(text)
            kept = table.filter(pc.invert(hit))
            out.plan.append((name, kept if kept.num_rows else None))
            (out.rewritten if kept.num_rows else out.deleted).append(str(folder / name))
    finally:
        os.close(dir_fd)
    return out


def remove_rows(folder: Path, found: Forgotten) -> None:
    """Write what `find_requests` planned: each file rewritten without the rows, or deleted when empty."""
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name, kept in found.plan:
            if kept is not None:
                _replace(dir_fd, name, kept)
            else:
                os.unlink(name, dir_fd=dir_fd)
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _replace(dir_fd: int, name: str, table) -> None:
    """Write `table` over `name` atomically: an owner-only dot-file (skipped by cycles), then a rename."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    temp = f".{name}.forget-{secrets.token_hex(4)}.tmp"
    fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            pq.write_table(table, pa.PythonFile(f, mode="w"))
            f.flush()
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temp, dir_fd=dir_fd)
        raise
    os.close(fd)
    os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
