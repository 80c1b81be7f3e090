"""The fakes served on loopback HTTPS with a CA generated for the run (``bc-conformance serve``, and the
external-portal runner).

Both servers share the process's descriptors: ``connection_cap(servers=2)`` gives each half of what RLIMIT_NOFILE
leaves after headroom. The Authority's server also answers ``GET /_bc_conformance/stats`` (``STATS_PATH``) with the
trace's and both servers' counters (JSON); the fakes never see that path, and nothing is traced for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from conformance.clock import Clock, SystemClock
from conformance.http_protocol import Limits, connection_cap
from conformance.loopback import LoopbackServer
from conformance.tls import RunCA
from conformance.trace import Trace
from conformance.wire import Request, Response
from fake_authority import BC_SCOPE, Authority, Registry

STATS_PATH = "/_bc_conformance/stats"


@dataclass
class FakeServers:
    """Authority (and Business Central, when available) on 127.0.0.1 sharing one clock and one trace."""

    registry: Registry = field(default_factory=Registry.default)
    host: str = "127.0.0.1"
    authority_port: int = 0
    bc_port: int = 0
    clock: Clock = field(default_factory=SystemClock)
    trace: Trace = field(default_factory=Trace)
    token_lifetime: int | None = None
    limits: Limits | None = None  # per server; default: http_protocol's, connections shared out of RLIMIT_NOFILE

    def __post_init__(self) -> None:
        self.authority = Authority(self.registry, self.clock, self.trace)
        self.authority.token_lifetime = self.token_lifetime
        limits = self.limits or Limits()
        if limits.max_connections is None:
            limits = replace(limits, max_connections=connection_cap(servers=2))
        self.limits = limits
        self.ca = RunCA()
        tls = self.ca.issue((self.host, "localhost") if self.host != "localhost" else ("localhost", "127.0.0.1"))
        self.authority_server = LoopbackServer(self._authority_handle, tls, self.host, self.authority_port, limits)
        self.bc: Any = None
        self.bc_server: LoopbackServer | None = None
        try:
            from fake_bc import BusinessCentral  # optional until fake_bc exists
        except ImportError:
            return
        self.bc = BusinessCentral.for_authority(self.authority)
        self.bc_server = LoopbackServer(self.bc.handle, tls, self.host, self.bc_port, limits)

    def _authority_handle(self, request: Request) -> Response:
        if request.path == STATS_PATH:
            if request.method not in ("GET", "HEAD"):
                return Response.json(405, {"error": "invalid_request", "error_description": "GET only"},
                                     [("Allow", "GET, HEAD")])
            return Response.json(200, self.stats(), [("Cache-Control", "no-store")])
        return self.authority.handle(request)

    def stats(self) -> dict[str, Any]:
        """The trace's counters (``dropped``: events pushed out by its limit) and each server's (connections,
        bodies in flight, what the limits refused)."""
        servers = {"authority": self.authority_server.stats()}
        if self.bc_server is not None:
            servers["bc"] = self.bc_server.stats()
        return {"trace": self.trace.stats(), "servers": servers}

    def start(self) -> FakeServers:
        self.authority_server.start()
        port = self.authority_server.port
        self.authority.serve_at(self.authority_server.url, f"localhost:{port}", f"127.0.0.1:{port}")
        if self.bc_server is not None:
            try:
                self.bc_server.start()
            except Exception:
                self.authority_server.stop()
                raise
        return self

    def stop(self) -> None:
        self.authority_server.stop()
        if self.bc_server is not None:
            self.bc_server.stop()
        self.ca.close()

    def __enter__(self) -> FakeServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def authority_url(self) -> str:
        return f"{self.authority_server.url}/{self.registry.tenant_id}"

    @property
    def bc_api_url(self) -> str | None:
        if self.bc_server is None:
            return None
        return f"{self.bc_server.url}/v2.0/{self.registry.tenant_id}/Production/api/v2.0"

    def info(self) -> dict[str, Any]:
        client = self.registry.default_client
        return {
            "authority": self.authority_url,
            "tenant_id": self.registry.tenant_id,
            "client_id": client.client_id,
            "client_secret": client.secrets[0].value if client.secrets else None,
            "scope": BC_SCOPE,
            "redirect_uris": list(client.redirect_uris),
            "ca_file": str(self.ca.ca_file),
            "users": [{"username": u.username, "password": u.password} for u in self.registry.users],
            "delegate": self.registry.delegate,
            "bc_api_url": self.bc_api_url,
            "stats_url": f"{self.authority_server.url}{STATS_PATH}",
        }
