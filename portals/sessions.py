"""Server-side sessions for Flask: the browser holds only a random id, never a token (RFC 6749 §10.3)."""

from __future__ import annotations

import secrets
import threading
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin


class ServerSession(dict[str, Any], SessionMixin):
    def __init__(self, sid: str, data: dict[str, Any] | None = None):
        super().__init__(data or {})
        self.sid = sid


class ServerSessionInterface(SessionInterface):
    cookie_name = "portal_session"

    def __init__(self) -> None:
        self._store: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        sid = request.cookies.get(self.cookie_name, "")
        with self._lock:
            data = self._store.get(sid)
        return ServerSession(sid, dict(data)) if data is not None else ServerSession(secrets.token_urlsafe(24))

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, ServerSession)
        with self._lock:
            known = session.sid in self._store
            self._store[session.sid] = dict(session)
        if not known:
            response.set_cookie(self.cookie_name, session.sid, httponly=True, samesite="Lax",
                                secure=app.config.get("SESSION_COOKIE_SECURE", False))
