"""Minimal RS256 JWT signing and parsing. The signing key is parsed once: a key import per request
would cost ~30 ms and cap a server at a few dozen tokens per second."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_PAD = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_b64(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class JwtError(ValueError):
    """A token that is not a well-formed or correctly signed JWT."""


class SigningKey:
    """An RSA key with a ``kid``; ``jwk`` is what the Authority publishes in its JWKS."""

    def __init__(self, private_key: rsa.RSAPrivateKey | None = None, kid: str | None = None):
        self.private_key = private_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = self.private_key.public_key()
        numbers = self.public_key.public_numbers()
        thumb = hashlib.sha256(f'{{"e":"{_int_b64(numbers.e)}","kty":"RSA","n":"{_int_b64(numbers.n)}"}}'
                               .encode()).digest()
        self.kid = kid or b64url(thumb)[:27]
        self.jwk = {"kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid,
                    "n": _int_b64(numbers.n), "e": _int_b64(numbers.e), "alg": "RS256"}
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid, "x5t": self.kid}
        self._header = b64url(json.dumps(header, separators=(",", ":")).encode())

    def sign(self, claims: dict[str, Any]) -> str:
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{self._header}.{payload}"
        signature = self.private_key.sign(signing_input.encode("ascii"), _PAD, _SHA256)
        return f"{signing_input}.{b64url(signature)}"


@dataclass(frozen=True)
class Jwt:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    def verify(self, public_key: rsa.RSAPublicKey) -> bool:
        if self.header.get("alg") != "RS256":
            return False
        try:
            public_key.verify(self.signature, self.signing_input, _PAD, _SHA256)
        except InvalidSignature:
            return False
        return True


def parse(token: str) -> Jwt:
    """Split and decode a compact JWS without verifying it; ``JwtError`` says what is wrong."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError(f"expected a JWT of 3 dot-separated parts, got {len(parts)}")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError) as err:
        raise JwtError(f"the JWT's parts are not base64url JSON: {err}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtError("the JWT's header and payload must be JSON objects")
    return Jwt(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii", "replace"), signature)
