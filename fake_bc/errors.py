"""Business Central error responses: one class per wire error code, rendered in one place.

Codes, statuses and texts follow fake_bc/business-central-facts.md. Where the reference is silent the
class says *(unconfirmed)* and names the choice made.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import ClassVar
from xml.sax.saxutils import escape

from conformance.wire import Response

JSON_CONTENT_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8"


def error_body(code: str, message: str, correlation_id: str | None = None) -> dict[str, dict[str, str]]:
    """BC's error shape: note the two spaces before (and after) ``CorrelationId:``."""
    cid = correlation_id or str(uuid.uuid4())
    return {"error": {"code": code, "message": f"{message}  CorrelationId:  {cid}."}}


@dataclass
class BCError(Exception):
    """An error a request ends with: ``code`` and ``status`` are class attributes, the message per use."""

    message: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    code: ClassVar[str] = "BadRequest"
    status: ClassVar[int] = 400

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def render(self) -> Response:
        response = Response.json(self.status, error_body(self.code, self.message), list(self.headers))
        response.headers[0] = ("Content-Type", JSON_CONTENT_TYPE)
        return response


class BadRequest(BCError):
    """Bad query option, unknown property, malformed body."""


class ResourceNotFound(BCError):
    code = "BadRequest_ResourceNotFound"
    status = 404

    @classmethod
    def segment(cls, name: str) -> ResourceNotFound:
        return cls(f"Resource not found for the segment '{name[:200]}'.")


class MissingConcurrencyToken(BCError):
    code = "BadRequest_InvalidToken"
    status = 400

    def __init__(self, message: str = "") -> None:
        super().__init__(message or "Could not validate the client concurrency token required by the service. "
                                    "Please provide a valid token in the client request.")


class EntityChanged(BCError):
    code = "Request_EntityChanged"
    status = 409

    def __init__(self, message: str = "") -> None:
        super().__init__(message or "Another user has already changed the record.")


class MethodNotAllowed(BCError):
    code = "BadRequest_MethodNotAllowed"
    status = 405

    @classmethod
    def on(cls, method: str, segment: str, kind: str = "EdmEntitySet") -> MethodNotAllowed:
        return cls(f"'{method[:16]}' requests for '{segment[:200]}' of {kind} are not allowed within Dynamics 365 "
                   "Business Central OData web services.")


class EntityWithSameKeyExists(BCError):
    """A POST or PATCH that would duplicate a row's number (its primary key in BC)."""

    code = "Internal_EntityWithSameKeyExists"
    status = 400


class CompanyNotFound(BCError):
    code = "Internal_CompanyNotFound"
    status = 404  # (status unconfirmed in the reference)


class RecordNotFound(BCError):
    """*(unconfirmed)* A GET/PATCH/DELETE by an id no row has; BC answers 404 with this code."""

    code = "Internal_RecordNotFound"
    status = 404


class PermissionDenied(BCError):
    """Authenticated, but the user or app lacks a BC permission set (reference: 403, status unconfirmed)."""

    code = "Internal_ServerError"
    status = 403


class EntityTooLarge(BCError):
    """A page size above the server's maximum. *(code unconfirmed)*"""

    code = "Request_EntityTooLarge"
    status = 413


class TooManyRequests(BCError):
    """Over the rate or concurrency limit. *(code unconfirmed; Retry-After is sent as the kind choice)*"""

    code = "Application_TooManyRequests"
    status = 429


class ServerError(BCError):
    code = "Internal_ServerError"
    status = 500


class BadGateway(BCError):
    """*(code unconfirmed)*"""

    code = "Internal_BadGateway"
    status = 502


class ServiceUnavailable(BCError):
    """*(code unconfirmed)*"""

    code = "Internal_ServiceUnavailable"
    status = 503


class GatewayTimeout(BCError):
    """*(code unconfirmed)* BC aborts requests running longer than the operation timeout."""

    code = "Internal_GatewayTimeout"
    status = 504


class NoEnvironment(BCError):
    """Unknown environment: the front end answers in OData XML, not JSON."""

    code = "NoEnvironment"
    status = 404

    def __init__(self, message: str = "Environment does not exist.") -> None:
        super().__init__(message)

    def render(self) -> Response:
        body = ('<?xml version="1.0" encoding="utf-8"?><error xmlns="http://docs.oasis-open.org/odata/ns/metadata">'
                f"<code>{self.code}</code><message>{escape(self.message)}</message></error>")
        return Response(self.status, [("Content-Type", "application/xml; charset=utf-8")], body.encode())


# Faults a scenario can inject, by HTTP status.
BY_STATUS: dict[int, type[BCError]] = {
    429: TooManyRequests, 500: ServerError, 502: BadGateway, 503: ServiceUnavailable, 504: GatewayTimeout,
}
FAULT_TEXT: dict[int, str] = {
    429: "Too many requests reached.",
    500: "An unexpected error occurred on the server. (fault injected by the conformance kit)",
    502: "Bad gateway. (fault injected by the conformance kit)",
    503: "The service is temporarily unavailable. Please try again later. (fault injected by the conformance kit)",
    504: "The operation timed out. (fault injected by the conformance kit)",
}
