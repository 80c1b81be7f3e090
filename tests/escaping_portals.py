"""Portal commands that try to outlive the kit (run as ``python tests/escaping_portals.py KIND REPORT_PORT``).

Each serves plain HTTP on ``PORTAL_PORT`` (it need not pass any check) and, before the port opens, every process of
it reports ``{"pid", "start", "role", "marker", "port"}`` as one JSON line to 127.0.0.1:REPORT_PORT, so a test can
wait for the report instead of sleeping, then look for the pids, the marker and the port afterwards.

- ``plain``: behaves (SIGTERM ends it).
- ``ignores-term``: the shell's child ignores SIGTERM (the shell itself does not).
- ``forks``: the parent forks a child that leaves the process group, ignores SIGTERM and serves; the parent exits.
- ``daemon``: a double-fork ``setsid`` daemon that ignores SIGTERM serves; the original and intermediate processes
  exit.
- ``daemon-clean-env``: the daemon also re-executes itself with an empty environment (no marker left to find it by).
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import sys

KINDS = ("plain", "ignores-term", "forks", "daemon", "daemon-clean-env")


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body>escaping portal</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def report(report_port: int, role: str, port: int) -> None:
    with open(f"/proc/{os.getpid()}/stat") as f:
        start = int(f.read().rsplit(")", 1)[1].split()[19])  # with the pid: this process, whatever reuses the pid
    line = {"pid": os.getpid(), "start": start, "role": role, "marker": os.environ.get("BC_CONFORMANCE_PORTAL"),
            "port": port}
    with socket.create_connection(("127.0.0.1", report_port)) as s:
        s.sendall(json.dumps(line).encode() + b"\n")


def serve(port: int, listener: socket.socket | None = None) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Hello, bind_and_activate=listener is None)
    if listener is not None:
        server.socket.close()
        server.socket = listener
    server.serve_forever()


def main(kind: str, report_port: int, port: int) -> None:
    if kind in ("plain", "ignores-term"):
        if kind == "ignores-term":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        report(report_port, "listener", port)
        serve(port)
    elif kind == "forks":
        listener = socket.create_server(("127.0.0.1", port))  # bound before the fork, listening at once
        report(report_port, "parent", port)
        if os.fork() == 0:
            os.setpgid(0, 0)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            report(report_port, "listener", port)
            serve(port, listener)
        os._exit(0)  # the parent leaves; the child keeps the port
    elif kind in ("daemon", "daemon-clean-env"):
        report(report_port, "parent", port)
        if os.fork():
            os._exit(0)
        os.setsid()
        report(report_port, "intermediate", port)
        if os.fork():
            os._exit(0)
        if kind == "daemon-clean-env":
            os.execve(sys.executable, [sys.executable, __file__, "daemon-child", str(report_port), str(port)], {})
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        report(report_port, "listener", port)
        serve(port)
    elif kind == "daemon-child":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        report(report_port, "listener", port)
        serve(port)
    else:
        raise SystemExit(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else int(os.environ["PORTAL_PORT"]))
