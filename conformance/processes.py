"""Containment of the processes a ``--portal-cmd`` portal starts, and of the files a run leaves in the temp dir.

Why: killing the shell's process group misses a portal that ignores SIGTERM behind a shell that does not, a child
that keeps the port after its parent exits, and a daemon that left the group with ``setsid`` (double fork). On Linux
every portal therefore runs under a *supervisor* (this file run as a script, standard library only):

- it is a child subreaper (``PR_SET_CHILD_SUBREAPER``): every orphan the portal leaves, daemons included, re-parents
  to it rather than to init, so "everything the portal started" is exactly the supervisor's live descendants;
- it dies with the kit, even a SIGKILLed one (``PR_SET_PDEATHSIG``), and on SIGTERM stops its descendants: SIGTERM,
  a grace period, then SIGKILL rounds until a scan finds none alive;
- it exits when the portal command and everything it started have exited (so a daemonizing portal keeps running).

Behind the supervisor the kit sweeps by an environment marker that every portal process inherits (it stays in
``/proc/<pid>/environ`` after ``setsid``) and by the owner of the portal's port (the socket inode in
``/proc/net/tcp{,6}`` found in ``/proc/<pid>/fd``). Deaths are awaited with pidfds and ``poll``, never sleeps.
Where /proc, prctl or pidfds are missing (not Linux), ``CONTAINED`` is false and the caller falls back to killing
the process group.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import os
import re
import select
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

PRELOAD = "BC_CONFORMANCE_LD_PRELOAD"  # becomes the portal's LD_PRELOAD; the supervisor itself is not preloaded
MARKER = "BC_CONFORMANCE_PORTAL"  # environment variable: "<kit pid>-<kit start time>-<n>", one value per portal
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 1, 36, 37
KILL_TIMEOUT = 5.0  # seconds for the SIGKILL rounds after the grace period
_COUNTER = itertools.count(1)


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    value = ctypes.c_int()
    return prctl if prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) == 0 else None


_PRCTL = _load_prctl()
CONTAINED = _PRCTL is not None and hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal") \
    and os.path.exists("/proc/self/stat")


# ---------------------------------------------------------------- reading /proc


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str  # R, S, D, Z (zombie: exited, not yet reaped), ...
    start: int  # clock ticks after boot: with the pid, identifies a process across pid reuse

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X", "x")


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb", buffering=0) as f:  # plain paths: a scan reads two files per process
            return f.read()
    except OSError:
        return None


def stat(pid: int) -> Proc | None:
    """The process's ``/proc/<pid>/stat`` fields we need, or None if it is gone (or there is no /proc)."""
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    fields = raw.rsplit(b")", 1)[1].split()  # the command name, in parentheses, may hold spaces and ")"
    return Proc(pid, int(fields[1]), fields[0].decode(), int(fields[19]))


def _all() -> dict[int, Proc]:
    procs = {}
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit() and (proc := stat(int(name))) is not None:
                procs[proc.pid] = proc
    return procs


_KEY = MARKER.encode() + b"="


def marker_of(pid: int) -> str | None:
    """The portal marker in the process's environment (as it was at exec; unreadable for zombies and other users)."""
    environ = _read(f"/proc/{pid}/environ")
    if not environ or _KEY not in environ:
        return None
    for item in environ.split(b"\0"):
        if item.startswith(_KEY):
            return item[len(_KEY):].decode("ascii", "replace")
    return None


