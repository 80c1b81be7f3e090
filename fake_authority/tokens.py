"""Claims of the tokens the fake Authority issues, shaped as Entra issues them to Business Central."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from fake_authority.jwt import b64url
from fake_authority.registry import (
    BC_APP_ID,
    BC_DELEGATED_SCOPES,
    BC_RESOURCE,
    GRAPH_APP_ID,
    GRAPH_RESOURCE,
    Client,
    Registry,
    User,
)

# Resources the fake knows, by every name a client may use for them (application ID URI or app id).
RESOURCES: dict[str, str] = {
    BC_RESOURCE: BC_RESOURCE,
    BC_APP_ID: BC_RESOURCE,
    GRAPH_RESOURCE: GRAPH_RESOURCE,
    GRAPH_APP_ID: GRAPH_RESOURCE,
    "00000002-0000-0000-c000-000000000000": GRAPH_RESOURCE,  # legacy Azure AD Graph: treated as Graph
}
DELEGATED: dict[str, tuple[str, ...]] = {
    BC_RESOURCE: BC_DELEGATED_SCOPES,
    GRAPH_RESOURCE: ("User.Read", "openid", "profile", "email"),
}
OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})


@dataclass(frozen=True)
class ScopeRequest:
    """A parsed ``scope`` parameter: one resource and its permissions, plus the OIDC scopes."""

    resource: str  # canonical resource URI ("" when only OIDC scopes were asked)
    permissions: tuple[str, ...]  # e.g. ("Financials.ReadWrite.All",) or (".default",)
    oidc: frozenset[str]

    @property
    def granted(self) -> tuple[str, ...]:
        """Delegated permissions granted: ``.default`` means every configured one."""
        if not self.resource:
            return DELEGATED[GRAPH_RESOURCE][:1]
        if ".default" in self.permissions:
            return DELEGATED[self.resource]
        return self.permissions

    @property
    def token_resource(self) -> str:
        return self.resource or GRAPH_RESOURCE

    def response_scope(self) -> str:
        """The ``scope`` of a delegated token response. For a ``.default`` request Entra lists the granted
        permissions *and* echoes ``<resource>/.default`` (MSAL's cache looks tokens up by the scopes asked for,
        so without the echo a ``.default`` token is never found in the cache again)."""
        names = [f"{self.token_resource}/{p}" for p in self.granted]
        # With openid, Entra answers "profile openid email" whatever of profile/email was asked.
        oidc = ["profile", "openid", "email"] if "openid" in self.oidc else sorted(self.oidc & {"profile", "email"})
        if ".default" in self.permissions:  # "profile openid email <permissions…> <resource>/.default"
            return " ".join([*oidc, *names, f"{self.token_resource}/.default"])
        return " ".join([*names, *oidc])  # "<permissions…> profile openid email"


class ScopeError(ValueError):
    def __init__(self, kind: str, scope: str, resource: str = ""):
        self.kind, self.scope, self.resource = kind, scope, resource
        super().__init__(f"{kind}: {scope}")


def parse_scope(raw: str) -> ScopeRequest:
    """Split a scope string into one resource and its permissions; ``ScopeError`` names the problem."""
    items = raw.split()
    if not items:
        raise ScopeError("empty", raw)
    oidc = frozenset(i for i in items if i in OIDC_SCOPES)
    resources: dict[str, list[str]] = {}
    for item in items:
        if item in OIDC_SCOPES:
            continue
        if "/" not in item:
            # A bare permission name refers to Microsoft Graph, as in Entra ("User.Read").
            resources.setdefault(GRAPH_RESOURCE, []).append(item)
            continue
        prefix, _, permission = item.rpartition("/")
        prefix = prefix.rstrip("/")
        if prefix.startswith("api://"):
            prefix = prefix[len("api://"):]
        canonical = RESOURCES.get(prefix)
        if canonical is None:
            raise ScopeError("unknown_resource", raw, prefix)
        if not permission:
            raise ScopeError("invalid", raw)
        if permission != ".default" and permission not in DELEGATED[canonical]:
            raise ScopeError("invalid", raw)
        resources.setdefault(canonical, []).append(permission)
    if len(resources) > 1:
        raise ScopeError("multiple_resources", raw)
    if not resources:
        return ScopeRequest("", (), oidc)
    resource, perms = next(iter(resources.items()))
    return ScopeRequest(resource, tuple(dict.fromkeys(perms)), oidc)


def token_id() -> str:
    return b64url(secrets.token_bytes(16))


def _common(registry: Registry, client: Client, resource: str, now: int, lifetime: int) -> dict[str, object]:
    tid = registry.tenant_id
    return {
        "aud": resource,
        "iss": f"https://sts.windows.net/{tid}/",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "appid": client.client_id,
        "appidacr": "1" if client.confidential else "0",
        "idp": f"https://sts.windows.net/{tid}/",
        "tid": tid,
        "uti": token_id(),
        "ver": "1.0",
    }


def app_claims(registry: Registry, client: Client, resource: str, now: int, lifetime: int) -> dict[str, object]:
    claims = _common(registry, client, resource, now, lifetime)
    claims.update(oid=client.sp_object_id, sub=client.sp_object_id, idtyp="app")
    if client.app_roles and resource == BC_RESOURCE:
        claims["roles"] = list(client.app_roles)
    return claims


def user_claims(
    registry: Registry, client: Client, user: User, scope: ScopeRequest, now: int, lifetime: int
) -> dict[str, object]:
    claims = _common(registry, client, scope.token_resource, now, lifetime)
    first, _, last = user.display_name.partition(" ")
    claims.update(
        oid=user.oid, sub=user.oid, idtyp="user", scp=" ".join(scope.granted), upn=user.username,
        unique_name=user.username, name=user.display_name, given_name=first, family_name=last,
        amr=["pwd", "mfa"] if user.mfa else ["pwd"],
    )
    return claims


def id_token_claims(
    issuer: str, registry: Registry, client: Client, user: User, nonce: str, now: int, lifetime: int
) -> dict[str, object]:
    claims: dict[str, object] = {
        "aud": client.client_id,
        "iss": issuer,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "name": user.display_name,
        "oid": user.oid,
        "preferred_username": user.username,
        "sub": b64url(user.oid.encode() + client.client_id.encode())[:43],
        "tid": registry.tenant_id,
        "uti": token_id(),
        "ver": "2.0",
    }
    if nonce:
        claims["nonce"] = nonce
    return claims


def client_info(user: User, registry: Registry) -> str:
    return b64url(json.dumps({"uid": user.oid, "utid": registry.tenant_id}, separators=(",", ":")).encode())
