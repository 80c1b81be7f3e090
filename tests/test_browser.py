"""The scripted browser retries a GET once when a kept-alive connection turns out closed, as browsers do,
and nothing else."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from conformance.browser import Browser

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


@pytest.fixture
def closes_kept_alive_sockets() -> Iterator[tuple[str, list[str]]]:
    """A server that answers the first request on each connection and then closes it without a word, as a
    server does when its keep-alive timer fires just as the client reuses the socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[str] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                seen.append(conn.recv(65536).split(b" ")[0].decode())
                conn.sendall(OK)
                if conn.recv(65536):  # the reused socket's request: dropped unanswered
                    seen.append("dropped")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/", seen
    listener.close()


def test_a_get_on_a_stale_connection_is_sent_again(closes_kept_alive_sockets):
    url, seen = closes_kept_alive_sockets
    browser = Browser()
    assert browser.get(url).status == 200
    assert browser.get(url).status == 200
    assert seen == ["GET", "dropped", "GET"]


def test_a_post_on_a_stale_connection_is_not_repeated(closes_kept_alive_sockets):
    url, seen = closes_kept_alive_sockets
    browser = Browser()
    assert browser.get(url).status == 200
    with pytest.raises(requests.ConnectionError):
        browser.request("POST", url, data={"a": "1"})
    assert seen == ["GET", "dropped"]


def test_a_refused_connection_is_not_retried():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(requests.ConnectionError):
        Browser().get(f"http://127.0.0.1:{port}/")
