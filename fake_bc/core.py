"""The fake Dynamics 365 Business Central API v2.0, sans-IO: ``BusinessCentral.handle(Request) -> Response``.

A request goes through the steps BC's front end and OData layer apply, in this order: route (a path that is no
BC API path is a 404 before anything else), bearer token (401 with BC's body and ``WWW-Authenticate``),
concurrency and rate limits per principal (429), injected faults, environment (404 ``NoEnvironment`` in
OData XML), then the OData resource itself. Every exchange is appended to the shared trace, with the token
named by its ``uti`` and never the token itself. Nothing a client sends can produce a 500.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote_plus, urlencode

from conformance.clock import Clock, FakeClock
from conformance.errors import where_raised
from conformance.redact import redact_mapping
from conformance.trace import Trace
from conformance.wire import Request, Response
from fake_authority.jwt import JwtError, parse
from fake_bc import errors as E
from fake_bc.auth import (
    APP_ROLES,
    AUDIENCES,
    AUTOMATION_ROLE,
    DELEGATED_SCOPES,
    NOT_AUTHORIZED,
    REJECTED_CLIENT,
    AuthFailure,
    EntraApps,
    TokenVerifier,
    VerifiedToken,
)
from fake_bc.data import DEMO_COMPANY, SeedSpec, Store, Table, _sort_value, build_seed, guid, iso
from fake_bc.entities import CHILD_SETS, COMPANY_SETS, GUID, EntityType, coerce, infer
from fake_bc.errors import JSON_CONTENT_TYPE, BCError, error_body
from fake_bc.faults import BCFaults
from fake_bc.limits import Limits, LimitSettings
from fake_bc.metadata import csdl
from fake_bc.odata import Query, max_page_size, order, parse_query, project
from fake_bc.routes import STANDARD_API, Route, Segment, parse_route

BC_HOST = "https://api.businesscentral.dynamics.com"
LOGIN_HOST = "https://login.microsoftonline.com"
DEFAULT_ENVIRONMENTS = ("Production", "Sandbox")
DEFAULT_CLOCK_SKEW = 60.0  # seconds; Microsoft.IdentityModel's default is 300, smaller makes expiry scenarios crisp
MAX_PAGE_SIZE = 20_000
_ETAG = re.compile(r'^(W/)?"[^"]*"$')
_TENANT_SAFE = re.compile(r"^[A-Za-z0-9.-]{1,120}$")
_HEADERS = [("Content-Type", JSON_CONTENT_TYPE), ("OData-Version", "4.0")]
_LINK_SAFE = "$,'()*:/"
# Runs of characters a secret, code or token is made of (JWTs, base64url, the Authority's sealed codes).
_CREDENTIAL_LIKE = re.compile(r"[A-Za-z0-9._~+/-]{8,}")
_SCANNED_BODY = 64 * 1024  # bytes of a request body searched for credentials


@dataclass(frozen=True)
class CustomApiSet:
    """An entity set a test registered under ``/api/{publisher}/{group}/{version}``."""

    entity: EntityType
    rows: tuple[dict[str, Any], ...]
    company_id: str | None  # None: every company has these rows


@dataclass
class _Ctx:
    """What one request carries through its handling, for the trace."""

    endpoint: str = "unknown"
    error: str = ""
    tid: str = ""  # the tenant the token names (verified or not), for the challenge's authorization_uri
    client_id: str = ""
    user: str = ""
    redeemed: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Target:
    """The resolved resource: the table, and where it hangs (for links, parents and the context URL)."""

    table: Table
    path: str  # below the API root, e.g. "companies(<cid>)/customers": links and the context URL's fragment
    company_id: str = ""
    parent: tuple[str, str] | None = None  # (parent field, parent id) for a child set
    writable: bool = True


class BusinessCentral:
    """State and behaviour of the fake BC; adapters feed it ``Request`` values.

    ``keys`` names the Authority's signing keys: an ``Authority`` (followed live), a ``SigningKey``, a public key,
    a kid -> key mapping or callable, or several of those. ``tenant_id`` is the Entra tenant whose environments
    this BC serves (``tenant_domains`` are other names the URL may use for it).
    """

    authority: Any = None  # set by ``for_authority``: the fake Authority whose tokens this BC accepts

    def __init__(
        self,
        keys: Any,
        tenant_id: str,
        *,
        clock: Clock | None = None,
        trace: Trace | None = None,
        environments: Iterable[str] = DEFAULT_ENVIRONMENTS,
        tenant_domains: Iterable[str] = (),
        entra_apps: Iterable[str] = (),
        limits: LimitSettings | None = None,
        clock_skew: float = DEFAULT_CLOCK_SKEW,
        max_page_size: int = MAX_PAGE_SIZE,
        seed: SeedSpec | None = None,
        audiences: Iterable[str] = AUDIENCES,
    ):
        self.tenant_id = tenant_id.lower()
        self.clock: Clock = clock or FakeClock()
        self.trace = trace if trace is not None else Trace()
        self.verifier = TokenVerifier(keys, audiences)
        self.entra_apps = EntraApps()
        for client_id in entra_apps:
            self.entra_apps.register(client_id)
        self.faults = BCFaults()
        self.limits = Limits(limits)
        self.clock_skew = clock_skew
        self.max_page_size = max_page_size
        self.seed = seed or SeedSpec()
        self._tenant_names: dict[str, str] = {self.tenant_id: self.tenant_id}
        for domain in tenant_domains:
            self._tenant_names[domain.lower()] = self.tenant_id
        self._environments: dict[str, dict[str, str]] = {self.tenant_id: {}}
        for name in environments:
            self.add_environment(name)
        self._stores: dict[tuple[str, str], Store] = {}
        self._custom: dict[str, dict[str, CustomApiSet]] = {}
        self._metadata: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_authority(cls, authority: Any, **kwargs: Any) -> BusinessCentral:
        """A BC that trusts ``authority``'s keys, serves its tenant, shares its clock and trace, and lists its
        default client on the Microsoft Entra applications page."""
        registry = authority.registry
        kwargs.setdefault("clock", authority.clock)
        kwargs.setdefault("trace", authority.trace)
        kwargs.setdefault("tenant_domains", (registry.tenant_domain,))
        kwargs.setdefault("entra_apps", (registry.default_client.client_id,))
        bc = cls(authority, registry.tenant_id, **kwargs)
        bc.authority = authority
        return bc

    # ------------------------------------------------------------------ switches for scenarios and tests

    def add_environment(self, name: str, tenant_id: str | None = None) -> None:
        tenant = (tenant_id or self.tenant_id).lower()
        self._tenant_names.setdefault(tenant, tenant)
        self._environments.setdefault(tenant, {})[name.lower()] = name

    def remove_environment(self, name: str, tenant_id: str | None = None) -> None:
        tenant = (tenant_id or self.tenant_id).lower()
        self._environments.get(tenant, {}).pop(name.lower(), None)
        self._stores.pop((tenant, name.lower()), None)

    def set_limits(self, requests_per_window: int | None = None, window_seconds: float | None = None,
                   max_concurrent: int | None = None) -> None:
        """Change the limits (and forget the requests counted so far)."""
        current = self.limits.settings
        self.limits.configure(LimitSettings(
            current.requests_per_window if requests_per_window is None else requests_per_window,
            current.window_seconds if window_seconds is None else window_seconds,
            current.max_concurrent if max_concurrent is None else max_concurrent,
        ))

    def revoke_token(self, token_or_uti: str) -> str:
        """Refuse one token from now on (given as the token or its ``uti``); returns the ``uti``."""
        uti = token_or_uti
        if token_or_uti.count(".") == 2:
            with contextlib.suppress(JwtError):
                uti = str(parse(token_or_uti).claims.get("uti", token_or_uti))
        self.faults.revoke_token(uti)
        return uti

    def revoke_principal(self, oid_or_appid: str) -> None:
        """Refuse every token of a user or app issued up to now; tokens issued later work."""
        self.faults.revoke_principal(oid_or_appid, self.clock.now())

    def fail_next(self, n: int = 1, status: int = 503, retry_after: int | None = None) -> None:
        self.faults.fail_next(n, status, retry_after)

    @property
    def latency(self) -> float:
        return self.faults.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.faults.latency = seconds

    def register_custom_api(self, publisher: str, group: str, version: str, entity_set: str,
                            rows: Iterable[Mapping[str, Any]], *, entity_name: str | None = None,
                            company: str | None = None, read_only: bool = False) -> EntityType:
        """Serve ``rows`` at ``/api/{publisher}/{group}/{version}/companies({id})/{entity_set}`` (for every
        company, or only ``company`` given by name or id). Property types are inferred from the rows; rows
        without an ``id`` get a deterministic one. Registering a set again replaces it, in every environment."""
        api = f"{publisher}/{group}/{version}".lower()
        copied = []
        for i, row in enumerate(rows):
            values = {k: v for k, v in dict(row).items() if not k.startswith("@")}
            row_id = str(values.get("id") or guid("custom", api, entity_set, str(i)))
            if not GUID.match(row_id):
                raise ValueError(f"register_custom_api: row {i} has id {row_id!r}, which is not a GUID")
            copied.append({"id": row_id.lower(), **{k: v for k, v in values.items() if k != "id"}})
        entity = infer(entity_name or (entity_set[:-1] if entity_set.endswith("s") else entity_set), entity_set,
                       copied)
        if read_only:
            entity = replace(entity, read_only=True)
        company_id = self.company_id(company) if company else None
        with self._lock:
            self._custom.setdefault(api, {})[entity_set] = CustomApiSet(entity, tuple(copied), company_id)
            self._metadata.pop(api, None)
            for store in self._stores.values():
                for key in [k for k in store.tables if k[0] == api and k[2] == entity_set]:
                    del store.tables[key]
        return entity

    def company_id(self, name_or_id: str = DEMO_COMPANY) -> str:
        for company in build_seed(self.seed).companies:
            if name_or_id in (company["name"], company["id"]):
                return str(company["id"])
        raise KeyError(f"no company named {name_or_id!r}")

    def rows(self, entity_set: str, company: str = DEMO_COMPANY, environment: str = "Production",
             tenant_id: str | None = None, api: str = STANDARD_API) -> list[dict[str, Any]]:
        """The current rows of a set, in BC's default order (for tests to check what writes did)."""
        store = self._store((tenant_id or self.tenant_id).lower(), environment)
        if entity_set == "companies":
            return list(store.companies.ordered())
        child = api == STANDARD_API and entity_set in CHILD_SETS
        entity = self._entity_type(api.lower(), entity_set, child=child)
        return list(self._table(store, api.lower(), self.company_id(company), entity).ordered())

    def reset(self) -> None:
        """Back to a fresh fake: data, faults, counted requests and cached tokens (configuration stays)."""
        with self._lock:
            self._stores.clear()
        self.faults.clear()
        self.limits.configure(self.limits.settings)
        self.verifier.forget()

    # ------------------------------------------------------------------ entry point

    def handle(self, request: Request) -> Response:
        now = self.clock.now()
        ctx = _Ctx()
        route: Route | None = None
        principal = ""
        try:
            route = parse_route(request.path)
            if route is None:
                last = next((p for p in reversed(request.path.split("/")) if p), request.path)
                raise E.ResourceNotFound.segment(last)
            ctx.endpoint = route.endpoint
            token = self._authenticate(request, route, ctx, now)
            principal = self._admit(token, now)
            fault = self.faults.take()
            if fault is not None:
                ctx.detail["fault"] = fault.status
                headers = [("Retry-After", str(fault.retry_after))] if fault.retry_after is not None else []
                raise E.BY_STATUS[fault.status](E.FAULT_TEXT[fault.status], headers)
            response = self._serve(request, route, token, ctx)
        except AuthFailure as failure:
            response = self._unauthorized(failure, route, ctx)
        except BCError as err:
            ctx.error = err.code
            response = err.render()
        except Exception as err:  # last resort: a bug in the fake must not look like a client's fault
            ctx.error = E.ServerError.code
            ctx.detail["internal_error"] = f"{type(err).__name__}: {err}"[:500]
            ctx.detail["internal_error_at"] = where_raised(err)  # a bug in the kit: the run stops on it
            response = E.ServerError("An unexpected error occurred in the fake Business Central.").render()
        if self.faults.latency:
            response.delay = self.faults.latency
        if principal:
            self.limits.concurrency.exit(principal, now, response.delay)
        if self.authority is not None:
            self._credentials_carried(request, ctx)
        self._record(request, response, ctx, now)
        return response

    def _credentials_carried(self, request: Request, ctx: _Ctx) -> None:
        """Name every credential the request carries besides the bearer access token (CC-6 / AC-9 send only the
        access token): the client secret, a code, a refresh token or an ID token, in any header, the query or the
        body. Values are named by kind and owner, never copied into the trace."""
        places: list[tuple[str, str]] = [(f"the {name} header", value) for name, value in request.headers.items()]
        if request.query:
            places.append(("the query string", unquote_plus(request.query)))
        if request.body:
            places.append(("the body", unquote_plus(request.body[:_SCANNED_BODY].decode("utf-8", "replace"))))
        carried: list[str] = []
        for where, text in places:
            for candidate in dict.fromkeys(_CREDENTIAL_LIKE.findall(text)):
                found = self.authority.identify(candidate)
                if found is None:
                    continue
                if where == "the authorization header":
                    ctx.detail["bearer"] = found.describe()
                    ctx.detail["bearer_kind"] = found.kind
                    if found.kind == "access token":
                        continue
                carried.append(f"{found.describe()} in {where}")
        if carried:
            ctx.detail["credentials_carried"] = sorted(set(carried))

    # ------------------------------------------------------------------ authentication and limits

    def _authenticate(self, request: Request, route: Route, ctx: _Ctx, now: float) -> VerifiedToken:
        in_query = "access_token" in request.query and "access_token" in request.params
        ctx.detail["token_in_query"] = in_query
        header = request.headers.get("authorization", "").strip()
        if not header:
            if in_query:
                self._note_claims(ctx, request.params["access_token"])
            raise AuthFailure("missing", error="")
        scheme, _, credentials = header.partition(" ")
        token = credentials.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthFailure("not_bearer", error="")
        try:
            verified = self.verifier.verify(token)
        except AuthFailure as failure:
            self._note_claims(ctx, failure.claims)
            raise
        ctx.redeemed = (f"at:{verified.uti}",) if verified.uti else ()
        ctx.tid = verified.tid
        ctx.client_id = verified.appid
        ctx.user = "" if verified.is_app else verified.upn
        ctx.detail.update(oid=verified.oid, idtyp=verified.idtyp or ("app" if verified.is_app else "user"),
                          exp=verified.exp)
        if verified.tid not in self._environments:
            raise AuthFailure("other_tenant", description=f"The token's tenant {verified.tid[:60]} has no Business "
                              "Central environments here.")
        if route.tenant is not None and self._tenant_names.get(route.tenant.lower()) != verified.tid:
            raise AuthFailure("other_tenant", description="The token was issued for another tenant than the "
                              "one in the URL.")
        if now < verified.nbf - self.clock_skew:
            raise AuthFailure("not_yet_valid", description="The token is not yet valid.")
        if now >= verified.exp + self.clock_skew:
            raise AuthFailure("expired", description=f"The token expired at {iso(verified.exp)}.")
        if self.faults.is_revoked(verified.uti, verified.oid, verified.appid, verified.iat):
            raise AuthFailure("revoked", description="The token has been revoked.")
        if self.authority is not None and self.authority.access_token_revoked(verified.uti):
            raise AuthFailure("revoked", description="The token was revoked with its grant (its authorization code "
                              "was redeemed twice, or a rotated refresh token was used again).")
        if verified.is_app:
            if verified.appidacr == "0":  # Entra issues app-only tokens to confidential clients only
                raise AuthFailure("public_client", REJECTED_CLIENT, "An app-only token for a public client.")
            needed = {AUTOMATION_ROLE} if route.api.startswith("microsoft/automation/") else APP_ROLES
            if not verified.roles & needed:
                raise AuthFailure("no_roles", NOT_AUTHORIZED, "The token has none of the roles "
                                  f"{', '.join(sorted(needed))}.")
            state = self.entra_apps.state(verified.appid)
            if state != "enabled":
                raise AuthFailure(f"app_{state}", REJECTED_CLIENT, f"The application is {state} on the Microsoft "
                                  "Entra applications page of Business Central.")
        elif not verified.scp & DELEGATED_SCOPES:
            raise AuthFailure("no_scope", NOT_AUTHORIZED, "The token has none of the scopes "
                              f"{', '.join(sorted(DELEGATED_SCOPES))}.")
        return verified

    @staticmethod
    def _note_claims(ctx: _Ctx, source: dict[str, Any] | str | None) -> None:
        """Identify an unverified token in the trace (by its claimed ``uti``), marked unverified."""
        claims = source
        if isinstance(source, str):
            try:
                claims = parse(source).claims
            except JwtError:
                claims = None
        if not isinstance(claims, dict):
            return
        uti, appid = claims.get("uti"), claims.get("appid") or claims.get("azp")
        ctx.redeemed = (f"at:{uti}",) if isinstance(uti, str) and uti else ()
        ctx.tid = str(claims.get("tid", ""))
        ctx.client_id = appid if isinstance(appid, str) else ""
        upn = claims.get("upn") or claims.get("preferred_username")
        ctx.user = upn if isinstance(upn, str) and isinstance(claims.get("scp"), str) else ""
        exp = claims.get("exp")
        ctx.detail.update(verified=False, oid=str(claims.get("oid", ""))[:80], idtyp=str(claims.get("idtyp", ""))[:20],
                          exp=exp if isinstance(exp, int | float) else None)

    def _unauthorized(self, failure: AuthFailure, route: Route | None, ctx: _Ctx) -> Response:
        ctx.error = "Authentication_InvalidCredentials"
        ctx.detail["auth_failure"] = failure.reason
        tenant = (route.tenant if route is not None and route.tenant else "") or ctx.tid
        if not _TENANT_SAFE.match(tenant):
            tenant = "common"  # an environment-only URL and no readable token: BC cannot know the tenant
        challenge = f'Bearer authorization_uri="{LOGIN_HOST}/{tenant}/oauth2/authorize"'
        if failure.error:  # RFC 6750 §3.1: no error code when the request carried no credentials
            text = re.sub(r'[^ -~]|["\\]', "'", failure.description or failure.message)[:300]
            challenge += f', error="{failure.error}", error_description="{text}"'
        body = error_body("Authentication_InvalidCredentials", failure.message)
        return Response(401, [*_HEADERS, ("WWW-Authenticate", challenge)], _dumps(body))

    def _admit(self, token: VerifiedToken, now: float) -> str:
        """Enter the principal's concurrency slot and count the request; 429 when over a limit."""
        key = token.principal
        if not self.limits.concurrency.enter(key, now):
            raise E.TooManyRequests(f"Too many concurrent requests. Maximum ({self.limits.settings.max_concurrent}).",
                                    [("Retry-After", "1")])
        wait = self.limits.rate.admit(key, now)
        if wait is not None:
            self.limits.concurrency.exit(key, now)
            limit = self.limits.settings.requests_per_window
            raise E.TooManyRequests(f"Too many requests reached.  Actual ({limit + 1}).  Maximum ({limit}).",
                                    [("Retry-After", str(int(wait)))])
        return key

    # ------------------------------------------------------------------ resources

    def _store(self, tenant: str, environment: str) -> Store:
        name = self._environments.get(tenant, {}).get(environment.lower())
        if name is None:
            raise E.NoEnvironment()
        key = (tenant, name.lower())
        store = self._stores.get(key)
        if store is None:
            with self._lock:
                store = self._stores.get(key)
                if store is None:
                    store = self._stores[key] = Store(build_seed(self.seed))
        return store

    def _entity_type(self, api: str, set_name: str, child: bool = False) -> EntityType:
        if api == STANDARD_API:
            entity = (CHILD_SETS if child else COMPANY_SETS).get(set_name)
        else:
            custom = self._custom.get(api, {}).get(set_name)
            entity = custom.entity if custom is not None and not child else None
        if entity is None:
            raise E.ResourceNotFound.segment(set_name)
        return entity

    def _table(self, store: Store, api: str, company_id: str, entity: EntityType) -> Table:
        key = (api, company_id, entity.set_name)
        table = store.tables.get(key)
        if table is None:
            if api == STANDARD_API:
                rows: Iterable[dict[str, Any]] = store.seed.tables.get((company_id, entity.set_name), ())
            else:
                custom = self._custom[api][entity.set_name]
                rows = custom.rows if custom.company_id in (None, company_id) else ()
            table = store.tables[key] = Table(entity, rows)
        return table

    def _serve(self, request: Request, route: Route, token: VerifiedToken, ctx: _Ctx) -> Response:
        api = route.api.lower()
        if api != STANDARD_API and api not in self._custom:
            raise E.ResourceNotFound.segment(route.api.split("/")[0])
        ctx.detail["environment"] = route.environment
        store = self._store(token.tid, route.environment)
        if self.faults.lacks_permission(token.oid, token.appid):
            raise E.PermissionDenied("Sorry, the current permissions prevented the action. (TableData Customer "
                                     "Read: Base Application)")
        with store.lock:
            return self._resource(request, route, api, store)

    def _resource(self, request: Request, route: Route, api: str, store: Store) -> Response:
        segments = route.segments
        if not segments:
            self._allow(request, ("GET",), route.api, "EdmEntityContainer")
            return self._service_document(request, route, api)
        first = segments[0]
        if first.name == "$metadata" and first.key is None and len(segments) == 1:
            self._allow(request, ("GET",), "$metadata", "EdmModel")
            return self._metadata_document(api)
        if first.name != "companies":
            raise E.ResourceNotFound.segment(first.name)
        if first.key is None:
            if len(segments) > 1:
                raise E.ResourceNotFound.segment(segments[1].name)
            return self._set(request, route, _Target(store.companies, "companies", writable=False))
        company_id = _guid_key(first)
        company = store.companies.rows.get(company_id)
        if company is None:
            raise E.CompanyNotFound(f"The company with id '{company_id}' does not exist.")
        if len(segments) == 1:
            return self._one(request, route, _Target(store.companies, "companies", writable=False),
                             first, store)
        set_segment = segments[1]
        entity = self._entity_type(api, set_segment.name)
        where = f"companies({company_id})/{entity.set_name}"
        target = _Target(self._table(store, api, company_id, entity), where, company_id,
                         writable=not entity.read_only)
        if len(segments) == 2:
            if set_segment.key is None:
                return self._set(request, route, target, store, api)
            return self._one(request, route, target, set_segment, store, api)
        if set_segment.key is None:
            raise E.ResourceNotFound.segment(segments[2].name)
        parent_id = _guid_key(set_segment)
        if parent_id not in target.table.rows:
            raise _not_found(entity, parent_id)
        child_segment = segments[2]
        child_set = entity.child_set(child_segment.name)
        if child_set is None or len(segments) > 3:
            raise E.ResourceNotFound.segment(segments[3].name if child_set else child_segment.name)
        child = self._entity_type(api, child_set, child=True)
        where = f"companies({company_id})/{entity.set_name}({parent_id})/{child_segment.name}"
        child_target = _Target(self._table(store, api, company_id, child), where, company_id,
                               (child.parent_field, parent_id))
        if child_segment.key is None:
            return self._set(request, route, child_target, store, api)
        return self._one(request, route, child_target, child_segment, store, api)

    @staticmethod
    def _allow(request: Request, methods: tuple[str, ...], segment: str, kind: str = "EdmEntitySet") -> None:
        if request.method not in methods:
            raise E.MethodNotAllowed.on(request.method, segment, kind)

    def _service_document(self, request: Request, route: Route, api: str) -> Response:
        sets = ["companies", *(COMPANY_SETS if api == STANDARD_API else self._custom.get(api, {}))]
        payload = {"@odata.context": f"{request.base}{route.api_root}/$metadata",
                   "value": [{"name": s, "kind": "EntitySet", "url": s} for s in sets]}
        return Response(200, list(_HEADERS), _dumps(payload))

    def _metadata_document(self, api: str) -> Response:
        document = self._metadata.get(api)
        if document is None:
            if api == STANDARD_API:
                document = csdl(COMPANY_SETS.values(), CHILD_SETS).encode()
            else:
                document = csdl((c.entity for c in self._custom.get(api, {}).values()), {}).encode()
            self._metadata[api] = document
        return Response(200, [("Content-Type", "application/xml; charset=utf-8"), ("OData-Version", "4.0")],
                        document)

    # ------------------------------------------------------------------ collections

    def _set(self, request: Request, route: Route, target: _Target, store: Store | None = None,
             api: str = STANDARD_API) -> Response:
        if request.method == "GET":
            return self._list(request, route, target, store, api)
        if request.method == "POST" and target.writable and store is not None:
            return self._create(request, route, target, store)
        raise E.MethodNotAllowed.on(request.method, target.table.entity.set_name)

    def _list(self, request: Request, route: Route, target: _Target, store: Store | None, api: str) -> Response:
        table, entity = target.table, target.table.entity
        query = parse_query(request.query, entity)
        page_size, applied = self.max_page_size, None
        prefer = request.headers.get("prefer")
        if prefer:
            wanted = max_page_size(prefer)
            if wanted is not None:
                if wanted > self.max_page_size:
                    raise E.EntityTooLarge(f"The requested page size {wanted} exceeds the maximum page size "
                                           f"{self.max_page_size}.")
                page_size = applied = wanted
        rows = self._candidates(table, query, target.parent)
        total = len(rows) if query.count and query.skiptoken is None else None
        limit = page_size if query.top is None else min(page_size, query.top)
        page = rows[query.skip:query.skip + limit]
        more = len(rows) > query.skip + limit and (query.top is None or query.top > limit)
        context = target.path if query.select is None else f"{target.path}({','.join(query.select)})"
        parts = [b'{"@odata.context":', _dumps(f"{request.base}{route.api_root}/$metadata#{context}")]
        if total is not None:
            parts.append(b',"@odata.count":%d' % total)
        if query.expand and store is not None:
            rows_json = [_dumps(row) for row in self._expand(page, query, target, store, api)]
        elif query.select is not None:
            rows_json = [_dumps(project(row, query.select)) for row in page]
        else:
            rows_json = [table.encoded(row) for row in page]
        parts += [b',"value":[', b",".join(rows_json), b"]"]
        if more and page:
            next_link = self._next_link(request, query, str(page[-1]["id"]), len(page))
            parts += [b',"@odata.nextLink":', _dumps(next_link)]
        parts.append(b"}")
        headers = list(_HEADERS)
        if applied is not None:
            headers.append(("Preference-Applied", f"odata.maxpagesize={applied}"))
        return Response(200, headers, b"".join(parts))

    @staticmethod
    def _candidates(table: Table, query: Query, parent: tuple[str, str] | None) -> list[dict[str, Any]]:
        """Rows in the requested order, after the skiptoken's row, filtered (before $skip/$top)."""
        anchor = None
        if query.skiptoken is not None:
            anchor = table.rows.get(query.skiptoken) or table.tombstones.get(query.skiptoken)
            if anchor is None:
                raise E.BadRequest(f"The skip token '{query.skiptoken[:80]}' is not valid.")
        rows = table.ordered(anchor if anchor is not None and query.skiptoken not in table.rows else None)
        if query.orderby:
            rows = order(rows, query.orderby, _sort_value)
        if anchor is not None:
            rows = rows[next(i for i, r in enumerate(rows) if r is anchor) + 1:]
        if parent is not None:
            parent_field, parent_id = parent
            rows = [r for r in rows if r.get(parent_field) == parent_id]
        if query.filter is not None:
            rows = [r for r in rows if query.filter(r)]
        return rows

    def _expand(self, rows: list[dict[str, Any]], query: Query, target: _Target, store: Store, api: str
                ) -> list[dict[str, Any]]:
        entity = target.table.entity
        out = [project(row, query.select) for row in rows]
        for navigation in query.expand:
            child = self._entity_type(api, entity.child_set(navigation) or navigation, child=True)
            children: dict[Any, list[dict[str, Any]]] = {}
            for line in self._table(store, api, target.company_id, child).ordered():
                children.setdefault(line.get(child.parent_field), []).append(line)
            out = [{**row, navigation: children.get(source["id"], [])} for row, source in zip(out, rows, strict=True)]
        return out

    @staticmethod
    def _next_link(request: Request, query: Query, last_id: str, served: int) -> str:
        params = [("aid", "FIN")]
        params += [(k, v) for k, v in query.params if k not in ("aid", "$skip", "$skiptoken", "$top")]
        if query.top is not None:
            params.append(("$top", str(query.top - served)))
        params.append(("$skiptoken", last_id))
        return f"{request.base}{request.path}?{urlencode(params, quote_via=quote, safe=_LINK_SAFE)}"

    # ------------------------------------------------------------------ single entities

    def _one(self, request: Request, route: Route, target: _Target, segment: Segment, store: Store,
             api: str = STANDARD_API) -> Response:
        table, entity = target.table, target.table.entity
        row_id = _guid_key(segment)
        row = table.rows.get(row_id)
        if row is not None and target.parent is not None and row.get(target.parent[0]) != target.parent[1]:
            row = None
        if request.method == "GET":
            if row is None:
                raise _not_found(entity, row_id)
            query = parse_query(request.query, entity)
            shown = self._expand([row], query, target, store, api)[0] if query.expand else project(row, query.select)
            return self._entity_response(request, route, target, shown, 200)
        if request.method not in ("PATCH", "DELETE") or not target.writable:
            raise E.MethodNotAllowed.on(request.method, entity.set_name, "EdmEntityType")
        if_match = request.headers.get("if-match", "").strip()
        if not if_match:
            raise E.MissingConcurrencyToken()
        if row is None:
            raise _not_found(entity, row_id)
        _check_etag(if_match, row["@odata.etag"])
        if request.method == "DELETE":
            table.delete(row_id)
            for _, child_set in entity.children:  # a sales order takes its lines with it
                child = self._entity_type(api, child_set, child=True)
                lines = self._table(store, api, target.company_id, child)
                for line_id in [i for i, line in lines.rows.items() if line.get(child.parent_field) == row_id]:
                    lines.delete(line_id)
            return Response(204, [("OData-Version", "4.0")], b"")
        changes = self._changes(request, entity)
        fields = {**row, **changes, "lastModifiedDateTime": iso(self.clock.now())}
        if "lastModifiedDateTime" not in entity.by_name:
            del fields["lastModifiedDateTime"]
        _unique_number(table, fields, row_id)
        updated = table.put(fields, store.next_version())
        return self._entity_response(request, route, target, updated, 200)

    def _create(self, request: Request, route: Route, target: _Target, store: Store) -> Response:
        table, entity = target.table, target.table.entity
        fields = {**entity.defaults(), **self._changes(request, entity)}
        version = store.next_version()
        fields["id"] = guid("created", self.tenant_id, route.environment.lower(), target.path, str(version))
        if target.parent is not None:
            fields[target.parent[0]] = target.parent[1]
        if entity.number_step and "number" in entity.by_name and not fields.get("number"):
            fields["number"] = table.next_number()
        if "lastModifiedDateTime" in entity.by_name:
            fields["lastModifiedDateTime"] = iso(self.clock.now())
        _unique_number(table, fields, None)
        row = table.put(fields, version)
        location = f"{request.base}{route.api_root}/{target.path}({row['id']})"
        return self._entity_response(request, route, target, row, 201, [("Location", location)])

    @staticmethod
    def _changes(request: Request, entity: EntityType) -> dict[str, Any]:
        """The writable properties of a JSON body, type-checked; read-only ones and annotations are ignored."""
        if not request.body.strip():
            raise E.BadRequest("The request body is empty; a JSON object is expected.")
        try:
            body = json.loads(request.body)
        except (ValueError, RecursionError) as err:
            raise E.BadRequest(f"The request body is not valid JSON: {str(err)[:160]}") from None
        if not isinstance(body, dict):
            raise E.BadRequest(f"The request body must be a JSON object, not {type(body).__name__}.")
        changes = {}
        for name, value in body.items():
            if name.startswith("@"):
                continue
            prop = entity.by_name.get(name)
            if prop is None:
                raise E.BadRequest(f"The property '{name[:100]}' does not exist on type '{entity.qualified}'. Make "
                                   "sure to only use property names that are defined by the type.")
            if not prop.read_only:
                changes[name] = coerce(prop, value, entity.qualified)
        return changes

    @staticmethod
    def _entity_response(request: Request, route: Route, target: _Target, row: dict[str, Any], status: int,
                         extra: list[tuple[str, str]] | None = None) -> Response:
        context = f"{request.base}{route.api_root}/$metadata#{target.path}/$entity"
        payload = {"@odata.context": context, **row}
        headers = [*_HEADERS, ("ETag", row["@odata.etag"]), *(extra or [])]
        return Response(status, headers, _dumps(payload))

    # ------------------------------------------------------------------ trace

    def _record(self, request: Request, response: Response, ctx: _Ctx, now: float) -> None:
        if request.query:
            ctx.detail["query"] = dict(_redacted_query(request.query))
        if response.status >= 500 and not ctx.error:
            ctx.error = E.ServerError.code
        retry_after = response.header("retry-after")
        if retry_after:  # what the client was told to wait (429, 503): judged by ``load``'s throttling check
            ctx.detail["retry_after"] = retry_after
        self.trace.append(now, "bc", ctx.endpoint, method=request.method, path=request.path,
                          status=response.status, error=ctx.error, client_id=ctx.client_id, user=ctx.user,
                          redeemed=ctx.redeemed, detail=ctx.detail)


