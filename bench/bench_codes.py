"""Memory of `bc-conformance serve` after 100,000 authorization codes that are never redeemed.

Codes are sealed (they carry their grant), so an unredeemed code should cost nothing once the trace and the
recent-values list (both bounded) are full. Target: resident memory < 20 MB above the idle size (it was +118 MB
per 100,000 codes when codes were stored).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from urllib.parse import urlencode

import requests

from bench.harness import Figure
from conformance.browser import Browser
from conformance.user import Credentials, complete_authorize

CODES = int(os.environ.get("BENCH_CODES", "100000"))
THREADS = 4


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _authorize_url(info: dict) -> str:
    query = {"client_id": info["client_id"], "response_type": "code", "redirect_uri": info["redirect_uris"][0],
             "scope": f"{info['scope']} openid profile offline_access", "state": "s" * 32, "nonce": "n" * 32,
             "code_challenge": "c" * 43, "code_challenge_method": "S256"}
    return f"{info['authority']}/oauth2/v2.0/authorize?{urlencode(query)}"


def _issue(url: str, cookies: requests.cookies.RequestsCookieJar, ca: str, n: int, errors: list[str]) -> None:
    with requests.Session() as session:
        session.cookies.update(cookies)
        for _ in range(n):
            r = session.get(url, allow_redirects=False, verify=ca, timeout=30)
            if r.status_code != 302 or "code=" not in r.headers.get("Location", ""):
                errors.append(f"{r.status_code}")
                return


def run() -> list[Figure]:
    proc = subprocess.Popen([sys.executable, "-m", "conformance", "serve"], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        ca, url = info["ca_file"], _authorize_url(info)
        user = info["users"][0]
        browser = Browser(verify=ca)
        page = browser.get(url, stop_at=lambda u: u.startswith(info["redirect_uris"][0]))
        complete_authorize(browser, page, Credentials(user["username"], user["password"]),
                           stop_at=lambda u: u.startswith(info["redirect_uris"][0]))
        errors: list[str] = []
        _issue(url, browser.session.cookies, ca, 2000, errors)  # warm up: caches, pools, trace filled a little
        idle = _rss_mb(proc.pid)
        threads = [threading.Thread(target=_issue, args=(url, browser.session.cookies, ca, CODES // THREADS, errors))
                   for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"authorize did not issue codes: {errors[:3]}")
        after = _rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    return [
        Figure("serve RSS idle (after 2,000 codes)", "MB", [idle]),
        Figure(f"serve RSS growth after {CODES:,} unredeemed codes", "MB", [after - idle],
               target="< 20 MB", notes={"stored codes before (issue #12)": "+118 MB per 100,000"}),
    ]
