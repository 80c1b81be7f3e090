"""The loopback HTTP/1.1 server that carries the fakes to external portals: framing, keep-alive, pipelining
and bad input, on raw sockets (what any client in any language may send)."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.http_protocol import Limits
from conformance.loopback import LoopbackServer
from conformance.tls import RunCA
from conformance.wire import Request, Response


def echo(request: Request) -> Response:
    if request.path == "/boom":
        raise RuntimeError("a bug in a fake")
    response = Response.json(200, {"method": request.method, "path": request.path, "query": request.query,
                                   "body": request.body.decode(), "host": request.header("host"),
                                   "cookie": request.header("cookie"), "base": request.base})
    if request.path == "/slow":
        response.delay = 0.2
    return response


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(echo, None) as running:
        yield running


def _connect(server: LoopbackServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=5)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        out.append((int(lines[0].split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return out


def test_pipelined_requests_are_answered_in_order_even_when_the_first_is_delayed(server):
    with _connect(server) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /fast?x=1 HTTP/1.1\r\nHost: a\r\n"
                     b"Connection: close\r\n\r\n")
        answers = _responses(_read_all(sock))
    assert [json.loads(body)["path"] for _, _, body in answers] == ["/slow", "/fast"]
    assert json.loads(answers[1][2])["query"] == "x=1"
    assert answers[0][1].get("connection") is None and answers[1][1]["connection"] == "close"


def test_chunked_body_duplicate_cookies_and_expect_continue(server):
    with _connect(server) as sock:
        sock.sendall(b"POST /t HTTP/1.1\r\nHost: h:1\r\nCookie: a=1\r\nCookie: b=2\r\nExpect: 100-continue\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        raw = _read_all(sock)
    assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    ((status, _, body),) = _responses(raw.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n"))
    echoed = json.loads(body)
    assert status == 200 and echoed["body"] == "abcde" and echoed["cookie"] == "a=1; b=2"
    assert echoed["base"] == "http://h:1"


def test_head_gets_the_length_without_the_body(server):
    with _connect(server) as sock:
        sock.sendall(b"HEAD /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        raw = _read_all(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: " in head and body == b""


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", 400),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 431),
])
def test_bad_requests_get_a_json_error_and_the_connection_closes(server, request_bytes, status):
    with _connect(server) as sock:
        sock.sendall(request_bytes)
        answers = _responses(_read_all(sock))
    assert [a[0] for a in answers] == [status]
    assert json.loads(answers[0][2])["error"] == "invalid_request"


def test_an_upgrade_request_is_answered_as_plain_http_then_the_connection_closes(server):
    with _connect(server) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nrawbytes")
        answers = _responses(_read_all(sock))
    assert [(status, json.loads(body)["path"]) for status, _, body in answers] == [(200, "/ws")]


@pytest.mark.parametrize("framing", [b"Content-Length: 11\r\n\r\n" + b"x" * 11,
                                     b"Transfer-Encoding: chunked\r\n\r\n6\r\nxxxxxx\r\n5\r\nxxxxx\r\n0\r\n\r\n"])
def test_an_oversized_body_gets_413(framing):
    with LoopbackServer(echo, None, limits=Limits(max_body=10)) as small, _connect(small) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: a\r\n" + framing)
        answers = _responses(_read_all(sock))
        assert small.stats()["bodies_too_large"] == 1
    assert [a[0] for a in answers] == [413]


def test_a_handler_bug_is_a_json_500_not_a_traceback_and_the_server_keeps_serving(server):
    with _connect(server) as sock:
        sock.sendall(b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        answers = _responses(_read_all(sock))
    assert [(s, json.loads(b).get("error")) for s, _, b in answers] == [(500, "server_error"), (200, None)]
    assert b"Traceback" not in answers[0][2]


def test_an_idle_connection_is_closed():
    with LoopbackServer(echo, None, limits=Limits(idle_timeout=0.1)) as quick, _connect(quick) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        answers = _responses(_read_all(sock))  # returns once the server closes the silent connection
    assert [a[0] for a in answers] == [200]


def test_stop_closes_open_connections_and_the_port():
    running = LoopbackServer(echo, None).start()
    sock = _connect(running)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    sock.recv(65536)
    running.stop()
    assert sock.recv(65536) == b""
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", running.port), timeout=5)


def test_tls_with_the_run_ca():
    ca = RunCA()
    try:
        with LoopbackServer(echo, ca.issue()) as running:
            context = ssl.create_default_context(cafile=str(ca.ca_file))
            with socket.create_connection(("127.0.0.1", running.port), timeout=5) as raw, \
                    context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                assert sock.selected_alpn_protocol() in (None, "http/1.1")
                sock.sendall(b"GET /tls HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                ((status, _, body),) = _responses(_read_all(sock))
    finally:
        ca.close()
    assert status == 200 and json.loads(body)["base"] == "https://127.0.0.1"


@pytest.fixture(scope="module")
def shared_server() -> Iterator[LoopbackServer]:
    with LoopbackServer(echo, None) as running:
        yield running


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=300))
def test_arbitrary_bytes_never_break_the_server(shared_server, garbage):
    with _connect(shared_server) as sock:
        sock.sendall(garbage)
        sock.shutdown(socket.SHUT_WR)
        for status, headers, _ in _responses(_read_all(sock)):
            assert status in (200, 400, 413, 431, 500) and "content-length" in headers
    with _connect(shared_server) as sock:  # and it still serves the next client
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert _responses(_read_all(sock))[0][0] == 200