def _pid_namespace(pid: int | str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return ""


def owner_tag() -> str:
    """``<pid>-<start time>`` of this process: unique on this machine while it runs (start time: pid reuse)."""
    me = stat(os.getpid())
    return f"{os.getpid()}-{me.start if me else 0}"


def new_marker() -> str:
    return f"{owner_tag()}-{next(_COUNTER)}"


def _owner_alive(pid: int, start: int) -> bool:
    proc = stat(pid)
    if proc is not None:
        return proc.alive and (start == 0 or proc.start == start)
    if os.path.exists("/proc/self/stat"):
        return False
    try:  # no /proc: ask the kernel (a reused pid counts as alive: nothing is removed by mistake)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _listening() -> list[tuple[int, str]]:
    """(port, socket inode) of every TCP socket listening in this network namespace, IPv4 and IPv6."""
    out = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/net/{table}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st ...; st 0A = LISTEN; inode is field 9
            if len(fields) > 9 and fields[3] == "0A":
                out.append((int(fields[1].rsplit(":", 1)[1], 16), fields[9]))
    return out


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on ``port`` (TCP, IPv4 or IPv6) in this network namespace."""
    return {inode for listening, inode in _listening() if listening == port}


def listening_ports(pids: Iterable[int]) -> list[int]:
    """TCP ports these processes listen on (IPv4 or IPv6), e.g. to tell a portal on the wrong port where it is."""
    held = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(fd.path)
                    if target.startswith("socket:["):
                        held.add(target[8:-1])
    return sorted({port for port, inode in _listening() if inode in held})


def socket_owners(inodes: set[str]) -> set[int]:
    """Processes holding one of these sockets open (only this user's processes are readable)."""
    if not inodes:
        return set()
    wanted = {f"socket:[{inode}]" for inode in inodes}
    owners = set()
    for pid in _all():
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in wanted:
                        owners.add(pid)
                        break
    return owners


def _with_descendants(roots: set[int], procs: dict[int, Proc]) -> list[Proc]:
    """``roots`` and every live process below them (a descendant may have cleared its environment)."""
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found and pid in procs:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return [procs[pid] for pid in sorted(found) if procs[pid].alive]


def descendants(root: int) -> list[Proc]:
    procs = _all()
    return [p for p in _with_descendants({root}, procs) if p.pid != root]


def marked(match: Callable[[str], bool], port: int | None = None, since: int = 0,
           exclude: Sequence[int] = ()) -> list[Proc]:
    """Live processes whose marker satisfies ``match``, the processes listening on ``port`` that started at or after
    ``since`` (clock ticks), and everything below them."""
    procs = _all()
    roots = {pid for pid, proc in procs.items() if proc.alive and (m := marker_of(pid)) is not None and match(m)}
    if port is not None:
        roots |= {pid for pid in socket_owners(listening_inodes(port)) if pid in procs and procs[pid].start >= since}
    roots -= {os.getpid(), *exclude}
    return _with_descendants(roots, procs)


# ---------------------------------------------------------------- killing, and waiting for death


def _reap_children() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def signal_and_wait(procs: Sequence[Proc], sig: int, deadline: float, reap: bool = False) -> None:
    """Send ``sig`` to each process (through a pidfd: no pid-reuse race) and wait until all have exited or the
    deadline passes. ``reap``: collect our zombie children too (the supervisor)."""
    pending: dict[int, Proc] = {}
    poller = select.poll()
    for proc in procs:
        try:
            fd = os.pidfd_open(proc.pid)
        except OSError:
            continue  # already gone
        now = stat(proc.pid)
        if now is None or now.start != proc.start or not now.alive:
            os.close(fd)  # gone, or the pid was reused since the scan
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            signal.pidfd_send_signal(fd, sig)
        pending[fd] = proc
        poller.register(fd, select.POLLIN)
    try:
        while pending and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):  # a pidfd is readable once its process has exited
                poller.unregister(fd)
                pending.pop(fd)
                os.close(fd)
            if reap:
                _reap_children()
    finally:
        for fd in pending:
            os.close(fd)


def stop_all(find: Callable[[], list[Proc]], grace: float, timeout: float = KILL_TIMEOUT,
             reap: bool = False) -> list[int]:
    """SIGTERM what ``find`` returns, wait up to ``grace``, then SIGKILL rounds until two scans in a row find
    nothing (a forking portal may spawn during a round; a scan of /proc is not atomic). Returns the survivors."""
    procs = find()
    if not procs:
        return []
    if grace > 0:
        signal_and_wait(procs, signal.SIGTERM, time.monotonic() + grace, reap)
    deadline = time.monotonic() + timeout
    empty = 0
    while empty < 2 and time.monotonic() < deadline:
        procs = find()
        empty = 0 if procs else empty + 1
        if procs:
            signal_and_wait(procs, signal.SIGKILL, deadline, reap)
        if reap:
            _reap_children()
    return [p.pid for p in find()]


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait until the process ``pid`` has exited (without reaping it); False on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(timeout, 0) * 1000))
    finally:
        os.close(fd)


