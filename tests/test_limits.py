"""What keeps a loopback server bounded under hostile traffic (issue 12): deadlines for headers and bodies, a cap
per body and on all bodies in flight, a connection cap, memory given back when connections end, and trace events
dropped by a limit counted and reported. Raw sockets; short deadlines per server; waits are socket reads with
timeouts (or polls of the server's counters with a deadline), never sleeps that a test needs to pass."""

from __future__ import annotations

import json
import os
import resource
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from conformance.http_protocol import Limits, connection_cap
from conformance.loopback import LoopbackServer
from conformance.servers import STATS_PATH, FakeServers
from conformance.tls import RunCA
from conformance.trace import Trace
from conformance.wire import Request, Response


def echo(request: Request) -> Response:
    return Response.json(200, {"path": request.path, "size": len(request.body)})


def _connect(server: LoopbackServer, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=timeout)


def _read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response, framed by its Content-Length (the connection may stay open)."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {raw!r}"
        raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    return int(lines[0].split()[1]), headers, rest[:length]


def _get(sock: socket.socket, path: str = "/ok", close: bool = False) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n"
                 .encode())
    return _read_response(sock)


@pytest.fixture
def quick() -> Iterator[LoopbackServer]:
    limits = Limits(header_timeout=0.2, body_timeout=0.3, idle_timeout=30)
    with LoopbackServer(echo, None, limits=limits) as running:
        yield running


# ---------------------------------------------------------------------------------------------- deadlines


def test_a_slow_header_sender_gets_408_after_the_deadline_and_is_closed(quick):
    with _connect(quick) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: a\r\n")  # the head never ends
        sock.settimeout(0.05)
        raw, trickled = b"", 0
        while True:  # trickle a byte whenever the server has said nothing for 50 ms: it must not extend the deadline
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                sock.sendall(b"X"[:1] if trickled % 2 else b"-")
                trickled += 1
                assert time.monotonic() - started < 5, "no 408 within 5 s"
                continue
            if not chunk:
                break
            raw += chunk
        elapsed = time.monotonic() - started
    status, headers, body = _responses_one(raw)
    assert status == 408 and headers["connection"] == "close" and trickled >= 2
    assert json.loads(body)["error"] == "invalid_request" and "headers" in json.loads(body)["error_description"]
    assert 0.75 * 0.2 <= elapsed < 3  # the deadline falls in the last quarter of header_timeout
    assert quick.stats()["header_timeouts"] == 1


