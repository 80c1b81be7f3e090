"""Who the fake Authority knows: its tenant, client applications and users.

Loadable from TOML or JSON; validated on load with messages that name the bad field.
"""

from __future__ import annotations

import json
import secrets
import tomllib
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BC_RESOURCE = "https://api.businesscentral.dynamics.com"
BC_APP_ID = "996def3d-b36c-4153-8607-a6fd3c01b89f"
GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
BC_DELEGATED_SCOPES = ("Financials.ReadWrite.All", "user_impersonation")
BC_APP_ROLES = ("API.ReadWrite.All", "Automation.ReadWrite.All")

DEFAULT_TENANT_ID = "7d3c2a1e-5b4f-4e8a-9c6d-2f1e0a9b8c7d"
DEFAULT_CLIENT_ID = "3f9b2c4d-8e1a-4b6c-a7d5-0e9f8a7b6c5d"


class RegistryError(ValueError):
    """A registry file or value that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Secret:
    value: str
    expires_at: float | None = None  # epoch seconds; None = never


@dataclass(frozen=True)
class Client:
    client_id: str
    secrets: tuple[Secret, ...] = ()
    redirect_uris: tuple[str, ...] = ()
    app_roles: tuple[str, ...] = BC_APP_ROLES
    consent_required: bool = True
    token_lifetime: int | None = None  # seconds; None = the Authority's default
    display_name: str = "Anywhere Portal"
    sp_object_id: str = ""  # the service principal's object id (oid of app tokens)

    @property
    def confidential(self) -> bool:
        return bool(self.secrets)


@dataclass(frozen=True)
class User:
    username: str
    password: str
    oid: str
    display_name: str = ""
    mfa: bool = False
    otp: str = "000000"  # the one-time code the fake accepts when MFA is demanded


@dataclass(frozen=True)
class Registry:
    tenant_id: str = DEFAULT_TENANT_ID
    tenant_domain: str = "contoso.onmicrosoft.com"
    clients: tuple[Client, ...] = ()
    users: tuple[User, ...] = ()
    delegate: str = ""  # username of the AzDelegate account
    token_lifetime: int = 3600

    def client(self, client_id: str) -> Client | None:
        return next((c for c in self.clients if c.client_id.lower() == client_id.lower()), None)

    def user(self, username: str) -> User | None:
        return next((u for u in self.users if u.username.lower() == username.lower()), None)

    def user_by_oid(self, oid: str) -> User | None:
        return next((u for u in self.users if u.oid == oid), None)

    def knows_tenant(self, tenant: str) -> bool:
        return tenant.lower() in {self.tenant_id, self.tenant_domain.lower()}

    @property
    def default_client(self) -> Client:
        return self.clients[0]

    def with_redirect_uris(self, *uris: str, client_id: str = "") -> Registry:
        """A copy whose client (default: the first) also accepts ``uris``."""
        target = client_id or self.default_client.client_id
        clients = tuple(
            replace(c, redirect_uris=tuple(dict.fromkeys((*c.redirect_uris, *uris))))
            if c.client_id == target else c
            for c in self.clients
        )
        return replace(self, clients=clients)

    @classmethod
    def default(cls, client_secret: str | None = None, redirect_uris: tuple[str, ...] = ()) -> Registry:
        """One confidential client, users alice and bob, and one delegate account."""
        domain = "contoso.onmicrosoft.com"
        users = tuple(
            User(f"{name}@{domain}", f"{name}-P@ssw0rd", str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-user/{name}")),
                 display)
            for name, display in (("alice", "Alice Anders"), ("bob", "Bob Berg"), ("delegate", "Portal Delegate"))
        )
        client = Client(
            client_id=DEFAULT_CLIENT_ID,
            secrets=(Secret(client_secret or f"fake~{secrets.token_urlsafe(30)}"),),
            redirect_uris=redirect_uris or ("http://localhost/auth/callback",),
            sp_object_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-sp/{DEFAULT_CLIENT_ID}")),
        )
        return cls(tenant_domain=domain, clients=(client,), users=users, delegate=users[2].username)


# ---------------------------------------------------------------- loading and validation


def load(path: str | Path) -> Registry:
    """Read a registry from a ``.toml`` or ``.json`` file; missing sections take the defaults."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise RegistryError(f"{path}: cannot read the registry file ({err.strerror})") from None
    try:
        data = tomllib.loads(raw.decode()) if path.suffix.lower() == ".toml" else json.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise RegistryError(f"{path}: not valid {kind}: {err}") from None
    return from_dict(data, source=str(path))


