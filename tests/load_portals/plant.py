"""Planted faults for the load tests: patched copies of examples/flask-handwritten/app.py, each with one fault a
single user never shows (the example itself stays untouched)."""

from __future__ import annotations

from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flask-handwritten" / "app.py"

FAULTS: dict[str, list[tuple[str, str]]] = {
    # An app-wide token cache without a lock: every request in flight when the token expires asks for a new one.
    "stampede": [
        ('return self.delegate if self.cfg.mode == "AzDelegate" else',
         'return self.delegate if self.cfg.mode in ("AzDelegate", "AzApp") else'),
        ('        if self.cfg.mode == "AzDelegate":\n            self.delegate = token',
         '        if self.cfg.mode in ("AzDelegate", "AzApp"):\n            self.delegate = token'),
    ],
    # The current token in a process-wide variable: each request calls BC with whichever token was stored last.
    "cross-talk": [
        ('            self.sessions.setdefault(sid, {})["token"] = token',
         '            self.sessions.setdefault(sid, {})["token"] = token\n            CURRENT["token"] = token'),
        ('status, companies = portal.companies(token)',
         'status, companies = portal.companies(CURRENT.get("token") or token)'),
        ('SESSION_COOKIE = "hw_session"', 'SESSION_COOKIE = "hw_session"\nCURRENT: dict[str, Any] = {}'),
    ],
    # Immediate retries after Business Central's 429, ignoring Retry-After.
    "retry-at-once": [
        ('            resp = self.http.get(f"{self.cfg.bc_api_url}/companies", timeout=HTTP_TIMEOUT,\n'
         '                                 headers={"Authorization": f"Bearer {token[\'access_token\']}"})',
         '            for _ in range(4):\n'
         '                resp = self.http.get(f"{self.cfg.bc_api_url}/companies", timeout=HTTP_TIMEOUT,\n'
         '                                     headers={"Authorization": f"Bearer {token[\'access_token\']}"})\n'
         '                if resp.status_code != 429:\n'
         '                    break'),
    ],
}


def plant(fault: str, directory: Path) -> Path:
    """A copy of the example with ``fault`` planted, in ``directory``; every replacement must apply."""
    text = EXAMPLE.read_text()
    for old, new in FAULTS[fault]:
        if old not in text:
            raise AssertionError(f"planting {fault}: expected {old!r} in {EXAMPLE}, which no longer has it")
        text = text.replace(old, new)
    path = directory / f"app_{fault.replace('-', '_')}.py"
    path.write_text(text)
    return path