def _responses_one(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest[:int(headers["content-length"])]


def test_a_slow_body_gets_408_after_the_deadline_and_is_closed(quick):
    with _connect(quick) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /t HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")  # 7 bytes never come
        raw = _read_until_closed(sock)
        elapsed = time.monotonic() - started
    status, headers, body = _responses_one(raw)
    assert status == 408 and headers["connection"] == "close" and "body" in json.loads(body)["error_description"]
    assert 0.3 <= elapsed < 3
    assert quick.stats()["body_timeouts"] == 1 and quick.stats()["bodies_in_flight"] == 0


def test_the_header_deadline_runs_from_a_requests_first_byte_not_from_the_last_request(quick):
    """A kept-alive connection may stay silent (up to the idle timeout) between requests."""
    with _connect(quick) as sock:
        assert _get(sock)[0] == 200
        sock.settimeout(0.5)  # longer than the header deadline: the server must not answer or close meanwhile
        with pytest.raises(TimeoutError):
            sock.recv(1)
        sock.settimeout(5)
        assert _get(sock, close=True)[0] == 200


def test_a_tls_client_that_never_says_hello_is_dropped_after_the_header_deadline():
    ca = RunCA()
    try:
        with LoopbackServer(echo, ca.issue(), limits=Limits(header_timeout=0.2)) as running, \
                _connect(running) as sock:
            started = time.monotonic()
            assert _read_until_closed(sock) == b""
            assert time.monotonic() - started < 3
            assert running.wait_for(lambda st: st["connections"] == 0)
            assert running.stats()["handshake_failures"] == 1
    finally:
        ca.close()


# ---------------------------------------------------------------------------------------------- bodies


def test_bodies_over_the_total_cap_get_503_while_a_normal_request_succeeds():
    limits = Limits(max_body=1000, max_bodies_in_flight=1500, body_timeout=30)
    with LoopbackServer(echo, None, limits=limits) as running, _connect(running) as holder:
        holder.sendall(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"a" * 900)
        assert running.wait_for(lambda st: st["bodies_in_flight"] == 900)
        with _connect(running) as over:  # 900 + 700 > 1500: this body does not fit beside the first
            over.sendall(b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"b" * 700)
            status, headers, body = _read_response(over)
            assert _read_until_closed(over) == b""  # and the connection is closed
        assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
        assert json.loads(body)["error"] == "temporarily_unavailable"
        with _connect(running) as normal:  # a form-sized body still fits
            normal.sendall(b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 300\r\nConnection: close\r\n\r\n"
                           + b"c" * 300)
            status, _, body = _read_response(normal)
        assert status == 200 and json.loads(body)["size"] == 300
        stats = running.stats()
        assert stats["bodies_over_capacity"] == 1 and stats["bodies_in_flight"] == 900
        assert stats["peak_bodies_in_flight"] <= 1500
        holder.sendall(b"a" * 100)  # the first body completes and is handled
        status, _, body = _read_response(holder)
        assert status == 200 and json.loads(body)["size"] == 1000
        assert running.stats()["bodies_in_flight"] == 0


def test_a_declared_oversized_body_gets_413_before_it_is_sent():
    with LoopbackServer(echo, None, limits=Limits(max_body=100)) as running, _connect(running) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10485761\r\nExpect: 100-continue\r\n\r\n")
        status, headers, _ = _read_response(sock)  # no 100 Continue first: the body is refused before it comes
        assert status == 413 and headers["connection"] == "close"
        sock.shutdown(socket.SHUT_WR)
        assert _read_until_closed(sock) == b""
        assert running.stats()["bodies_too_large"] == 1


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_memory_of_unfinished_bodies_returns_when_their_connections_end():
    """40 connections each send 8 MB of a 9 MB body and stop; once they are gone, so is the memory."""
    mb = 1024 * 1024
    # Room for all 40 bodies (320 MB), so every byte is really buffered before the connections end.
    limits = Limits(max_bodies_in_flight=400 * mb, body_timeout=60)
    chunk = b"x" * mb
    with LoopbackServer(echo, None, limits=limits) as running:
        with _connect(running) as warm:  # the server's own first allocations are part of the baseline
            assert _get(warm, close=True)[0] == 200
        baseline = _rss_bytes()
        socks = [_connect(running) for _ in range(40)]
        try:
            def send(sock: socket.socket) -> None:
                sock.sendall(b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (9 * mb))
                for _ in range(8):
                    sock.sendall(chunk)

            senders = [threading.Thread(target=send, args=(s,)) for s in socks]
            for t in senders:
                t.start()
            for t in senders:
                t.join(60)
            assert running.wait_for(lambda st: st["bodies_in_flight"] == 40 * 8 * mb, timeout=30)
            held = _rss_bytes() - baseline
        finally:
            for s in socks:
                s.close()
        assert running.wait_for(lambda st: st["connections"] == 0 and st["bodies_in_flight"] == 0)
        after = _rss_bytes() - baseline
    print(f"RSS held {held / mb:.0f} MB, after {after / mb:.0f} MB")
    assert held > 200 * mb, f"the bodies were not buffered ({held / mb:.0f} MB)"
    assert after < 48 * mb, f"{after / mb:.0f} MB stayed resident after the connections ended (held {held / mb:.0f})"


# ---------------------------------------------------------------------------------------------- connections


def test_connections_past_the_cap_are_refused_at_once_while_the_held_ones_keep_being_served():
    with LoopbackServer(echo, None, limits=Limits(max_connections=3)) as running:
        held = [_connect(running) for _ in range(3)]
        try:
            for sock in held:  # answered: accepted and counted
                assert _get(sock)[0] == 200
            with _connect(running) as extra:
                started = time.monotonic()
                raw = _read_until_closed(extra)  # a 503, then closed at once
                assert time.monotonic() - started < 2
            status, headers, body = _responses_one(raw)
            assert status == 503 and headers["retry-after"] == "1"
            assert json.loads(body)["error"] == "temporarily_unavailable"
            assert all(_get(sock)[0] == 200 for sock in held)  # the server keeps answering
            assert running.stats()["refused"] == 1 and running.stats()["connections"] == 3
            assert _get(held[0], close=True)[0] == 200
            assert running.wait_for(lambda st: st["connections"] == 2)
            with _connect(running) as again:  # a place freed: a new connection is served
                assert _get(again, close=True)[0] == 200
        finally:
            for sock in held:
                sock.close()


def test_tls_connections_past_the_cap_are_closed_before_any_handshake():
    ca = RunCA()
    try:
        context = ssl.create_default_context(cafile=str(ca.ca_file))
        with LoopbackServer(echo, ca.issue(), limits=Limits(max_connections=2)) as running:
            held = [context.wrap_socket(_connect(running), server_hostname="127.0.0.1") for _ in range(2)]
            try:
                with pytest.raises((ssl.SSLError, OSError)), _connect(running) as raw, \
                        context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    pass
                assert all(_get(sock)[0] == 200 for sock in held)
                assert running.stats()["refused"] == 1
            finally:
                for sock in held:
                    sock.close()
    finally:
        ca.close()


def test_the_connection_cap_comes_from_the_descriptor_limit_raised_to_the_hard_limit():
    cap = connection_cap(servers=2)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1 << 20:
        assert soft == hard
    assert 8 <= cap <= (soft - 256) // 2
    with LoopbackServer(echo, None) as running:
        assert running.stats()["max_connections"] == connection_cap()


# ---------------------------------------------------------------------------------------------- trace


def test_trace_counts_what_its_limit_drops_and_an_unlimited_trace_drops_nothing():
    limited, unlimited = Trace(limit=3), Trace()
    for i in range(5):
        limited.append(float(i), "authority", "token")
        unlimited.append(float(i), "authority", "token")
    assert [e.seq for e in limited.events] == [3, 4, 5] and limited.dropped == 2
    assert limited.stats() == {"kept": 3, "limit": 3, "dropped": 2}
    assert len(unlimited) == 5 and unlimited.dropped == 0 and unlimited.limit is None


def test_the_runs_servers_keep_every_trace_event():
    """``run`` (and the external runner) use FakeServers' default trace: no limit, so nothing is ever dropped."""
    servers = FakeServers()
    try:
        assert servers.trace.limit is None and servers.trace.dropped == 0
    finally:
        servers.ca.close()


def test_the_stats_endpoint_reports_dropped_trace_events_and_the_servers_counters():
    with FakeServers(trace=Trace(limit=2)) as servers:
        info = servers.info()
        context = ssl.create_default_context(cafile=info["ca_file"])
        form = urlencode({"grant_type": "client_credentials", "client_id": info["client_id"],
                          "client_secret": info["client_secret"], "scope": info["scope"]}).encode()
        port = servers.authority_server.port
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            for _ in range(3):
                sock.sendall(f"POST /{info['tenant_id']}/oauth2/v2.0/token HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                             f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(form)}\r\n\r\n"
                             .encode() + form)
                assert _read_response(sock)[0] == 200
            assert info["stats_url"].endswith(STATS_PATH)
            sock.sendall(f"GET {STATS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            status, _, body = _read_response(sock)
    stats = json.loads(body)
    assert status == 200 and stats["trace"] == {"kept": 2, "limit": 2, "dropped": 1}
    assert stats["servers"]["authority"]["connections"] == 1 and "bc" in stats["servers"]
    assert stats["servers"]["authority"]["max_connections"] == servers.limits.max_connections


def test_memory_of_closed_connections_is_given_back_to_the_system(monkeypatch):
    """glibc keeps what closed TLS connections freed: the server calls malloc_trim once enough have closed."""
    from conformance import loopback

    if loopback._malloc_trim is None:
        pytest.skip("no glibc malloc_trim here")
    monkeypatch.setattr(loopback, "TRIM_AFTER", 3)
    monkeypatch.setattr(loopback, "TRIM_INTERVAL", 0.01)
    with LoopbackServer(echo, None) as running:
        for _ in range(3):
            with _connect(running) as sock:
                assert _get(sock, close=True)[0] == 200
        assert running.wait_for(lambda st: st["trims"] >= 1)
