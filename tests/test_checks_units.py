"""Every branch of every check, and every violation kind and accepted variant of the monitor, on small hand-built
traces (``tests/tracebuilder.py``): the outcome, the step the message names (found in the tables by role, never
typed) and the trace seqs given as evidence.

Each test starts from the reference portal's run of the mode (every scenario as ``bc-conformance run`` traces it)
and replaces the one scenario it perturbs, so the other scenarios keep the check's earlier branches quiet.
"""

from __future__ import annotations

import functools
import re

import pytest

from conformance import checks
from conformance.checks import CHECKS, Check, Verdict
from conformance.engine import run_scenario
from conformance.errors import InternalError
from conformance.monitor import Kind
from conformance.scenarios import SCENARIOS
from conformance.targets import InProcessTarget
from flows import MODES, Role
from flows.observations import (
    EARLY_RENEWAL,
    REFRESH_RENEWAL,
    RESTART,
    RETRY_AFTER_401,
    SHARED_APP_TOKEN,
    VARIANTS,
)
from tests.tracebuilder import (
    REDIRECT_PATH,
    TOKEN_PATH,
    Script,
    account_of,
    reference_run,
    reference_script,
    results_of,
)

ALL = tuple(MODES)
CODE = ("AzUser", "AzDelegate")
CHECK = {c.id: c for c in CHECKS}


@functools.cache
def _reference(mode: str) -> dict:
    return reference_run(mode)


def judge(check_id: str, mode: str, *scripts: Script, drop: tuple[str, ...] = (), base: bool = True) -> Verdict:
    """The check on the reference run of ``mode`` with ``scripts`` in place of their scenarios (``base=False``: on
    the scripts alone)."""
    results = dict(_reference(mode)) if base else {}
    for name in drop:
        results.pop(name)
    results.update(results_of(*scripts))
    return CHECK[check_id].evaluate(results, mode)


def step(mode: str, role: Role) -> str:
    return MODES[mode].flow.id_of(role)


def expect(v: Verdict, outcome: str, *, step: str | None = None, evidence: list[int] | None = None,
           scenarios: list[str] | None = None, says: str = "") -> None:
    assert v.outcome == outcome, v
    if step is not None:
        assert re.search(rf"(^|\W){re.escape(step)}(\W|$)", v.message), (step, v.message)
    if evidence is not None:
        assert v.evidence == sorted(evidence), v
    if scenarios is not None:
        assert v.scenarios == scenarios, v
    assert says in v.message, (says, v.message)


def first_access(mode: str, name: str = "missing-token", **visit) -> Script:
    s = Script(mode, name)
    s.access(**visit)
    return s


# -------------------------------------------------------------------------------------------------- the reference run

EXPECTED_ON_REFERENCE = {("AzUser", "refresh-token-rotation"): "not_exercised",
                         ("AzDelegate", "refresh-token-rotation"): "not_exercised"}


@pytest.mark.parametrize(("mode", "check_id"), [(m, c.id) for m in ALL for c in CHECKS
                                                if c.applies(m, MODES[m].flow.key)])
def test_the_hand_built_reference_run_passes_what_the_reference_portal_passes(mode, check_id):
    v = judge(check_id, mode)
    assert v.outcome == EXPECTED_ON_REFERENCE.get((mode, check_id), "passed"), v


@pytest.mark.parametrize("mode", ALL)
def test_the_hand_built_reference_run_is_judged_as_the_real_one(mode):
    """The builder's traces take the documented paths, as the reference portal's do (``bc-conformance run``)."""
    flow = MODES[mode].flow
    n = {role: flow.number(role) for role in Role if flow.has(role)}
    full = [n[r] for r in Role if r in n]
    reused = [n[Role.ACCESS], n[Role.CHECK], n[Role.USE], n[Role.WORKING]]
    run = _reference(mode)
    assert set(run) == set(SCENARIOS[flow.key])
    assert all(not sr.monitor.violations for sr in run.values())
    assert [v.steps for v in run["valid-token"].monitor.visits] == [full, reused]
    assert all(v.completed for v in run["valid-token"].monitor.visits)
    retried = run["bc-revoked-token"].monitor.visits[1]
    assert retried.variants == [RETRY_AFTER_401.title] and retried.completed
    assert run["missing-token"].monitor.visited == set(full)


@pytest.mark.parametrize("mode", ALL)
def test_the_hand_built_reference_run_matches_a_real_run_of_the_reference_portal(mode):
    """The builder stays faithful to the fakes and the browser: a real in-process run of the reference portal takes
    the same steps and variants, visit by visit, and gets the same outcome from every check."""
    target = InProcessTarget.load("portals.reference:create_app")
    real = {name: run_scenario(target, mode, scenario) for name, scenario in SCENARIOS[MODES[mode].flow.key].items()}
    built = _reference(mode)

    def walk(sr):
        return [(v.kind, v.steps, v.variants, v.completed) for v in sr.monitor.visits]

    assert {name: walk(sr) for name, sr in built.items()} == {name: walk(sr) for name, sr in real.items()}
    for check in CHECKS:
        if check.applies(mode, MODES[mode].flow.key):
            assert check.evaluate(built, mode).outcome == check.evaluate(real, mode).outcome, check.id


# ----------------------------------------------------------------------------------------------- helpers of checks.py


def test_a_should_check_that_fails_is_a_warning_and_a_check_that_raises_is_an_internal_error():
    should = Check("x", "x", "SHOULD", {}, (), lambda results, mode: Verdict("failed", "no"))
    assert checks.evaluate(should, {}, "AzApp").outcome == "warning"

    def boom(results, mode):
        raise ValueError("bug")

    with pytest.raises(InternalError):
        checks.evaluate(Check("y", "y", "MUST", {}, (), boom), {}, "AzApp")


@pytest.mark.parametrize("check_id", ["one-retry-on-401", "token-errors-handled", "tolerant-parsing",
                                      "sessions-isolated", "delegate-token-shared"])
def test_checks_that_perturb_a_working_flow_do_not_judge_a_portal_whose_first_access_fails(check_id):
    mode = next(m for m in ("AzUser", "AzDelegate") if m in CHECK[check_id].modes)
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.fetch()
        s.response(500)
    expect(judge(check_id, mode, s), "not_exercised", says="see working-portal")


# ------------------------------------------------------------------------------------------- MUST: valid-token-reused


@pytest.mark.parametrize("mode", ALL)
def test_valid_token_reused_fails_at_the_check_step_when_the_second_access_fetches_a_new_token(mode):
    s = first_access(mode, "valid-token")
    with s.wait(60).visit():
        s.request("/")
        renewal = s.fetch(login=False, consent=False)
        s.bc()
        s.response(200)
    expect(judge("valid-token-reused", mode, s), "failed", step=step(mode, Role.CHECK), evidence=[renewal.seq],
           scenarios=["valid-token"], says="yet the portal")


@pytest.mark.parametrize("mode", ALL)
def test_valid_token_reused_is_not_exercised_without_two_accesses(mode):
    expect(judge("valid-token-reused", mode, drop=("valid-token",)), "not_exercised", says="valid-token")
    expect(judge("valid-token-reused", mode, first_access(mode, "valid-token")), "not_exercised")


