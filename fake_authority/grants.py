"""Authorization codes and grant families, kept as Entra keeps them.

Codes are sealed (AES-GCM), not stored: like Entra's, a code carries its own grant, so unredeemed codes cost
no memory however many are issued; only redeemed codes are remembered (for single use) until they expire.
A *family* is what one authorization led to: the access tokens and the chain of rotated refresh tokens of one
code. Replaying the code, or presenting a refresh token that was already rotated, revokes the whole family
(RFC 6749 §4.1.2 "SHOULD revoke … all tokens previously issued based on that authorization code";
RFC 9700 §4.14.2 refresh token rotation).
"""

from __future__ import annotations

import json
import os
import secrets
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fake_authority.jwt import b64url, b64url_decode

CODE_LIFETIME = 600  # seconds: Entra's authorization codes live about 10 minutes
_CODE_PREFIX = "1.A"  # Entra's codes start "0.A" / "1.A"; the rest is opaque to clients


@dataclass(frozen=True)
class IssuedValue:
    """What a raw value the Authority issued is, so a message can name it ("the ID token of alice")."""

    kind: str  # "access token" | "ID token" | "refresh token" | "authorization code" | "client secret"
    who: str  # the user it was issued for, or "the app"
    client_id: str
    grant: str = ""  # the grant that produced it (tokens)

    def describe(self) -> str:
        return f"the {self.kind} of the app" if self.who == "the app" else f"the {self.kind} of {self.who}"


@dataclass(frozen=True)
class CodeGrant:
    """What an authorization code stands for; sealed into the code itself."""

    code_id: str
    client_id: str
    redirect_uri: str
    scope: str  # the raw scope the authorize request asked for
    username: str
    nonce: str
    challenge: str
    method: str
    issued_at: float


class CodeSealer:
    """Turns a ``CodeGrant`` into an opaque code and back; a code it did not make opens to ``None``."""

    def __init__(self, key: bytes | None = None):
        self._aead = AESGCM(key or AESGCM.generate_key(bit_length=128))

    def seal(self, grant: CodeGrant) -> str:
        nonce = os.urandom(12)
        payload = json.dumps(asdict(grant), separators=(",", ":")).encode()
        return _CODE_PREFIX + b64url(nonce + self._aead.encrypt(nonce, payload, None))

    def open(self, code: str) -> CodeGrant | None:
        if not code.startswith(_CODE_PREFIX) or len(code) > 16_384:
            return None
        try:
            raw = b64url_decode(code[len(_CODE_PREFIX):])
            data = json.loads(self._aead.decrypt(raw[:12], raw[12:], None))
            return CodeGrant(**data)
        except (InvalidTag, ValueError, TypeError):
            return None


@dataclass
class Family:
    """The tokens one authorization (one code) led to."""

    id: str
    username: str
    client_id: str
    access: dict[str, float] = field(default_factory=dict)  # uti -> exp
    refresh: list[str] = field(default_factory=list)  # refresh token values, oldest first
    revoked: str = ""  # why the family was revoked ("" while it is valid)


class Grants:
    """Redeemed codes, families and revoked access tokens, each bounded in memory.

    Redeemed codes are forgotten once expired (a replay after that is refused as expired anyway); a family is
    forgotten once none of its tokens can be used; revoked access tokens once they expire.
    """

    def __init__(self, max_families: int = 100_000):
        self.max_families = max_families
        self.redeemed: OrderedDict[str, tuple[float, str]] = OrderedDict()  # code id -> (issued at, family id)
        self.families: OrderedDict[str, Family] = OrderedDict()
        self.revoked_access: dict[str, float] = {}  # uti -> exp

    def clear(self) -> None:
        self.redeemed.clear()
        self.families.clear()
        self.revoked_access.clear()

    def redeem(self, grant: CodeGrant, now: float) -> Family | None:
        """Mark a code redeemed and open its family; ``None`` if it was redeemed before (a replay)."""
        self._purge(now)
        if grant.code_id in self.redeemed:
            return None
        family = Family(secrets.token_hex(8), grant.username, grant.client_id)
        self.redeemed[grant.code_id] = (grant.issued_at, family.id)
        self.families[family.id] = family
        while len(self.families) > self.max_families:
            self.families.popitem(last=False)
        return family

    def family_of_code(self, code_id: str) -> Family | None:
        entry = self.redeemed.get(code_id)
        return self.families.get(entry[1]) if entry else None

    def revoke(self, family: Family, reason: str) -> list[str]:
        """Revoke every token of the family; returns the refresh tokens the caller must deactivate."""
        family.revoked = reason
        self.revoked_access.update(family.access)
        return list(family.refresh)

    def is_revoked(self, uti: str) -> bool:
        return uti in self.revoked_access

    def _purge(self, now: float) -> None:
        while self.redeemed:
            code_id, (issued_at, _) = next(iter(self.redeemed.items()))
            if now - issued_at <= CODE_LIFETIME:
                break
            del self.redeemed[code_id]
        expired = [uti for uti, exp in self.revoked_access.items() if exp < now]
        for uti in expired:
            del self.revoked_access[uti]
