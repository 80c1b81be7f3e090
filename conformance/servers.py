"""The fakes served on loopback HTTPS with a CA generated for the run (``bc-conformance serve``, and the
external-portal runner)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conformance.clock import Clock, SystemClock
from conformance.loopback import LoopbackServer
from conformance.tls import RunCA
from conformance.trace import Trace
from fake_authority import BC_SCOPE, Authority, Registry


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

    def __post_init__(self) -> None:
        self.authority = Authority(self.registry, self.clock, self.trace)
        self.authority.token_lifetime = self.token_lifetime
        self.ca = RunCA()
        tls = self.ca.issue((self.host, "localhost") if self.host != "localhost" else ("localhost", "127.0.0.1"))
        self.authority_server = LoopbackServer(self.authority.handle, tls, self.host, self.authority_port)
        self.bc: Any = None
        self.bc_server: LoopbackServer | None = None
        try:
            from fake_bc import BusinessCentral  # optional until fake_bc exists
        except ImportError:
            return
        self.bc = BusinessCentral.for_authority(self.authority)
        self.bc_server = LoopbackServer(self.bc.handle, tls, self.host, self.bc_port)

    def start(self) -> FakeServers:
        self.authority_server.start()
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
        }
