"""The virtual clock shared with portal processes: libfaketime under the portal, an offset clock in the fakes.

A portal started with ``--portal-cmd`` runs with libfaketime preloaded (``LD_PRELOAD``) and reading its time from a
file the kit rewrites (``FAKETIME_TIMESTAMP_FILE``, re-read on every call: ``FAKETIME_NO_CACHE=1``). The file holds an
offset ("+86400s"); the fakes' ``ShiftedClock`` adds the same offset to the wall clock, so the portal, the Authority
and Business Central agree on the time, tokens keep Entra's lifetimes, and ``pause``/``let_tokens_expire`` move
everyone's clock at once without waiting. Monotonic clocks stay real (``FAKETIME_DONT_FAKE_MONOTONIC=1``): event
loops and timeouts keep working. Anything that reads time through libc follows (Python, Node, Java, .NET, Ruby,
PHP); a statically linked binary does not, which ``took_effect`` detects from the portal's ``Date`` header.
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
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)
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
            self._offset += seconds
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
        part.write_text(f"+{self._offset:.3f}s\n")
        part.replace(self.file)

    def environment(self) -> dict[str, str]:
        """What a portal process needs to share this clock (merged into its environment)."""
        preload = " ".join(p for p in (self.library, os.environ.get("LD_PRELOAD", "")) if p)
        return {"LD_PRELOAD": preload, "FAKETIME_TIMESTAMP_FILE": str(self.file), "FAKETIME_NO_CACHE": "1",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

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

    def close(self) -> None:
        for path in (self.file, self.file.with_suffix(".part")):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.directory.rmdir()
