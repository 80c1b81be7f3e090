"""Entra error responses: one class per wire error, rendered in one place (oauthlib's style).

Codes and texts follow Microsoft's AADSTS reference (see fake_authority/entra-facts.md).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from conformance.wire import Response


@dataclass
class OAuthError(Exception):
    """A token-endpoint error: ``error`` and HTTP ``status`` are class attributes, AADSTS code per use."""

    code: int
    text: str
    error: ClassVar[str] = "invalid_request"
    status: ClassVar[int] = 400
    suberror: str = ""

    def description(self, now: float, trace_id: str, correlation_id: str) -> str:
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return (f"AADSTS{self.code}: {self.text}\r\nTrace ID: {trace_id}\r\n"
                f"Correlation ID: {correlation_id}\r\nTimestamp: {stamp}")

    def render(self, now: float, correlation_id: str = "") -> Response:
        trace_id, correlation_id = str(uuid.uuid4()), correlation_id or str(uuid.uuid4())
        body = {
            "error": self.error,
            "error_description": self.description(now, trace_id, correlation_id),
            "error_codes": [self.code],
            "timestamp": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }
        if self.suberror:
            body["suberror"] = self.suberror
        headers = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
        if self.status == 401:
            headers.append(("WWW-Authenticate", 'Basic realm="login.microsoftonline.com"'))
        return Response.json(self.status, body, headers)


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    error = "invalid_client"
    status = 401


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class InteractionRequired(OAuthError):
    error = "interaction_required"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class InvalidResource(OAuthError):
    error = "invalid_resource"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class TemporarilyUnavailable(OAuthError):
    error = "temporarily_unavailable"
    status = 503


class ServerError(OAuthError):
    error = "server_error"
    status = 500


# AADSTS codes used by the fake (one place, so messages stay consistent).
SECRET_INVALID = 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client}'."
SECRET_EXPIRED = 7000222, "The provided client secret keys for app '{client}' are expired."
SECRET_MISSING = 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."
CLIENT_UNKNOWN = 700016, "Application with identifier '{client}' was not found in the directory '{tenant}'."
TENANT_UNKNOWN = 90002, "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID."
PARAM_MISSING = 900144, "The request body must contain the following parameter: '{param}'."
PARAM_REPEATED = 9000411, "The request is not properly formatted. The parameter '{param}' is duplicated."
PUBLIC_CLIENT_SECRET = 700025, "Client is public so neither 'client_assertion' nor 'client_secret' should be presented."
PKCE_DOWNGRADE = 501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request: the authorization request carried no code_challenge."
GRANT_EXPIRED = 70008, "The provided authorization code or refresh token has expired due to inactivity."
CODE_REDEEMED = 54005, "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token."
CODE_INVALID = 70000, "The provided value for the 'code' parameter is not valid."
CODE_FOREIGN = 70000, "The provided authorization code was issued to a different client."
REDIRECT_MISMATCH = 500112, "The reply address '{got}' does not match the reply address '{want}' provided when requesting Authorization code."
PKCE_MISMATCH = 501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request."
REFRESH_INVALID = 9002313, "Invalid request. Request is malformed or invalid: the refresh token is not valid."
REFRESH_REVOKED = 50173, "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password, or the refresh token was already used."
SCOPE_INVALID = 70011, "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid: {scope}"
SCOPE_NOT_DEFAULT = 1002012, "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
SCOPE_MULTI_RESOURCE = 700022, "The provided value for the input parameter scope is not valid because it contains more than one resource. Scope {scope} is not valid."
RESOURCE_UNKNOWN = 500011, "The resource principal named {resource} was not found in the tenant named {tenant}."
GRANT_UNSUPPORTED = 70003, "The app requested an unsupported grant type '{grant}'."
MFA_REQUIRED = 50076, "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '{resource}'."
CONSENT_MISSING = 65001, "The user or administrator has not consented to use the application with ID '{client}'."
THROTTLED = 50196, "The server terminated an operation because it encountered a client request loop."
SERVICE_ERROR = 90033, "A transient error has occurred. Please try again."
SERVICE_UNAVAILABLE = 90006, "The server is temporarily unavailable. Please try again later."


def fail(kind: type[OAuthError], entry: tuple[int, str], **values: str) -> OAuthError:
    code, text = entry
    return kind(code, text.format(**values) if values else text)