@lru_cache(maxsize=1024)
def _redacted_query(query: str) -> tuple[tuple[str, str], ...]:
    """The query for the trace, secrets redacted; cached because clients repeat their queries."""
    return tuple(redact_mapping(Request("GET", "/", query).params).items())


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _guid_key(segment: Segment) -> str:
    key = (segment.key or "").strip()
    if not GUID.match(key):
        raise E.BadRequest(f"Unrecognized 'Edm.Guid' literal '{key[:80]}' in the key of segment "
                           f"'{segment.name[:80]}'.")
    return key.lower()


def _not_found(entity: EntityType, row_id: str) -> E.RecordNotFound:
    return E.RecordNotFound(f"The {entity.name} does not exist. Identification fields and values: Id='{row_id}'")


def _check_etag(if_match: str, current: str) -> None:
    """``*`` or a list of entity tags; a malformed header is a 400, a stale tag a 409."""
    if if_match == "*":
        return
    tags = [t.strip() for t in if_match.split(",")]
    if not all(_ETAG.match(t) for t in tags):
        raise E.MissingConcurrencyToken()
    opaque = current.removeprefix("W/")
    if not any(t.removeprefix("W/") == opaque for t in tags):
        raise E.EntityChanged()


def _unique_number(table: Table, fields: dict[str, Any], row_id: str | None) -> None:
    number = fields.get("number")
    if not number or "number" not in table.entity.by_name:
        return
    for other_id, other in table.rows.items():
        if other_id != row_id and other.get("number") == number:
            raise E.EntityWithSameKeyExists(f"The record in table {table.entity.name} already exists. "
                                            f"Identification fields and values: No.='{str(number)[:40]}'")
