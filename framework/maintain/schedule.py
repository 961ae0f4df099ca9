"""Running maintenance cycles in the foreground: every N hours or on a cron expression, one at a time."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from refit.errors import ConfigError
from refit.io import folder_lock

__all__ = ["MIN_EVERY_S", "parse_every", "check_cron", "next_run", "cycle_lock", "run_forever"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# A cycle embeds, tests and may retrain: more often than this is a typo ('5s' for '5m'), not a schedule.
MIN_EVERY_S = 60.0


def parse_every(text: str) -> float:
    """'90s', '15m', '6h', '1d' -> seconds; refuses intervals shorter than MIN_EVERY_S."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text or "")
    if not match:
        raise ConfigError(f"'every' must look like 30m, 6h or 1d; got {text!r}.")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < MIN_EVERY_S:
        raise ConfigError(f"'every' is {text!r} ({seconds:g} s): the shortest interval is 1m (60 s).")
    return seconds


def check_cron(cron: str) -> str:
    """The expression, if croniter accepts it; a ConfigError with an example otherwise."""
    from croniter import croniter

    if not croniter.is_valid(cron):
        raise ConfigError(f"'cron' is not a valid cron expression: {cron!r} (e.g. '0 */6 * * *').")
    return cron


def next_run(now: datetime, every_s: float | None, cron: str | None) -> datetime:
    if cron:
        from croniter import croniter

        return croniter(check_cron(cron), now).get_next(datetime)
    return datetime.fromtimestamp(now.timestamp() + (every_s or 0))


def cycle_lock(path: str | Path, busy: Callable[[], Exception], wait_s: float):
    """An exclusive OS lock on the file PATH (refit.io.folder_lock): two cycles (two processes, or a cron job
    and a loop) never overlap; `busy()` is raised once another holds it for over `wait_s` seconds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return folder_lock(path.parent, busy, wait_s=wait_s, lock_file=path.name)


def run_forever(
    cycle: Callable[[], object], every_s: float | None, cron: str | None, log: Callable[[str], None] = print
) -> int:
    """Run `cycle` now and then on schedule until SIGTERM/SIGINT; a signal lets the current cycle finish."""
    stop = threading.Event()

    def _stop(signum, frame) -> None:
        log(f"received {signal.Signals(signum).name}: stopping after the current cycle")
        stop.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.is_set():
            cycle()
            when = next_run(datetime.now(), every_s, cron)
            log(f"next cycle at {when:%Y-%m-%d %H:%M:%S}")
            stop.wait(max(0.0, when.timestamp() - time.time()))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
