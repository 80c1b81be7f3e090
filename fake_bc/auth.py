"""Bearer-token checks, in the order BC's front end applies them, and the "Microsoft Entra applications" list.

A token's signature, audience and issuer are checked once and the result cached by the token string, so a
portal that reuses its token (as it should) costs a dict lookup, not an RSA verification. Expiry, revocation,
tenant, roles and the application list are checked on every use: they depend on the clock, the URL and
switches a scenario flips.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from fake_authority.jwt import JwtError, parse

BC_RESOURCE = "https://api.businesscentral.dynamics.com"
BC_APP_ID = "996def3d-b36c-4153-8607-a6fd3c01b89f"
AUDIENCES = frozenset({BC_RESOURCE, BC_APP_ID})
APP_ROLES = frozenset({"API.ReadWrite.All", "Automation.ReadWrite.All"})
AUTOMATION_ROLE = "Automation.ReadWrite.All"
DELEGATED_SCOPES = frozenset({"Financials.ReadWrite.All", "user_impersonation"})

# Body messages, as observed from BC (see the reference's authentication table).
INCORRECT = "The credentials provided are incorrect"
REJECTED_CLIENT = "The server has rejected the client credentials."
NOT_AUTHORIZED = "Web service call failed because user could not be authenticated or authorized."

KeyResolver = Callable[[str], "rsa.RSAPublicKey | None"]


@dataclass
class AuthFailure(Exception):
    """Why a request is unauthenticated: ``reason`` goes to the trace, ``message`` to the body,
    ``description`` to ``WWW-Authenticate``; ``error`` is empty when no credentials were sent (RFC 6750 §3.1)."""

    reason: str
    message: str = INCORRECT
    description: str = ""
    error: str = "invalid_token"
    claims: dict[str, Any] | None = None  # what the token claimed, unverified, for the trace

    def __str__(self) -> str:
        return f"{self.reason}: {self.description or self.message}"


@dataclass(frozen=True)
class VerifiedToken:
    """What BC keeps of a token whose signature, audience and issuer checked out."""

    key: Any  # the public key that verified it: a rotated-away key invalidates the cache entry
    kid: str
    uti: str
    tid: str
    oid: str
    appid: str
    appidacr: str
    idtyp: str
    upn: str
    iat: float
    nbf: float
    exp: float
    roles: frozenset[str]
    scp: frozenset[str]

    @property
    def is_app(self) -> bool:
        """App-only token: Entra marks it ``idtyp: app``; without ``idtyp``, no ``scp`` means app-only."""
        return self.idtyp == "app" or (not self.idtyp and not self.scp)

    @property
    def principal(self) -> str:
        """The user or service principal the limits count against."""
        return f"{self.tid}/{self.oid or self.appid}"


def key_resolver(source: Any) -> KeyResolver:
    """Accept whatever names the Authority's keys: a kid -> key callable or mapping, a public key, a
    ``SigningKey`` (``.kid``/``.public_key``), several of those, or an ``Authority`` (followed live, so a
    key rotation on the Authority is seen at once)."""
    if isinstance(source, rsa.RSAPublicKey):
        return lambda kid: source
    if isinstance(source, Mapping):
        return source.get
    if hasattr(source, "key") and hasattr(source.key, "public_key") and hasattr(source.key, "kid"):
        return lambda kid: source.key.public_key if kid == source.key.kid else None
    if hasattr(source, "public_key") and hasattr(source, "kid"):
        keys = {source.kid: source.public_key}
        return keys.get
    if callable(source):
        return source
    if isinstance(source, Iterable):
        resolvers = [key_resolver(s) for s in source]
        return lambda kid: next((k for k in (r(kid) for r in resolvers) if k is not None), None)
    raise TypeError(f"cannot resolve signing keys from {type(source).__name__}")


def _number(claims: dict[str, Any], name: str, default: float | None = None) -> float:
    value = claims.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthFailure("malformed", description=f"The token's '{name}' claim is missing or not a number.",
                          claims=claims)
    return float(value)


def _text(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name, "")
    return value if isinstance(value, str) else ""


class TokenVerifier:
    """Signature, audience and issuer checks with a cache keyed by the token string."""

    def __init__(self, keys: Any, audiences: Iterable[str] = AUDIENCES, cache_size: int = 10_000):
        self.resolve = key_resolver(keys)
        self.audiences = frozenset(a.rstrip("/").lower() for a in audiences)
        self.cache_size = cache_size
        self._cache: dict[str, VerifiedToken] = {}
        self._lock = threading.Lock()
        self.verifications = 0  # RSA verifications done (the cache's effect is visible in tests and benches)

    def verify(self, token: str) -> VerifiedToken:
        cached = self._cache.get(token)
        if cached is not None:
            current = self.resolve(cached.kid)
            if current is cached.key or (current is not None and current == cached.key):
                return cached
        verified = self._verify(token)
        with self._lock:
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[token] = verified
        return verified

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()

    def _verify(self, token: str) -> VerifiedToken:
        try:
            jwt = parse(token)
        except JwtError as err:
            raise AuthFailure("malformed", description=f"The token is not a JWT: {err}.") from None
        claims = jwt.claims
        kid = jwt.header.get("kid", "")
        key = self.resolve(kid) if isinstance(kid, str) else None
        if key is None:
            raise AuthFailure("bad_signature", description="The token's signing key is not one the issuer "
                              "publishes.", claims=claims)
        self.verifications += 1
        if not jwt.verify(key):
            raise AuthFailure("bad_signature", description="The token's signature is invalid.", claims=claims)
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else (aud if isinstance(aud, list) else [])
        if not any(isinstance(a, str) and a.rstrip("/").lower() in self.audiences for a in auds):
            raise AuthFailure("wrong_audience", description=f"The audience '{str(aud)[:120]}' is invalid.",
                              claims=claims)
        tid = _text(claims, "tid").lower()
        iss = _text(claims, "iss")
        if not tid or iss.lower() not in (f"https://sts.windows.net/{tid}/",
                                          f"https://login.microsoftonline.com/{tid}/v2.0"):
            raise AuthFailure("wrong_issuer", description=f"The issuer '{iss[:120]}' is invalid.", claims=claims)
        exp = _number(claims, "exp")
        roles = claims.get("roles")
        scp = claims.get("scp")
        return VerifiedToken(
            key=key, kid=kid, uti=_text(claims, "uti"), tid=tid, oid=_text(claims, "oid"),
            appid=_text(claims, "appid") or _text(claims, "azp"), appidacr=_text(claims, "appidacr"),
            idtyp=_text(claims, "idtyp"),
            upn=_text(claims, "upn") or _text(claims, "unique_name") or _text(claims, "preferred_username"),
            iat=_number(claims, "iat", 0), nbf=_number(claims, "nbf", 0), exp=exp,
            roles=frozenset(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else frozenset(),
            scp=frozenset(scp.split()) if isinstance(scp, str) else frozenset(),
        )


@dataclass
class EntraApps:
    """BC's "Microsoft Entra applications" page: an app token is accepted only for a listed, enabled app.
    Unregistered and disabled are separate switches because they are separate states in BC."""

    _apps: dict[str, bool] = field(default_factory=dict)  # client id (lower case) -> enabled

    def register(self, client_id: str, enabled: bool = True) -> None:
        self._apps[client_id.lower()] = enabled

    def unregister(self, client_id: str) -> None:
        self._apps.pop(client_id.lower(), None)

    def disable(self, client_id: str) -> None:
        """Keep the app listed but set its state to Disabled (registers it if it was not listed)."""
        self._apps[client_id.lower()] = False

    def enable(self, client_id: str) -> None:
        self._apps[client_id.lower()] = True

    def state(self, client_id: str) -> str:
        enabled = self._apps.get(client_id.lower())
        return "unregistered" if enabled is None else ("enabled" if enabled else "disabled")

    def __contains__(self, client_id: object) -> bool:
        return isinstance(client_id, str) and client_id.lower() in self._apps
