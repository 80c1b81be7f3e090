"""The virtual clock shared with portal processes: libfaketime under the portal, an offset clock in the fakes.

A portal started with ``--portal-cmd`` runs with libfaketime preloaded (the thread-safe ``libfaketimeMT``; the
supervisor hands it to the portal as ``LD_PRELOAD`` without being preloaded itself) and reading its time from a file
the kit rewrites (``FAKETIME_TIMESTAMP_FILE``, re-read on every call: ``FAKETIME_NO_CACHE=1``, ~4 µs a call). The
file holds an offset in whole seconds ("+86400"); the fakes' ``ShiftedClock`` adds the same offset to the wall clock,
so the portal, the Authority and Business Central agree on the time, tokens keep Entra's lifetimes, and
``pause``/``let_tokens_expire`` move everyone's clock at once without waiting. Anything that reads time through libc
follows (Python, Node, Java, .NET, Ruby, PHP); a statically linked binary does not, which ``took_effect`` detects
from the portal's ``Date`` header.

Verified facts of libfaketime 0.9.10 (Debian 12) that shape this: ``FAKETIME_DONT_FAKE_MONOTONIC=1`` makes every
Python ``time.sleep`` fail with EINVAL (upstream #426, fixed in 0.9.11), so monotonic time is faked too, and the offset
only moves forward while a portal runs (a backward jump stalls event loops; forward jumps fire due timers at once);
the non-MT library returns real time for ~0.5% of calls under threads; an empty or malformed file stops the process,
so the file is replaced atomically and never empty; each preloaded top-level process leaves
``/dev/shm/faketime_shm_<pid>`` and ``sem.faketime_sem_<pid>`` when it is killed, and a later process that gets the
same pid dies at start ("shm_open failed: File exists"), so ``sweep_shm`` removes those of dead pids before and after
every portal. The run's certificates are valid 7 days: offsets stay far below that.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

LIBRARY_PATHS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
)
SHM = Path("/dev/shm")
INSTALL_HINT = "install libfaketime (Debian/Ubuntu: apt-get install faketime) to run expiry scenarios in virtual time"
START_OFFSET = 86_400.0  # seconds: each scenario starts a day ahead, so a portal whose clock is not shifted shows
# a Date header a day behind the fakes (how ``took_effect`` tells); the run's certificates are valid for 7 days.
TOLERANCE = 30.0  # seconds of disagreement between the portal's Date header and the virtual clock still accepted


def faketime_library() -> str | None:
    """The libfaketime shared object, or None when it is not installed (``BC_CONFORMANCE_FAKETIME`` overrides)."""
    override = os.environ.get("BC_CONFORMANCE_FAKETIME")
    if override is not None:
        return override if override and Path(override).is_file() else None
    return next((p for p in LIBRARY_PATHS if Path(p).is_file()), None)


class ShiftedClock:
    """Wall-clock time plus an offset that only grows; every change is written for the portal's libfaketime."""

    def __init__(self, library: str, directory: Path | None = None):
        self.library = library
        self.directory = Path(directory or tempfile.mkdtemp(prefix="bc-conformance-time-"))
        self.file = self.directory / "faketime"
        self._offset = 0.0
        self._lock = threading.Lock()
        self._write()

    @property
    def offset(self) -> float:
        return self._offset

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a clock only moves forward; got advance({seconds})")
        with self._lock:
            self._offset += round(seconds)  # whole seconds: the format libfaketime reads reliably
            self._write()
        return self.now()

    def reset(self, offset: float = START_OFFSET) -> None:
        """A new scenario (a new portal process): start again at ``offset`` ahead of the wall clock."""
        with self._lock:
            self._offset = offset
            self._write()

    def _write(self) -> None:
        # Written to a temporary file and renamed: the portal never reads a half-written offset.
        part = self.file.with_suffix(".part")
        part.write_text(f"+{int(self._offset)}\n")
        part.replace(self.file)

    def environment(self) -> dict[str, str]:
        """What a portal process needs to share this clock (merged into its environment; the supervisor turns
        ``processes.PRELOAD`` into the portal's ``LD_PRELOAD``)."""
        from conformance.processes import PRELOAD

        return {PRELOAD: self.library, "FAKETIME_TIMESTAMP_FILE": str(self.file), "FAKETIME_NO_CACHE": "1",
                "NO_FAKE_STAT": "1"}

    def took_effect(self, date_header: str) -> tuple[bool, str]:
        """Whether a portal's HTTP ``Date`` header shows the virtual time; and what was seen, in words."""
        try:
            seen = parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError, IndexError):
            return False, f"the portal's answer had no readable Date header ({date_header[:60]!r})"
        gap = seen - self.now()
        if abs(gap) <= TOLERANCE:
            return True, "the portal's Date header follows the virtual clock"
        return False, (f"the portal's Date header is {-gap:.0f} s behind the virtual clock: its clock is not under "
                       "libfaketime's control (a statically linked binary?)")

    @staticmethod
    def sweep_shm() -> int:
        """Remove libfaketime's shared-memory files of processes that are gone; returns how many."""
        removed = 0
        for path in (*SHM.glob("faketime_shm_*"), *SHM.glob("sem.faketime_sem_*")):
            pid = path.name.rpartition("_")[2]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        return removed

    def close(self) -> None:
        for path in (self.file, self.file.with_suffix(".part")):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.directory.rmdir()
