"""Redaction, anchors and step grouping of the report: the small rules every renderer relies on."""

from __future__ import annotations

import pytest

from reports import anchors
from reports.model import group_steps
from reports.refs import ref_link
from reports.safe import MARK, clean, clean_value


@pytest.mark.parametrize(("raw", "kept"), [
    ("GET /cb?code=abc123&state=xyz", "state=xyz"),
    ("POST /token client_secret=s3cr3t&grant_type=client_credentials", "grant_type=client_credentials"),
    ('{"client_secret": "s3cr3t", "scope": "x"}', '"scope": "x"'),
    ("{'refresh_token': 's3cr3t'}", "refresh_token"),
    ("the form had client_secret: s3cr3t in it", "in it"),
    ("Authorization: Bearer opaque-s3cr3t-0123456789", "Authorization: Bearer"),
    ("id eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzM2NyM3QifQ.c2lnbmF0dXJl here", "here"),
])
def test_clean_removes_credentials_from_text(raw: str, kept: str) -> None:
    out = clean(raw)
    assert "s3cr3t" not in out and "abc123" not in out and "eyJzdWIi" not in out
    assert MARK in out and kept in out


def test_clean_keeps_ordinary_text() -> None:
    for text in ("Bearer token is used for BC", "status code: 200", "token_type=Bearer", "code_challenge=abc"):
        assert clean(text) == text
    assert clean(None) == "" and clean(3) == "3"


def test_clean_value_masks_fields_by_name() -> None:
    detail = {"client_secret": "s", "Client-Secret": "s", "nested": {"access_token": "s", "id": "ok"},
              "Authorization": "Bearer s", "headers": [("Cookie", "sid=s"), ("Accept", "json")],
              "secret_in_url": False, "password": "s", "scope": "ok"}
    out = clean_value(detail)
    assert out["client_secret"] == out["Client-Secret"] == out["password"] == MARK
    assert out["nested"] == {"access_token": MARK, "id": "ok"}
    assert out["Authorization"] == f"Bearer {MARK}"
    assert out["headers"] == [["Cookie", MARK], ["Accept", "json"]]
    assert out["secret_in_url"] is False and out["scope"] == "ok"


def test_anchor_scheme() -> None:
    assert anchors.step_anchor("AzApp", "CC", 3) == "AzApp-CC-3"
    assert anchors.check_anchor("AzUser", "valid-token-reused") == "check-AzUser-valid-token-reused"
    assert anchors.check_alias("valid-token-reused") == "check-valid-token-reused"
    assert anchors.scenario_anchor("AzUser", "missing token") == "scenario-AzUser-missing-token"
    assert anchors.event_anchor("AzUser", "missing-token", 12) == "scenario-AzUser-missing-token-e12"
    assert anchors.slug('"><script>') == "script"


def test_step_runs_are_grouped() -> None:
    steps = [(f"AC-{n}", f"a{n}") for n in (1, 2, 3, 4, 6, 8, 9)]
    assert group_steps(steps) == [("AC-1–4", "a1"), ("AC-6", "a6"), ("AC-8", "a8"), ("AC-9", "a9")]


def test_reference_links() -> None:
    assert ref_link("RFC 6750 §2.1").url == "https://www.rfc-editor.org/rfc/rfc6750#section-2.1"
    assert ref_link("RFC 7636").url == "https://www.rfc-editor.org/rfc/rfc7636"
    assert ref_link("Anywhere Portal authorization flows, CC-2").url.startswith("https://docs.staedean.com/")
    assert ref_link("Somewhere <https://example.com/x>") == ref_link("Somewhere")
    assert ref_link("Somewhere").url == ""