def from_dict(data: Any, source: str = "registry") -> Registry:
    if not isinstance(data, dict):
        raise RegistryError(f"{source}: expected a table/object at the top level, got {type(data).__name__}")
    default = Registry.default()
    tenant = data.get("tenant", {})
    _expect(tenant, dict, f"{source}: tenant")
    tenant_id = _str(tenant, "id", f"{source}: tenant.id", default.tenant_id)
    _guid(tenant_id, f"{source}: tenant.id")
    domain = _str(tenant, "domain", f"{source}: tenant.domain", default.tenant_domain)
    lifetime = _int(data, "token_lifetime", f"{source}: token_lifetime", default.token_lifetime, minimum=1)

    clients = tuple(_client(c, f"{source}: clients[{i}]") for i, c in enumerate(_list(data, "clients", source)))
    users = tuple(_user(u, f"{source}: users[{i}]") for i, u in enumerate(_list(data, "users", source)))
    clients = clients or default.clients
    users = users or default.users
    for what, values in (("clients", [c.client_id.lower() for c in clients]),
                         ("users", [u.username.lower() for u in users])):
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise RegistryError(f"{source}: {what}: duplicate entries {dupes}")
    delegate = _str(data, "delegate", f"{source}: delegate", "")
    if delegate and delegate.lower() not in {u.username.lower() for u in users}:
        raise RegistryError(f"{source}: delegate: {delegate!r} is not one of the users")
    if not delegate and not data.get("users"):
        delegate = default.delegate
    return Registry(tenant_id.lower(), domain, clients, users, delegate, lifetime)


def _client(raw: Any, where: str) -> Client:
    _expect(raw, dict, where)
    client_id = _str(raw, "client_id", f"{where}.client_id")
    _guid(client_id, f"{where}.client_id")
    secrets_raw = raw.get("secrets", [])
    _expect(secrets_raw, list, f"{where}.secrets")
    parsed = []
    for i, s in enumerate(secrets_raw):
        if isinstance(s, str) and s:
            parsed.append(Secret(s))
        elif isinstance(s, dict):
            value = _str(s, "value", f"{where}.secrets[{i}].value")
            expires = s.get("expires_at")
            if expires is not None and not isinstance(expires, int | float):
                raise RegistryError(f"{where}.secrets[{i}].expires_at: expected epoch seconds, got {expires!r}")
            parsed.append(Secret(value, expires))
        else:
            raise RegistryError(f"{where}.secrets[{i}]: expected a non-empty string or {{value, expires_at}}, "
                                f"got {s!r}")
    uris = raw.get("redirect_uris", [])
    _expect(uris, list, f"{where}.redirect_uris")
    for i, uri in enumerate(uris):
        parts = urlsplit(uri) if isinstance(uri, str) else None
        if not parts or parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            raise RegistryError(f"{where}.redirect_uris[{i}]: expected an absolute http(s) URL without a "
                                f"fragment, got {uri!r}")
        if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
            raise RegistryError(f"{where}.redirect_uris[{i}]: Entra accepts http only for localhost, got {uri!r}")
    roles = raw.get("app_roles", list(BC_APP_ROLES))
    _expect(roles, list, f"{where}.app_roles")
    if not all(isinstance(r, str) for r in roles):
        raise RegistryError(f"{where}.app_roles: expected a list of strings, got {roles!r}")
    consent = raw.get("consent_required", True)
    _expect(consent, bool, f"{where}.consent_required")
    lifetime = raw.get("token_lifetime")
    if lifetime is not None:
        lifetime = _int(raw, "token_lifetime", f"{where}.token_lifetime", 0, minimum=1)
    return Client(
        client_id=client_id.lower(), secrets=tuple(parsed), redirect_uris=tuple(uris), app_roles=tuple(roles),
        consent_required=consent, token_lifetime=lifetime,
        display_name=_str(raw, "display_name", f"{where}.display_name", "Portal"),
        sp_object_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-sp/{client_id.lower()}")),
    )


def _user(raw: Any, where: str) -> User:
    _expect(raw, dict, where)
    username = _str(raw, "username", f"{where}.username")
    if "@" not in username:
        raise RegistryError(f"{where}.username: expected a user principal name like alice@contoso.com, "
                            f"got {username!r}")
    oid = _str(raw, "oid", f"{where}.oid", str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-user/{username}")))
    _guid(oid, f"{where}.oid")
    mfa = raw.get("mfa", False)
    _expect(mfa, bool, f"{where}.mfa")
    return User(username, _str(raw, "password", f"{where}.password"), oid.lower(),
                _str(raw, "display_name", f"{where}.display_name", username.split("@")[0].title()), mfa,
                _str(raw, "otp", f"{where}.otp", "000000"))


_MISSING = object()


def _expect(value: Any, kind: type, where: str) -> None:
    if not isinstance(value, kind):
        raise RegistryError(f"{where}: expected {kind.__name__}, got {type(value).__name__} {value!r}")


def _str(table: dict[str, Any], key: str, where: str, default: Any = _MISSING) -> str:
    value = table.get(key, default)
    if value is _MISSING:
        raise RegistryError(f"{where}: required, but missing")
    if not isinstance(value, str) or (default is _MISSING and not value):
        raise RegistryError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _int(table: dict[str, Any], key: str, where: str, default: int, minimum: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RegistryError(f"{where}: expected an integer ≥ {minimum}, got {value!r}")
    return value


def _list(data: dict[str, Any], key: str, source: str) -> list[Any]:
    value = data.get(key, [])
    _expect(value, list, f"{source}: {key}")
    return value


def _guid(value: str, where: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        raise RegistryError(f"{where}: expected a GUID like {DEFAULT_TENANT_ID}, got {value!r}") from None
