"""Progress of long commands on stderr: what is being played, per group (a mode, a mutant's mode, an exploration),
with counts and elapsed time. On a terminal a live display (``rich``); elsewhere (CI logs, pipes, ``CI=true``) one
plain line per item, so a log shows where a run spent its time and where it stopped. ``--quiet`` silences both;
stdout (results, summaries) is never touched.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class _Group:
    total: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    task: object = None  # the rich task id, on a terminal


class Progress:
    """Reports ``plan``/``begin``/``end`` of items in named groups, and free ``note`` lines. Thread-safe: scenarios
    played concurrently report from their own threads."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False, live: bool | None = None,
                 prefix: str = "", items: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.items = items  # plain lines: one per item (else only a line per finished group)
        self.live = (not quiet and self.stream.isatty() and os.environ.get("CI", "").lower() not in ("1", "true")
                     and os.environ.get("TERM") != "dumb") if live is None else live
        self.prefix = prefix
        self._started = time.monotonic()
        self._groups: dict[str, _Group] = {}
        self._lock = threading.RLock()
        self._rich: object = None

    # ---- lifetime
    def __enter__(self) -> Progress:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(bar_width=24),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      console=Console(file=self.stream), transient=True)
            self._rich.start()  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._rich is not None:
                self._rich.stop()  # type: ignore[attr-defined]
                self._rich = None

    def scoped(self, prefix: str) -> Progress:
        """The same display, with group names prefixed (e.g. a selftest's mutant)."""
        child = Progress.__new__(Progress)
        child.__dict__.update(self.__dict__)
        child.prefix = f"{self.prefix}{prefix} "
        return child

    # ---- what callers report
    def note(self, message: str) -> None:
        """A line of its own (kept above the live display on a terminal)."""
        if self.quiet:
            return
        with self._lock:
            if self._rich is not None:
                self._rich.console.print(message, markup=False, highlight=False)  # type: ignore[attr-defined]
            else:
                self._line(message)

    def plan(self, group: str, total: int) -> None:
        group = self.prefix + group
        with self._lock:
            self._groups[group] = entry = _Group(total)
            if self._rich is not None:
                entry.task = self._rich.add_task(group, total=total)  # type: ignore[attr-defined]

    def begin(self, group: str, item: str) -> None:
        if self.quiet:
            return
        group = self.prefix + group
        with self._lock:
            entry = self._groups.setdefault(group, _Group(0))
            if self._rich is not None:
                self._rich.update(entry.task, description=f"{group} > {item}")  # type: ignore[attr-defined]
            elif self.items:
                self._line(f"{group} {entry.done + 1}/{entry.total or '?'} {item}")

    def end(self, group: str, item: str, outcome: str = "") -> None:
        group = self.prefix + group
        with self._lock:
            entry = self._groups.setdefault(group, _Group(0))
            entry.done += 1
            if self.quiet:
                return
            if self._rich is not None:
                self._rich.update(entry.task, advance=1,  # type: ignore[attr-defined]
                                  description=group if entry.done >= entry.total else f"{group} > {item}")
            elif entry.done == entry.total:
                self._line(f"{group}: {entry.total} done in {time.monotonic() - entry.started:.1f} s")

    def _line(self, text: str) -> None:
        self.stream.write(f"[{time.monotonic() - self._started:6.1f}s] {text}\n")
        self.stream.flush()


SILENT = Progress(quiet=True, live=False)