@pytest.mark.parametrize("mode", ALL)
def test_valid_token_reused_fails_when_the_second_access_makes_no_business_central_call(mode):
    s = first_access(mode, "valid-token")
    with s.wait(60).visit():
        s.request("/")
        s.response(500)
    v = judge("valid-token-reused", mode, s)
    expect(v, "failed", evidence=s.seqs(1), scenarios=["valid-token"], says="made no Business Central call")
    assert "visit 2 by alice" in v.received


@pytest.mark.parametrize("mode", ALL)
@pytest.mark.parametrize("case", ["first access called no BC", "second access sent a forged token"])
def test_valid_token_reused_fails_when_the_second_access_sends_another_token(mode, case):
    s = Script(mode, "valid-token")
    if case == "first access called no BC":
        with s.visit():
            s.request("/")
            s.fetch()
            s.response(500)
        token = None
    else:
        s.access()
        token = "forged"
    with s.wait(60).visit():
        s.request("/")
        call = s.bc(token)
        s.response(200)
    expect(judge("valid-token-reused", mode, s), "failed", evidence=[call.seq], says="other than the stored one")


# ---------------------------------------------------------------------------------------- MUST: missing-token-fetched


def _fetch_step(mode: str) -> str:
    return step(mode, Role.REDIRECT if MODES[mode].flow.has(Role.REDIRECT) else Role.TOKEN_REQUEST)


@pytest.mark.parametrize("mode", ALL)
def test_missing_token_fetched_is_not_exercised_without_its_scenario(mode):
    expect(judge("missing-token-fetched", mode, drop=("missing-token",)), "not_exercised", says="missing-token")


@pytest.mark.parametrize("mode", ALL)
@pytest.mark.parametrize(("error", "message"), [("the scenario stopped: OSError: boom", "the scenario stopped"),
                                                 ("", "no visit happened")])
def test_missing_token_fetched_fails_when_no_visit_happened(mode, error, message):
    expect(judge("missing-token-fetched", mode, Script(mode, error=error)), "failed", evidence=[], says=message)


