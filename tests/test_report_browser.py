"""The HTML report in a real browser: headless Chromium (Debian package ``chromium``) opens it from a file,
with no console message (a CSP violation, a blocked fetch or a script error would log one), runs the
optional script, and renders a non-trivial screenshot. Skipped only where Chromium is missing outside CI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import reports

SAMPLE = Path(__file__).parent / "fixtures" / "sample_results.json"
TIMEOUT_S = 90


def _chromium() -> str:
    found = next((p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and Path(p).is_file()), None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return found


def _run(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    chromium = _chromium()
    out = tmp_path_factory.mktemp("report")
    html = reports.cli_render(str(SAMPLE), str(out / "report.html"))
    return chromium, html, out


def test_page_loads_without_console_messages_and_runs_its_script(rendered: tuple[str, Path, Path]) -> None:
    chromium, html, out = rendered
    done = _run(chromium, out / "profile-dom", "--enable-logging=stderr", "--v=0", "--dump-dom", html.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, "\n".join(console)
    dom = done.stdout
    assert '<html lang="en" data-js="on">' in dom  # the filter script ran (it marks the page last)
    assert 'id="AzApp-CC-2"' in dom and 'id="check-AzApp-valid-token-reused"' in dom


def test_page_renders_a_screenshot(rendered: tuple[str, Path, Path]) -> None:
    chromium, html, out = rendered
    shot = out / "shot.png"
    done = _run(chromium, out / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2000",
                "--hide-scrollbars", html.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2000)
    assert len(data) > 50_000  # a blank page compresses to a few KB; the report is tables, colour and SVG


def test_filter_by_outcome_hides_the_rest(rendered: tuple[str, Path, Path]) -> None:
    chromium, html, out = rendered
    done = _run(chromium, out / "profile-filter", "--dump-dom", html.as_uri() + "?only=failed,warning")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    failing = re.search(r'<details id="check-AzApp-valid-token-reused"[^>]*>', dom)
    passing = re.search(r'<details id="check-AzApp-missing-token-fetched"[^>]*>', dom)
    assert failing and passing
    assert "hidden" not in failing[0] and "hidden" in passing[0]
