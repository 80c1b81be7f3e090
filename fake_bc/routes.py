"""BC's URL shapes, parsed once per distinct path:

``/v2.0/{tenant}/{environment}/api/v2.0/…``, ``/v2.0/{environment}/api/v2.0/…`` (the tenant then comes from
the token) and custom APIs ``…/api/{publisher}/{group}/{version}/…``. A path with ``api`` right after the first
segment is tenant-less; otherwise the first segment is the tenant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

STANDARD_API = "v2.0"
_SEGMENT = re.compile(r"^(?P<name>[^()]*)\((?P<key>[^()]*)\)$")
_NAME = re.compile(r"^[A-Za-z$][\w$.]{0,79}$")


@dataclass(frozen=True)
class Segment:
    name: str
    key: str | None = None  # the text inside "(…)", when the segment addresses one entity


@dataclass(frozen=True)
class Route:
    tenant: str | None  # as written in the URL; None when the URL leaves it to the token
    environment: str
    api: str  # "v2.0", or "publisher/group/version" for a custom API
    segments: tuple[Segment, ...]
    api_root: str  # the raw path up to the API version, e.g. "/v2.0/<tid>/Production/api/v2.0"

    @property
    def endpoint(self) -> str:
        """What the trace calls this request: the entity set (or ``$metadata``) it addresses."""
        if not self.segments:
            return "service"
        name = self.segments[-1].name
        return name if _NAME.match(name) else "unknown"


def _segment(raw: str) -> Segment:
    text = unquote(raw, errors="replace")
    match = _SEGMENT.match(text)
    if match is None:
        return Segment(text)
    return Segment(match["name"], match["key"])


@lru_cache(maxsize=4096)
def parse_route(path: str) -> Route | None:
    """The route of a path, or None when the path is not an API path of BC at all."""
    parts = path.split("/")
    if len(parts) < 4 or parts[0] != "" or parts[1] != "v2.0":
        return None
    if parts[3] == "api":
        tenant, environment, rest_at = None, parts[2], 4
    elif len(parts) > 4 and parts[4] == "api":
        tenant, environment, rest_at = unquote(parts[2], errors="replace"), parts[3], 5
    else:
        return None
    rest = parts[rest_at:]
    if rest and rest[-1] == "":  # a trailing slash
        rest = rest[:-1]
    if not rest:
        return None
    if rest[0] == STANDARD_API:
        api, api_len = STANDARD_API, 1
    elif len(rest) >= 3:
        api, api_len = "/".join(unquote(p, errors="replace") for p in rest[:3]), 3
    else:
        return None
    segments = tuple(_segment(p) for p in rest[api_len:])
    api_root = "/".join(parts[: rest_at + api_len])
    return Route(tenant, unquote(environment, errors="replace"), api, segments, api_root)