@pytest.mark.parametrize("mode", ALL)
def test_missing_token_fetched_fails_when_the_first_access_gets_no_token(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        probe = s.bc(token="", status=401)
        s.response(500)
    v = judge("missing-token-fetched", mode, s)
    expect(v, "failed", evidence=[probe.seq], scenarios=["missing-token"], says="on the first access")
    assert _fetch_step(mode) in v.expected


@pytest.mark.parametrize("mode", ALL)
def test_missing_token_fetched_fails_when_business_central_is_called_before_the_token_is_fetched(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        probe = s.bc(token="", status=401)
        fetch = s.fetch()
        s.bc()
        s.response(200)
    v = judge("missing-token-fetched", mode, s)
    expect(v, "failed", evidence=[probe.seq, fetch.seq], says="before a token was obtained")
    assert _fetch_step(mode) in v.expected


# --------------------------------------------------------------------------------------- MUST: expired-token-replaced


@pytest.mark.parametrize("mode", ALL)
def test_expired_token_replaced_fails_at_the_check_step_when_the_expired_token_reaches_business_central(mode):
    s = first_access(mode, "expired-token")
    with s.wait(3601).visit():
        s.request("/")
        old = s.bc(status=401)
        s.response(502)
    expect(judge("expired-token-replaced", mode, s), "failed", step=step(mode, Role.CHECK), evidence=[old.seq],
           scenarios=["expired-token"], says="had expired 1 s before")


@pytest.mark.parametrize("mode", ALL)
def test_expired_token_replaced_is_not_exercised_without_an_access_after_the_expiry(mode):
    expect(judge("expired-token-replaced", mode, drop=("expired-token",)), "not_exercised", says="expired-token")
    expect(judge("expired-token-replaced", mode, first_access(mode, "expired-token")), "not_exercised")


@pytest.mark.parametrize("mode", ALL)
def test_expired_token_replaced_fails_when_no_new_token_is_obtained(mode):
    s = first_access(mode, "expired-token")
    with s.wait(3601).visit():
        s.request("/")
        forged = s.bc(token="forged", status=401)
        s.response(502)
    expect(judge("expired-token-replaced", mode, s), "failed", evidence=[forged.seq], says="no new token")


@pytest.mark.parametrize("mode", ALL)
def test_expired_token_replaced_fails_when_business_central_is_called_before_the_renewal(mode):
    s = first_access(mode, "expired-token")
    with s.wait(3601).visit():
        s.request("/")
        s.bc(token="", status=401)  # an anonymous probe is no call with a token: not the evidence
        forged = s.bc(token="forged", status=401)
        s.fetch(login=False, consent=False)
        s.bc()
        s.response(200)
    expect(judge("expired-token-replaced", mode, s), "failed", evidence=[forged.seq], says="before renewal")


# ----------------------------------------------------------------------------- MUST: token-request-client-credentials


def test_token_request_client_credentials_is_not_exercised_without_a_token_request():
    s = Script("AzApp")
    with s.visit():
        s.request("/")
        s.response(500)
    expect(judge("token-request-client-credentials", "AzApp", s, base=False), "not_exercised",
           says="the portal made no token request")


@pytest.mark.parametrize(("fields", "says"), [
    ({"secret_in_url": True}, "the client secret was sent in the URL"),
    ({"grant": "password"}, "grant_type was 'password'"),
    ({"client_id": "00000000-0000-0000-0000-000000000000"}, "client_id was '00000000-"),
    ({"client_auth": "none"}, "no client secret was sent"),
    ({"scope": "https://graph.microsoft.com/.default"}, "scope was 'https://graph.microsoft.com/.default'"),
])
def test_token_request_client_credentials_names_what_the_request_got_wrong(fields, says):
    s = Script("AzApp")
    with s.visit():
        s.request("/")
        bad = s.token(**{"grant": "client_credentials", **fields})
        s.bc()
        s.response(200)
    expect(judge("token-request-client-credentials", "AzApp", s), "failed", step=step("AzApp", Role.TOKEN_REQUEST),
           evidence=[bad.seq], scenarios=["missing-token"], says=says)


def test_token_request_client_credentials_excuses_a_faulted_request_its_missing_secret_and_scope():
    s = Script("AzApp", "authority-invalid-client")
    with s.visit():
        s.request("/")
        s.client_credentials(status=401, client_auth="none", scope="", fault="401 invalid_client")
        s.response(502)
    expect(judge("token-request-client-credentials", "AzApp", s), "passed")


# ---------------------------------------------------------------------------------------- MUST: redirect-to-authority


@pytest.mark.parametrize("mode", CODE)
def test_redirect_to_authority_fails_when_the_portal_uses_client_credentials(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        app = s.client_credentials()
        s.bc()
        s.response(200)
    expect(judge("redirect-to-authority", mode, s), "failed", step=step(mode, Role.REDIRECT), evidence=[app.seq],
           scenarios=["missing-token"])


@pytest.mark.parametrize("mode", CODE)
def test_redirect_to_authority_is_not_exercised_without_missing_token(mode):
    expect(judge("redirect-to-authority", mode, drop=("missing-token",)), "not_exercised", says="missing-token")


@pytest.mark.parametrize("mode", CODE)
@pytest.mark.parametrize("visited", [True, False])
def test_redirect_to_authority_fails_when_the_user_is_never_sent_to_the_authority(mode, visited):
    s = Script(mode, error="" if visited else "the scenario stopped: boom")
    if visited:
        with s.visit():
            s.request("/")
            s.response(200)
    v = judge("redirect-to-authority", mode, s)
    expect(v, "failed", step=step(mode, Role.REDIRECT), evidence=[], says="never sent to the Authority")
    assert v.received == ("visit 1 by alice: steps AC-1; page status 200" if visited else s.error)


@pytest.mark.parametrize("mode", CODE)
@pytest.mark.parametrize(("fields", "says"), [
    ({"response_type": "token"}, "response_type was 'token'"),
    ({"client_id_sent": "someone-else"}, "client_id was 'someone-else'"),
    ({"redirect_uri": "http://localhost:5000/elsewhere"}, "redirect_uri was 'http://localhost:5000/elsewhere'"),
    ({"scope": "openid profile"}, "names no Business Central permission"),
    ({"path": "/common/oauth2/v2.0/authorize"}, "not the configured Authority's"),
])
def test_redirect_to_authority_names_what_the_authorize_request_got_wrong(mode, fields, says):
    s = Script(mode)
    with s.visit():
        s.request("/")
        get = s.sign_in(**fields)
        s.response(400)
    expect(judge("redirect-to-authority", mode, s), "failed", step=step(mode, Role.REDIRECT), evidence=[get.seq],
           scenarios=["missing-token"], says=says)


@pytest.mark.parametrize("mode", CODE)
def test_redirect_to_authority_accepts_the_organizations_endpoint_and_the_bc_application_id_scope(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.sign_in(path="/organizations/oauth2/v2.0/authorize",
                  scope="996def3d-b36c-4153-8607-a6fd5c01bb8b/Financials.ReadWrite.All")
        s.response(400)
    expect(judge("redirect-to-authority", mode, s), "passed")


# ------------------------------------------------------------------------------------ MUST: login-consent-when-needed


@pytest.mark.parametrize("mode", CODE)
def test_login_consent_when_needed_is_not_exercised_without_its_scenarios(mode):
    drop = ("not-signed-in", "consented-not-signed-in", "signed-in-not-consented", "signed-in-and-consented")
    expect(judge("login-consent-when-needed", mode, drop=drop), "not_exercised", says="not-signed-in")


@pytest.mark.parametrize("mode", CODE)
@pytest.mark.parametrize(("name", "login", "consent"), [("not-signed-in", True, True),
                                                        ("consented-not-signed-in", True, False),
                                                        ("signed-in-not-consented", False, True),
                                                        ("signed-in-and-consented", False, False)])
def test_login_consent_when_needed_fails_when_a_sign_in_situation_does_not_complete(mode, name, login, consent):
    s = Script(mode, name)
    with s.visit():
        s.request("/")
        s.sign_in(login, consent)
        s.response(500)
    expect(judge("login-consent-when-needed", mode, s), "failed", evidence=s.seqs(server="authority"),
           scenarios=[name], says=f"scenario {name}: the flow did not complete")


@pytest.mark.parametrize("mode", CODE)
def test_login_consent_when_needed_fails_when_a_scenario_had_no_visit(mode):
    v = judge("login-consent-when-needed", mode, Script(mode, "not-signed-in", error="the scenario stopped: boom"))
    expect(v, "failed", evidence=[], says="did not complete")
    assert v.received == "the scenario stopped: boom"


# ------------------------------------------------------------------------------------ MUST: code-redeemed-server-side


@pytest.mark.parametrize("mode", CODE)
def test_code_redeemed_server_side_is_not_exercised_without_a_first_access(mode):
    expect(judge("code-redeemed-server-side", mode, drop=("missing-token",)), "not_exercised")
    expect(judge("code-redeemed-server-side", mode, Script(mode, error="stopped")), "not_exercised")


@pytest.mark.parametrize("mode", CODE)
def test_code_redeemed_server_side_fails_when_the_browser_calls_the_token_endpoint(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.sign_in()
        post = s.request(TOKEN_PATH, "POST", host="login.microsoftonline.com")
        s.response(200, host="login.microsoftonline.com")
    expect(judge("code-redeemed-server-side", mode, s), "failed", step=step(mode, Role.TOKEN_REQUEST),
           evidence=[post.seq], scenarios=["missing-token"])


@pytest.mark.parametrize("mode", CODE)
def test_code_redeemed_server_side_fails_when_no_code_was_issued(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.response(200)
    expect(judge("code-redeemed-server-side", mode, s), "failed", step=step(mode, Role.CALLBACK), evidence=[])


@pytest.mark.parametrize("mode", CODE)
def test_code_redeemed_server_side_fails_when_the_code_is_never_redeemed(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.sign_in()
        s.response(500)
    (code,) = s.find("authority", "authorize", stage="code_issued")
    expect(judge("code-redeemed-server-side", mode, s), "failed", step=step(mode, Role.TOKEN_REQUEST),
           evidence=[code.seq], says="never redeemed")


@pytest.mark.parametrize("mode", CODE)
@pytest.mark.parametrize(("fields", "says"), [({"redirect_uri": "http://localhost:5000/other"}, "differs from"),
                                              ({"client_auth": "none"}, "no client secret was sent")])
def test_code_redeemed_server_side_names_what_the_redemption_got_wrong(mode, fields, says):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.sign_in()
        bad = s.redeem(**fields)
        s.response(303, location="/")
        s.request("/")
        s.bc()
        s.response(200)
    expect(judge("code-redeemed-server-side", mode, s), "failed", step=step(mode, Role.TOKEN_REQUEST),
           evidence=[bad.seq], says=says)


# -------------------------------------------------------------------------------------------- MUST: bearer-token-used


@pytest.mark.parametrize("mode", ALL)
@pytest.mark.parametrize("in_query", [False, True])
def test_bearer_token_used_fails_at_the_use_step_on_a_call_without_a_bearer_token(mode, in_query):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.fetch()
        call = s.bc(token="", status=401, token_in_query=in_query)
        s.response(502)
    v = judge("bearer-token-used", mode, s)
    expect(v, "failed", step=step(mode, Role.USE), evidence=[call.seq], scenarios=["missing-token"],
           says="carried no bearer token")
    assert ("in the query string" in v.received) == in_query


@pytest.mark.parametrize("mode", ALL)
@pytest.mark.parametrize(("token", "detail", "says"), [
    ("forged", {}, "never issued"),
    (None, {"bearer_kind": "ID token", "bearer": "the ID token of alice"}, "the ID token of alice (not an access"),
])
def test_bearer_token_used_fails_at_the_use_step_on_a_token_the_monitor_rejects(mode, token, detail, says):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.fetch()
        call = s.bc(token, status=401, **detail)
        s.response(502)
    expect(judge("bearer-token-used", mode, s), "failed", step=step(mode, Role.USE), evidence=[call.seq],
           scenarios=["missing-token"], says=says)


@pytest.mark.parametrize("mode", ALL)
def test_bearer_token_used_leaves_expired_tokens_to_expired_token_replaced(mode):
    s = first_access(mode, "expired-token")
    s.wait(3601).reuse()
    assert [v.kind for v in s.result().monitor.violations] == [Kind.EXPIRED_TOKEN]
    expect(judge("bearer-token-used", mode, s), "passed")


@pytest.mark.parametrize("mode", ALL)
def test_bearer_token_used_is_not_exercised_without_a_business_central_call(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.response(500)
    expect(judge("bearer-token-used", mode, s, base=False), "not_exercised", says="never called Business Central")


# -------------------------------------------------------------------------------- MUST: bc-gets-only-the-access-token


@pytest.mark.parametrize("mode", ALL)
@pytest.mark.parametrize(("carried", "says"), [
    (["the client secret in the x-client-secret header"], "sent the client secret in the x-client-secret header to"),
    (["a code of alice in the query string", "the refresh token of alice in the body"], "Central (and 1 more)"),
])
def test_bc_gets_only_the_access_token_fails_at_the_use_step_on_any_other_credential(mode, carried, says):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.fetch()
        call = s.bc(credentials_carried=carried)
        s.response(200)
    v = judge("bc-gets-only-the-access-token", mode, s)
    expect(v, "failed", step=step(mode, Role.USE), evidence=[call.seq], scenarios=["missing-token"], says=says)
    assert "; ".join(carried) in v.received


@pytest.mark.parametrize("mode", ALL)
def test_bc_gets_only_the_access_token_names_an_id_token_sent_as_the_bearer_token(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.fetch()
        call = s.bc(bearer_kind="ID token", bearer="the ID token of alice", status=401,
                    credentials_carried=["the ID token of alice in the authorization header"])
        s.response(502)
    v = judge("bc-gets-only-the-access-token", mode, s)
    expect(v, "failed", step=step(mode, Role.USE), evidence=[call.seq],
           says="sent the ID token of alice (not an access token) as the bearer token to Business Central")
    assert "(and" not in v.message


@pytest.mark.parametrize("mode", ALL)
def test_bc_gets_only_the_access_token_is_not_exercised_without_a_business_central_call(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.response(500)
    expect(judge("bc-gets-only-the-access-token", mode, s, base=False), "not_exercised")


# ----------------------------------------------------------------------------------------------- MUST: working-portal


@pytest.mark.parametrize("mode", ALL)
def test_working_portal_is_not_exercised_without_its_scenarios(mode):
    v = judge("working-portal", mode, drop=("missing-token", "valid-token", "expired-token"))
    expect(v, "not_exercised", says="missing-token")


@pytest.mark.parametrize("mode", ALL)
def test_working_portal_fails_with_the_reason_a_scenario_had_no_visit(mode):
    s = Script(mode, "valid-token", error="the portal could not be built: ImportError: no module named x")
    expect(judge("working-portal", mode, s), "failed", evidence=[], scenarios=["valid-token"], says="ImportError")


@pytest.mark.parametrize("mode", ALL)
def test_working_portal_fails_when_an_access_does_not_end_on_a_working_page(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.fetch()
        s.bc()
        s.portal_problem("the portal raised KeyError: 'customers'")
        s.response(500)
    v = judge("working-portal", mode, s)
    expect(v, "failed", evidence=[e for e in s.seqs(0) if s.events[e - 1].server != "user"][:12],
           scenarios=["missing-token"], says="scenario missing-token: the user did not get a working page")
    assert v.received.endswith("page status 500; the portal raised KeyError: 'customers'")


@pytest.mark.parametrize("mode", ALL)
@pytest.mark.parametrize(("status", "says"), [(401, "(401 Authentication_InvalidCredentials)"), (429, "(429)")])
def test_working_portal_fails_at_the_working_step_on_a_2xx_page_after_business_central_refused(mode, status, says):
    s = first_access(mode, "bc-revoked-token")
    with s.visit():
        s.request("/")
        refused = s.bc(status=status)
        s.response(200)
    expect(judge("working-portal", mode, s), "failed", step=step(mode, Role.WORKING),
           evidence=[refused.seq, s.visits[1].end_seq], scenarios=["bc-revoked-token"], says=says)


# ---------------------------------------------------------------------- ORDER: MUST checks fail on steps out of order


@pytest.mark.parametrize(("mode", "check_id"), [("AzApp", "missing-token-fetched"),
                                                ("AzUser", "code-redeemed-server-side"),
                                                ("AzDelegate", "code-redeemed-server-side")])
def test_a_must_check_fails_when_its_step_is_taken_out_of_order(mode, check_id):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.fetch()
        s.bc()
        again = s.token("authorization_code" if mode != "AzApp" else "client_credentials", redeemed=("code:x",))
        s.response(200)
    v = judge(check_id, mode, s)
    expect(v, "failed", step=step(mode, Role.TOKEN_REQUEST), evidence=[again.seq], scenarios=["missing-token"],
           says=f"taken out of order, after {step(mode, Role.USE)}")
    assert step(mode, Role.WORKING) in v.expected


@pytest.mark.parametrize("mode", CODE)
def test_a_step_out_of_order_in_a_replayed_callback_is_left_to_the_should_checks(mode):
    s = first_access(mode, "replayed-callback")
    with s.visit(kind="replay", callback_replayed=True):
        s.request(REDIRECT_PATH, query="code=[REDACTED]&state=x")
        s.redeem(status=400, error="invalid_grant")
        s.response(400)
    assert [v.kind for v in s.result().monitor.violations] == [Kind.ORDER]
    expect(judge("code-redeemed-server-side", mode, s), "passed")


# --------------------------------------------------------------------------------------- SHOULD: token-in-header-only


@pytest.mark.parametrize("mode", ALL)
def test_token_in_header_only_warns_on_a_token_in_the_query_string(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.fetch()
        call = s.bc(token_in_query=True)
        s.response(200)
    expect(judge("token-in-header-only", mode, s), "warning", evidence=[call.seq], scenarios=["missing-token"],
           says="query string")


@pytest.mark.parametrize("mode", ALL)
def test_token_in_header_only_is_not_exercised_without_a_business_central_call(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.response(500)
    expect(judge("token-in-header-only", mode, s, base=False), "not_exercised")


# ------------------------------------------------------------------------------------------- SHOULD: one-retry-on-401


@pytest.mark.parametrize("mode", ALL)
def test_one_retry_on_401_is_not_exercised_without_a_refused_call(mode):
    expect(judge("one-retry-on-401", mode, drop=("bc-revoked-token", "bc-refuses-all")), "not_exercised")
    never = first_access(mode, "bc-revoked-token").measure()  # the measured access never happened
    refuses_none = first_access(mode, "bc-refuses-all")
    v = judge("one-retry-on-401", mode, never, refuses_none)
    expect(v, "not_exercised", says="refused no call")


def _refused_again_and_again(s: Script, refusals: int, renewals_between: int = 1, problem: str = "") -> list[int]:
    """One measured access: a token, then ``refusals`` refused calls with renewals between them."""
    s.measure()
    seqs = []
    with s.visit(problem=problem):
        s.request("/")
        s.fetch()
        for i in range(refusals):
            seqs.append(s.bc(status=401).seq)
            if i < refusals - 1:
                seqs += [s.fetch(login=False, consent=False).seq for _ in range(renewals_between)]
        s.response(502)
    return seqs


@pytest.mark.parametrize("mode", ALL)
@pytest.mark.parametrize(("refusals", "renewals", "problem"), [(3, 1, ""), (2, 2, ""),
                                                               (1, 1, "redirect loop: 12 pages")])
def test_one_retry_on_401_warns_when_the_portal_loops_after_a_401(mode, refusals, renewals, problem):
    s = Script(mode, "bc-refuses-all")
    evidence = _refused_again_and_again(s, refusals, renewals, problem)
    v = judge("one-retry-on-401", mode, s)
    expect(v, "warning", evidence=evidence, scenarios=["bc-refuses-all"], says="looped after a 401")
    assert v.received.endswith(f"; {problem}" if problem else "in one access")


@pytest.mark.parametrize("mode", ALL)
@pytest.mark.parametrize("renews", [False, True])
def test_one_retry_on_401_warns_when_the_portal_does_not_renew_and_retry(mode, renews):
    s = first_access(mode, "bc-revoked-token").measure()
    with s.visit():
        s.request("/")
        refused = [s.bc(status=401).seq]
        if renews:
            s.fetch(login=False, consent=False)
            refused.append(s.bc(status=401).seq)
        s.response(502)
    expect(judge("one-retry-on-401", mode, s), "warning", evidence=refused, scenarios=["bc-revoked-token"],
           says="did not renew the token and retry")


@pytest.mark.parametrize("mode", ALL)
def test_one_retry_on_401_does_not_count_an_anonymous_probe_as_a_refusal(mode):
    s = first_access(mode, "bc-revoked-token").measure()
    with s.visit():
        s.request("/")
        s.bc(token="", status=401)
        s.bc(status=401)
        s.fetch(login=False, consent=False)
        s.bc()
        s.response(200)
    expect(judge("one-retry-on-401", mode, s), "passed")


# --------------------------------------------------------------------------------------- SHOULD: token-errors-handled


@pytest.mark.parametrize("mode", ALL)
def test_token_errors_handled_is_not_exercised_without_its_scenarios(mode):
    drop = ("authority-invalid-client", "authority-unavailable", "authority-throttled")
    expect(judge("token-errors-handled", mode, drop=drop), "not_exercised", says="authority-invalid-client")


def _authority_error_visit(mode: str, name: str = "authority-unavailable", page: int | None = 502,
                           requests: int = 1, problem: str = "", portal_problem: str = "", **visit) -> Script:
    s = Script(mode, name).measure()
    with s.visit(problem=problem, **visit):
        s.request("/")
        if MODES[mode].flow.has(Role.REDIRECT):
            s.sign_in()
            for _ in range(requests):
                s.redeem(status=503, error="temporarily_unavailable", fault="503 temporarily_unavailable")
        else:
            for _ in range(requests):
                s.client_credentials(status=503, error="temporarily_unavailable", fault="503 temporarily_unavailable")
        if portal_problem:
            s.portal_problem(portal_problem)
        if page is not None:
            s.response(page)
    return s


@pytest.mark.parametrize("mode", ALL)
@pytest.mark.parametrize(("kwargs", "received"), [
    ({"page": None, "problem": "no answer at / within 10 s"}, "no answer at / within 10 s"),
    ({"portal_problem": "the portal raised RuntimeError: down"}, "the portal raised RuntimeError: down"),
    ({"page": None, "status": 0}, "no response"),
])
def test_token_errors_handled_warns_when_the_portal_answers_no_page(mode, kwargs, received):
    v = judge("token-errors-handled", mode, _authority_error_visit(mode, **kwargs))
    expect(v, "warning", evidence=[], scenarios=["authority-unavailable"], says="did not answer with a page")
    assert v.received == received


@pytest.mark.parametrize("mode", ALL)
def test_token_errors_handled_warns_on_more_than_three_token_requests_in_one_access(mode):
    s = _authority_error_visit(mode, requests=4)
    expect(judge("token-errors-handled", mode, s), "warning", evidence=s.seqs(server="authority")[-4:],
           scenarios=["authority-unavailable"], says="4 token requests in one access")


@pytest.mark.parametrize("mode", ALL)
@pytest.mark.parametrize(("kwargs", "says"), [
    ({"page": 500, "page_text": "Traceback (most recent call last):\n  File ..."}, "the error page is a stack trace"),
    ({"leaks": ("the client secret in the page of GET /",)}, "the error page echoed the client secret"),
])
def test_token_errors_handled_warns_on_an_error_page_that_says_too_much(mode, kwargs, says):
    v = judge("token-errors-handled", mode, _authority_error_visit(mode, **kwargs))
    expect(v, "warning", evidence=[], scenarios=["authority-unavailable"], says=says)


# ------------------------------------------------------------------------------------------- SHOULD: tolerant-parsing


@pytest.mark.parametrize("mode", ALL)
def test_tolerant_parsing_is_not_exercised_without_its_scenario(mode):
    expect(judge("tolerant-parsing", mode, drop=("tolerant-parsing",)), "not_exercised", says="tolerant-parsing")


@pytest.mark.parametrize("mode", ALL)
@pytest.mark.parametrize("visited", [True, False])
def test_tolerant_parsing_warns_when_the_portal_fails_on_the_quirky_token_response(mode, visited):
    s = Script(mode, "tolerant-parsing", error="" if visited else "the scenario stopped: boom")
    if visited:
        with s.visit():
            s.request("/")
            s.fetch()
            s.response(500)
    v = judge("tolerant-parsing", mode, s)
    expect(v, "warning", evidence=[], scenarios=["tolerant-parsing"], says="token_type 'bearer'")
    assert v.received.startswith("visit 1 by alice") if visited else v.received == s.error


# ------------------------------------------------------------------------------------------------ SHOULD: state-bound


@pytest.mark.parametrize("mode", CODE)
def test_state_bound_is_not_exercised_without_an_authorize_request(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.response(500)
    expect(judge("state-bound", mode, s, base=False), "not_exercised", says="no authorize request")


@pytest.mark.parametrize("mode", CODE)
@pytest.mark.parametrize(("fields", "says"), [({"state_present": False}, "carried no state"),
                                              ({"state_bits": 48.0, "state_length": 8}, "8 characters (~48 bits)")])
def test_state_bound_warns_at_the_redirect_step_on_a_missing_or_short_state(mode, fields, says):
    s = Script(mode)
    with s.visit():
        s.request("/")
        get = s.sign_in(**fields)
        s.response(400)
    expect(judge("state-bound", mode, s), "warning", step=step(mode, Role.REDIRECT), evidence=[get.seq],
           scenarios=["missing-token"], says=says)


@pytest.mark.parametrize("mode", CODE)
def test_state_bound_warns_at_the_redirect_step_when_a_state_is_sent_twice(mode):
    s = Script(mode)
    gets = []
    for _ in range(2):
        with s.visit():
            s.request("/")
            gets.append(s.sign_in(state_fp="state:000000000001").seq)
            s.response(400)
    expect(judge("state-bound", mode, s, base=False), "warning", step=step(mode, Role.REDIRECT), evidence=gets,
           scenarios=[], says="the same state")


@pytest.mark.parametrize("mode", CODE)
@pytest.mark.parametrize("name", ["wrong-state", "missing-state"])
def test_state_bound_warns_at_the_callback_step_when_a_tampered_state_leads_to_a_token_request(mode, name):
    s = Script(mode, name)
    with s.visit():
        s.request("/")
        s.sign_in()
        redeemed = s.redeem()
        s.response(303, location="/")
    expect(judge("state-bound", mode, s), "warning", step=step(mode, Role.CALLBACK), evidence=[redeemed.seq],
           scenarios=[name], says=f"had a {name.split('-')[0]} state")


@pytest.mark.parametrize("mode", CODE)
def test_state_bound_passes_on_state_alone_when_no_tampering_scenario_ran(mode):
    expect(judge("state-bound", mode, drop=("wrong-state", "missing-state")), "passed",
           says="no tampering scenario ran")


# -------------------------------------------------------------------------------------------------- SHOULD: pkce-s256


@pytest.mark.parametrize("mode", CODE)
def test_pkce_s256_is_not_exercised_without_an_authorize_request(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.response(500)
    expect(judge("pkce-s256", mode, s, base=False), "not_exercised", says="no authorize request")


@pytest.mark.parametrize("mode", CODE)
@pytest.mark.parametrize(("method", "says"), [("plain", "PKCE method was plain"), ("", "PKCE method was no challenge")])
def test_pkce_s256_warns_at_the_redirect_step_on_another_method(mode, method, says):
    s = Script(mode)
    with s.visit():
        s.request("/")
        get = s.sign_in(code_challenge_method=method)
        s.response(400)
    expect(judge("pkce-s256", mode, s), "warning", step=step(mode, Role.REDIRECT), evidence=[get.seq],
           scenarios=["missing-token"], says=says)


@pytest.mark.parametrize("mode", CODE)
def test_pkce_s256_warns_at_the_redirect_step_on_a_reused_challenge(mode):
    s = Script(mode)
    gets = []
    for _ in range(2):
        with s.visit():
            s.request("/")
            gets.append(s.sign_in(challenge_fp="pkce:000000000001").seq)
            s.response(400)
    expect(judge("pkce-s256", mode, s, base=False), "warning", step=step(mode, Role.REDIRECT), evidence=gets,
           says="reused")


@pytest.mark.parametrize("mode", CODE)
@pytest.mark.parametrize("fault", ["", "503 temporarily_unavailable"])
def test_pkce_s256_warns_at_the_token_request_step_on_a_redemption_without_verifier(mode, fault):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.sign_in()
        redeemed = s.redeem(code_verifier=False, fault=fault)
        s.response(303, location="/")
    v = judge("pkce-s256", mode, s)
    if fault:  # the Authority failed the request before reading it
        expect(v, "passed")
    else:
        expect(v, "warning", step=step(mode, Role.TOKEN_REQUEST), evidence=[redeemed.seq], says="code_verifier")


# ----------------------------------------------------------------------------------------- SHOULD: exact-redirect-uri


@pytest.mark.parametrize("mode", CODE)
def test_exact_redirect_uri_warns_at_the_redirect_step_on_another_redirect_uri(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        get = s.sign_in(redirect_uri="http://127.0.0.1:5000/auth/callback")
        s.response(400)
    expect(judge("exact-redirect-uri", mode, s), "warning", step=step(mode, Role.REDIRECT), evidence=[get.seq],
           scenarios=["missing-token"], says="differs from the configured RedirectURI")


@pytest.mark.parametrize("mode", CODE)
def test_exact_redirect_uri_warns_at_the_token_request_step_on_another_redirect_uri(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.sign_in()
        redeemed = s.redeem(redirect_uri="http://localhost:5000/auth/callback/")
        s.response(303, location="/")
    expect(judge("exact-redirect-uri", mode, s), "warning", step=step(mode, Role.TOKEN_REQUEST),
           evidence=[redeemed.seq], scenarios=["missing-token"], says="code redemption differs")


@pytest.mark.parametrize("mode", CODE)
def test_exact_redirect_uri_is_not_exercised_without_an_authorize_or_code_redemption(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.response(500)
    expect(judge("exact-redirect-uri", mode, s, base=False), "not_exercised")


# --------------------------------------------------------------------------------------------- SHOULD: code-used-once


@pytest.mark.parametrize("mode", CODE)
def test_code_used_once_warns_at_the_token_request_step_on_a_code_redeemed_twice(mode):
    s = Script(mode, "replayed-callback")
    s.access()
    (first,) = s.find("authority", "token")
    with s.measure().visit(kind="replay", callback_replayed=True):
        s.request(REDIRECT_PATH, query="code=[REDACTED]&state=x")
        second = s.redeem(status=400, error="invalid_grant")
        s.response(400)
    expect(judge("code-used-once", mode, s), "warning", step=step(mode, Role.TOKEN_REQUEST),
           evidence=[first.seq, second.seq], scenarios=["replayed-callback"], says="redeemed twice")


@pytest.mark.parametrize("mode", CODE)
def test_code_used_once_is_not_exercised_without_a_replayed_callback(mode):
    expect(judge("code-used-once", mode, drop=("replayed-callback",)), "not_exercised", says="replayed-callback")
    s = first_access(mode, "replayed-callback")
    with s.measure().visit(kind="replay", callback_replayed=False):  # no authorization response to send again
        s.request("/")
        s.response(200)
    expect(judge("code-used-once", mode, s), "not_exercised", says="never reached the RedirectURI")


# ------------------------------------------------------------------------------------- SHOULD: consent-denied-handled


@pytest.mark.parametrize("mode", CODE)
def test_consent_denied_handled_is_not_exercised_without_a_denial(mode):
    expect(judge("consent-denied-handled", mode, drop=("consent-denied",)), "not_exercised", says="consent-denied")
    expect(judge("consent-denied-handled", mode, Script(mode, "consent-denied", error="stopped")), "not_exercised")


def _denied(mode: str, token_request: bool = False, page: int | None = 403, **visit) -> tuple[Script, int]:
    s = Script(mode, "consent-denied").measure()
    token = 0
    with s.visit(**visit):
        s.request("/")
        s.sign_in(deny=True)
        if token_request:
            token = s.token("authorization_code", status=400, error="invalid_request").seq
        if page is not None:
            s.response(page)
    return s, token


@pytest.mark.parametrize("mode", CODE)
def test_consent_denied_handled_warns_at_the_consent_step_on_a_token_request_after_the_denial(mode):
    s, token = _denied(mode, token_request=True)
    expect(judge("consent-denied-handled", mode, s), "warning", step=step(mode, Role.CONSENT), evidence=[token],
           scenarios=["consent-denied"], says="after the user declined")


@pytest.mark.parametrize("mode", CODE)
@pytest.mark.parametrize(("visit", "received"), [
    ({"problem": "the portal raised KeyError: 'code'", "page": None}, "the portal raised KeyError: 'code'"),
    ({"page": None, "status": 0}, "status none"),
    ({"page": 500}, "status 500"),
    ({"page": 200, "page_text": "  "}, "status 200"),
])
def test_consent_denied_handled_warns_at_the_callback_step_without_a_clear_page(mode, visit, received):
    s, _ = _denied(mode, **visit)
    v = judge("consent-denied-handled", mode, s)
    expect(v, "warning", step=step(mode, Role.CALLBACK), evidence=[], scenarios=["consent-denied"],
           says="no clear page after the denial")
    assert v.received == received


# ------------------------------------------------------------------------------------- SHOULD: refresh-token-rotation


def _refreshed(mode: str, reused: bool) -> tuple[Script, int]:
    s = first_access(mode, "expired-token")
    with s.wait(3601).measure().visit():
        s.request("/")
        refresh = s.refresh(refresh_reused=reused)
        s.bc()
        s.response(200)
    return s, refresh.seq


@pytest.mark.parametrize("mode", CODE)
def test_refresh_token_rotation_warns_at_the_token_request_step_on_a_rotated_refresh_token(mode):
    s, refresh = _refreshed(mode, reused=True)
    expect(judge("refresh-token-rotation", mode, s), "warning", step=step(mode, Role.TOKEN_REQUEST),
           evidence=[refresh], scenarios=["expired-token"], says="already rotated")


@pytest.mark.parametrize("mode", CODE)
def test_refresh_token_rotation_passes_on_the_newest_refresh_token(mode):
    s, _ = _refreshed(mode, reused=False)
    expect(judge("refresh-token-rotation", mode, s), "passed", says="1 refresh(es)")


# ------------------------------------------------------------------- SHOULD: sessions-isolated, delegate-token-shared


def test_sessions_isolated_is_not_exercised_without_two_users():
    expect(judge("sessions-isolated", "AzUser", drop=("two-users",)), "not_exercised", says="two-users")


def test_sessions_isolated_warns_at_the_check_step_when_a_user_gets_another_users_token():
    s = first_access("AzUser", "two-users")
    with s.visit("bob"):
        s.request("/")
        foreign = s.bc()  # alice's token
        s.response(200)
    expect(judge("sessions-isolated", "AzUser", s), "warning", step=step("AzUser", Role.CHECK),
           evidence=[foreign.seq], scenarios=["two-users"], says=f"received {account_of('alice')}'s token")


def test_delegate_token_shared_is_not_exercised_without_a_second_user():
    expect(judge("delegate-token-shared", "AzDelegate", drop=("two-users",)), "not_exercised", says="two-users")
    s = first_access("AzDelegate", "two-users")
    s.reuse("alice")
    expect(judge("delegate-token-shared", "AzDelegate", s), "not_exercised", says="two-users")


def test_delegate_token_shared_warns_at_the_check_step_when_the_second_user_is_sent_to_sign_in():
    s = first_access("AzDelegate", "two-users")
    s.access("bob", login=False, consent=False)
    gets = [e.seq for e in s.find("authority", "authorize") if e.seq > s.visits[1].start_seq]
    v = judge("delegate-token-shared", "AzDelegate", s)
    expect(v, "warning", step=step("AzDelegate", Role.CHECK), evidence=gets, scenarios=["two-users"],
           says="the second portal user was sent to sign in")
    assert v.received.startswith("visit 2 by bob")


# -------------------------------------------------------- SHOULD: no-leakage, callback-hygiene; MAY: app-token-shared


@pytest.mark.parametrize("mode", ALL)
def test_no_leakage_warns_with_the_leak_and_the_visit_that_showed_it(mode):
    leak = "an access token in the Location of GET /auth/callback"
    s = Script(mode)
    v = s.access(leaks=(leak, "the client secret in the page of GET /"))
    expect(judge("no-leakage", mode, s), "warning", evidence=[v.end_seq], scenarios=["missing-token"], says=leak)


@pytest.mark.parametrize("mode", ALL)
def test_no_leakage_is_not_exercised_without_a_visit(mode):
    expect(judge("no-leakage", mode, Script(mode, error="stopped"), base=False), "not_exercised")


def _callback_answered(mode: str, **response) -> tuple[Script, int]:
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.sign_in()
        s.redeem()
        answer = s.response(**{"status": 303, "location": "/", **response})
    return s, answer.seq


@pytest.mark.parametrize("mode", CODE)
@pytest.mark.parametrize(("response", "says"), [
    ({"status": 200}, "rendered at the URL that holds the code"),
    ({"location": "/?code=0.AXoA"}, "still carries the code"),
    ({"referrer_policy": ""}, "sets no Referrer-Policy"),
])
def test_callback_hygiene_warns_at_the_callback_step(mode, response, says):
    s, answer = _callback_answered(mode, **response)
    expect(judge("callback-hygiene", mode, s), "warning", step=step(mode, Role.CALLBACK), evidence=[answer],
           scenarios=["missing-token"], says=says)


@pytest.mark.parametrize("mode", CODE)
def test_callback_hygiene_is_not_exercised_without_a_redeemed_callback(mode):
    s = reference_script(mode, "wrong-state")  # the callback is refused (400) and nothing is redeemed
    expect(judge("callback-hygiene", mode, s, base=False), "not_exercised")


def test_app_token_shared_tells_whether_one_token_served_every_session():
    expect(judge("app-token-shared", "AzApp", drop=("two-users",)), "not_exercised", says="two-users")
    expect(judge("app-token-shared", "AzApp"), "passed", says="one token request per session")
    s = first_access("AzApp", "two-users")
    s.wait(30).reuse("bob")
    expect(judge("app-token-shared", "AzApp", s), "passed", says="one app token served every session")
    static = Script("AzApp", "two-users")
    for user in ("alice", "bob"):
        with static.visit(user):
            static.request("/")
            static.response(200)
    expect(judge("app-token-shared", "AzApp", static), "not_exercised", says="never called Business Central")


# --------------------------------------------------------------------------------------- the monitor: violation kinds


def _not_reused(mode: str) -> Script:
    s = first_access(mode)
    with s.wait(60).visit():
        s.request("/")
        s.fetch(login=False, consent=False)
        s.bc()
        s.response(200)
    return s


def _just_obtained_then_redirected(mode: str) -> Script:
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.sign_in()
        s.redeem()
        s.response(303, location="/")
        s.request("/")
        s.sign_in(login=False, consent=False)
        s.redeem()
        s.response(303, location="/")
    return s


def _first_access_calling(mode: str, **call) -> Script:
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.fetch()
        s.bc(**call)
        s.response(200)
    return s


def _expired(mode: str) -> Script:
    s = first_access(mode)
    s.wait(3601).reuse()
    return s


def _another_user(mode: str) -> Script:
    s = first_access(mode)
    if mode == "AzDelegate":  # the delegate account signs in, the token is alice's
        with s.visit("bob"):
            s.request("/")
            s.sign_in(login=False, consent=False)
            s.redeem(user=account_of("alice"))
            s.response(303, location="/")
            s.request("/")
            s.bc()
            s.response(200)
    else:
        s.reuse("bob")
    return s


def _other_principal(mode: str) -> Script:
    s = Script(mode)
    with s.visit():
        s.request("/")
        if mode == "AzApp":
            s.token("authorization_code", user=account_of("alice"))
        else:
            s.client_credentials()
        s.bc()
        s.response(200)
    return s


def _order(mode: str) -> Script:
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.fetch()
        s.bc()
        s.token("client_credentials" if mode == "AzApp" else "authorization_code")
        s.response(200)
    return s


KINDS = [  # kind, modes, script, step the portal was at, step it took, words of the message
    (Kind.NOT_REUSED, ALL, _not_reused, Role.CHECK, None, "the session held a valid token with 3540 s left, yet"),
    (Kind.NOT_REUSED, CODE, _just_obtained_then_redirected, Role.TOKEN_REQUEST, Role.REDIRECT,
     "had just obtained a token with 3600 s left"),
    (Kind.NO_TOKEN, ALL, lambda m: _first_access_calling(m, token="", status=401), Role.USE, Role.USE,
     "received no bearer token"),
    (Kind.EXPIRED_TOKEN, ALL, _expired, Role.CHECK, Role.USE, "went straight to Business Central, and"),
    (Kind.NOT_ACCESS_TOKEN, ALL, lambda m: _first_access_calling(m, bearer_kind="refresh token",
                                                                  bearer="the refresh token of alice"),
     Role.USE, Role.USE, "received the refresh token of alice (not an access token)"),
    (Kind.NOT_ISSUED, ALL, lambda m: _first_access_calling(m, token="forged"), Role.USE, Role.USE, "never issued"),
    (Kind.FOREIGN_TOKEN, ("AzUser",), _another_user, Role.CHECK, Role.USE, "during bob@contoso.onmicrosoft.com"),
    (Kind.FOREIGN_TOKEN, ("AzDelegate",), _another_user, Role.USE, Role.USE, "token, not the delegate's"),
    (Kind.WRONG_PRINCIPAL, ALL, _other_principal, Role.USE, Role.USE, "token"),
    (Kind.ORDER, ALL, _order, Role.USE, Role.TOKEN_REQUEST, "is not allowed at step"),
]


def test_every_violation_kind_has_a_case():
    assert {case[0] for case in KINDS} == set(Kind)


@pytest.mark.parametrize(("kind", "mode", "script", "at", "into", "says"),
                         [(k, m, s, a, i, w) for k, modes, s, a, i, w in KINDS for m in modes],
                         ids=lambda x: x.value if isinstance(x, Kind) else None)
def test_the_monitor_names_each_violation_by_kind_step_and_event(kind, mode, script, at, into, says):
    s = script(mode)
    violations = [v for v in s.result().monitor.violations if v.kind == kind]
    assert len(violations) == 1, s.result().monitor.violations
    (v,) = violations
    into = into or (Role.REDIRECT if MODES[mode].flow.has(Role.REDIRECT) else Role.TOKEN_REQUEST)
    assert (v.step, v.into) == (step(mode, at), step(mode, into))
    assert says in v.message
    event = s.events[v.seq - 1]
    assert event.server == ("bc" if v.into == step(mode, Role.USE) else "authority")
    if kind == Kind.NOT_REUSED:
        assert v.facts["seconds_left"] > 300
    if kind == Kind.ORDER:
        assert v.allowed == (step(mode, Role.WORKING),)


def test_a_step_before_any_access_is_out_of_order_from_the_start():
    s = Script("AzUser", "replayed-callback")
    with s.visit(kind="replay", callback_replayed=True):
        s.request(REDIRECT_PATH, query="code=[REDACTED]&state=x")
        s.redeem(status=400, error="invalid_grant")
        s.response(400)
    (v,) = s.result().monitor.violations
    assert (v.kind, v.step, v.into) == (Kind.ORDER, "start", step("AzUser", Role.TOKEN_REQUEST))


# ------------------------------------------------------------------------------------- the monitor: accepted variants


def test_every_variant_has_a_case_and_applies_to_its_flows():
    assert {EARLY_RENEWAL, REFRESH_RENEWAL, RETRY_AFTER_401, SHARED_APP_TOKEN, RESTART} == set(VARIANTS)
    for variant in VARIANTS:
        for flow in {m.flow for m in MODES.values()}:
            assert variant.applies(flow) == (flow.key in variant.flows)


@pytest.mark.parametrize("mode", ALL)
def test_early_renewal_within_the_margin_is_accepted(mode):
    s = first_access(mode, "valid-token")
    with s.wait(3400).visit():  # 200 s left: within MSAL's 300 s margin
        s.request("/")
        s.fetch(login=False, consent=False)
        s.bc()
        s.response(200)
    r = s.result().monitor
    assert r.violations == [] and r.visits[1].variants == [EARLY_RENEWAL.title] and r.visits[1].completed


@pytest.mark.parametrize("mode", CODE)
def test_refresh_renewal_stands_in_for_the_redirect(mode):
    s, refresh = _refreshed(mode, reused=False)
    r = s.result().monitor
    flow = MODES[mode].flow
    assert r.violations == [] and r.visits[1].variants == [REFRESH_RENEWAL.title] and r.visits[1].completed
    assert r.visits[1].steps == [flow.number(x) for x in (Role.ACCESS, Role.CHECK, Role.TOKEN_REQUEST, Role.STORE,
                                                           Role.USE, Role.WORKING)]
    assert r.step_of[refresh] == step(mode, Role.TOKEN_REQUEST)


@pytest.mark.parametrize("mode", ALL)
def test_a_renewal_after_business_central_refused_is_accepted_once_per_visit(mode):
    s = Script(mode, "bc-refuses-all")
    _refused_again_and_again(s, refusals=3)
    r = s.result().monitor
    assert r.violations == [] and r.visits[0].variants == [RETRY_AFTER_401.title] and not r.visits[0].completed


@pytest.mark.parametrize("mode", ALL)
def test_a_token_refused_by_business_central_may_be_replaced_at_the_next_access(mode):
    s = first_access(mode, "bc-revoked-token")
    with s.visit():
        s.request("/")
        s.bc(status=401)
        s.response(502)
    with s.visit():
        s.request("/")
        s.fetch(login=False, consent=False)
        s.bc()
        s.response(200)
    r = s.result().monitor
    assert r.violations == [] and [v.completed for v in r.visits] == [True, False, True]


def test_one_app_token_shared_by_the_sessions_is_accepted_and_named():
    s = first_access("AzApp", "two-users")
    s.wait(30).reuse("bob")
    r = s.result().monitor
    assert r.violations == [] and r.visits[1].variants == [SHARED_APP_TOKEN.title] and r.visits[1].completed


@pytest.mark.parametrize("mode", ALL)
@pytest.mark.parametrize("reached", [True, False])
def test_the_user_starts_over_after_an_access_that_stopped_mid_flow(mode, reached):
    s = Script(mode, "authority-unavailable")
    with s.visit():
        s.request("/")
        s.fetch()
        s.response(500)  # stopped before Business Central
    with s.visit(problem="" if reached else "the portal could not be reached at /"):
        if reached:
            s.request("/")
            s.bc()
            s.response(200)
    r = s.result().monitor
    access = MODES[mode].flow.number(Role.ACCESS)
    assert r.violations == [] and r.visits[1].steps[0] == access and RESTART.title not in r.visits[1].variants
    assert r.visits[1].completed == reached
    if reached:
        assert r.step_of[s.visits[1].start_seq + 1] == step(mode, Role.ACCESS)


@pytest.mark.parametrize("mode", CODE)
def test_an_authorize_request_the_authority_refuses_is_not_the_redirect_step(mode):
    s = Script(mode)
    with s.visit():
        s.request("/")
        s.response(302, location="https://login.microsoftonline.com/...")
        error_page = s.authorize("error_page", status=400)
        s.response(400, host="login.microsoftonline.com")
    r = s.result().monitor
    assert r.violations == [] and r.visits[0].steps == [MODES[mode].flow.number(Role.ACCESS)]
    assert error_page.seq not in r.step_of


def test_an_azapp_portal_that_sends_the_user_to_sign_in_is_judged_by_its_token_requests():
    """The Client Credentials Flow has no redirect step: the monitor does not stumble on the sign-in, and the checks
    name what the portal sent instead of the app token."""
    s = Script("AzApp")
    with s.visit():
        s.request("/")
        s.sign_in()
        redeemed = s.redeem()
        s.response(303, location="/")
        s.request("/")
        call = s.bc()
        s.response(200)
    (v,) = s.result().monitor.violations
    assert (v.kind, v.seq) == (Kind.WRONG_PRINCIPAL, call.seq)
    expect(judge("token-request-client-credentials", "AzApp", s), "failed", step=step("AzApp", Role.TOKEN_REQUEST),
           evidence=[redeemed.seq], says="grant_type was 'authorization_code'")
    expect(judge("bearer-token-used", "AzApp", s), "failed", step=step("AzApp", Role.USE), evidence=[call.seq],
           says="a delegated token instead of the app token")