def sweep_orphans() -> list[int]:
    """Kill portal processes whose kit is gone (it was SIGKILLed, and so was their supervisor), in this pid namespace
    only: a marker from another namespace names a pid we cannot judge."""
    if not CONTAINED:
        return []
    own_ns = _pid_namespace("self")

    def orphaned(value: str) -> bool:
        parts = value.split("-")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            return False
        return not _owner_alive(int(parts[0]), int(parts[1]))

    def find() -> list[Proc]:
        return [p for p in marked(orphaned) if _pid_namespace(p.pid) == own_ns]

    return stop_all(find, grace=0)


def sweep_kit() -> list[int]:
    """Kill every portal process this kit started (the last resort at exit)."""
    if not CONTAINED:
        return []
    prefix = owner_tag() + "-"
    return stop_all(lambda: marked(lambda value: value.startswith(prefix)), grace=0)


@contextlib.contextmanager
def signals_deferred(signums: Sequence[int] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM until the block is done, then deliver them: cleanup is never abandoned half-way.
    Only the main thread can change handlers; elsewhere the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    for signum in signums:
        handler = signal.getsignal(signum)
        if handler is not None and handler != signal.SIG_IGN:
            previous[signum] = signal.signal(signum, lambda n, _frame: caught.append(n))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


# ---------------------------------------------------------------- files owned by a run


def hold(fd: int) -> None:
    """Mark a file or directory as in use by this process: the lock goes when the last descriptor closes, even on
    SIGKILL, so a later run can tell a leftover from a file in use whatever the pid has become."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def sweep_owned(directory: str | Path, prefix: str) -> list[Path]:
    """Remove ``<prefix><pid>-…`` entries of ``directory`` that a dead process left: its pid is not running (so a
    brand-new entry, not locked yet, is safe) and nobody holds its lock (so a reused pid or another pid namespace
    does not matter)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        found = pattern.match(entry.name)
        if not found or _owner_alive(int(found[1]), 0):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid() or entry.is_symlink():
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            hold(fd)
        except OSError:
            continue  # still in use
        finally:
            os.close(fd)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
        removed.append(Path(entry.path))
    return removed


# ---------------------------------------------------------------- the supervisor


def supervised(argv: Sequence[str], grace: float) -> list[str]:
    """The command line that runs ``argv`` under a supervisor (or ``argv`` itself where containment is missing)."""
    if not CONTAINED or not sys.executable:
        return list(argv)  # the kit's own sweep (marker, port) still applies where CONTAINED
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), str(grace), str(os.getpid()), "--", *argv]


def _exit_like(status: int | None) -> NoReturn:
    code = 0 if status is None else os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def supervise(grace: float, parent: int, argv: Sequence[str]) -> NoReturn:
    """Run ``argv``; exit with its status once it and everything it started have exited; on SIGTERM (from the kit,
    or on the kit's death) stop them all first."""
    watched = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)  # taken with sigwaitinfo, not by handlers
    assert _PRCTL is not None
    _PRCTL(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the kit died before PDEATHSIG was set
        os._exit(128 + signal.SIGTERM)
    try:
        env = dict(os.environ)
        if PRELOAD in env:  # e.g. libfaketime: for the portal only, so the supervisor's own timers stay real
            env["LD_PRELOAD"] = " ".join(p for p in (env.pop(PRELOAD), env.get("LD_PRELOAD", "")) if p)
        leader = os.posix_spawnp(argv[0], list(argv), env, setsigmask=(),
                                 setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    except OSError as err:
        print(f"cannot start {argv[0]}: {err.strerror}", file=sys.stderr)
        os._exit(127)
    status: int | None = None
    while True:
        info = signal.sigwaitinfo(watched)
        if info.si_signo != signal.SIGCHLD:
            stop_all(lambda: descendants(os.getpid()), grace, reap=True)
            os._exit(128 + info.si_signo)
        try:
            while (reaped := os.waitpid(-1, os.WNOHANG))[0]:
                if reaped[0] == leader:
                    status = reaped[1]
        except ChildProcessError:  # no child left: as a subreaper, that means no descendant either
            _exit_like(status)


def _main(args: list[str]) -> NoReturn:
    if len(args) < 4 or args[2] != "--":
        print("usage: processes.py GRACE PARENT_PID -- COMMAND ...", file=sys.stderr)
        os._exit(2)
    supervise(float(args[0]), int(args[1]), args[3:])


if __name__ == "__main__":
    _main(sys.argv[1:])

