"""The environment contract: how the kit configures any portal (keep these names)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from flows import MODES

CONTRACT = ("AUTH_MODE", "AUTHORITY", "TENANT_ID", "CLIENT_ID", "CLIENT_SECRET", "REDIRECT_URI", "BC_API_URL",
            "BC_SCOPE", "PORTAL_PORT")


class ConfigError(ValueError):
    """A portal configuration that cannot work; the message names the variable and what to fix."""


@dataclass(frozen=True)
class PortalConfig:
    auth_mode: str
    authority: str  # https://login.microsoftonline.com/<tenant>
    tenant_id: str
    client_id: str
    client_secret: str
    redirect_uri: str
    bc_api_url: str  # …/v2.0/<tenant>/<environment>/api/v2.0
    bc_scope: str = "https://api.businesscentral.dynamics.com/.default"
    portal_port: int = 5000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PortalConfig:
        env = os.environ if env is None else env
        missing = [name for name in CONTRACT[:-2] if not env.get(name)]
        if missing:
            raise ConfigError(f"missing environment variable(s): {', '.join(missing)}")
        mode = env["AUTH_MODE"]
        if mode not in MODES:
            raise ConfigError(f"AUTH_MODE must be one of {', '.join(MODES)}, got {mode!r}")
        for name in ("AUTHORITY", "BC_API_URL"):
            if urlsplit(env[name]).scheme != "https":
                raise ConfigError(f"{name} must be an https URL, got {env[name]!r}")
        port = env.get("PORTAL_PORT", "5000")
        if not port.isdigit():
            raise ConfigError(f"PORTAL_PORT must be a port number, got {port!r}")
        return cls(mode, env["AUTHORITY"].rstrip("/"), env["TENANT_ID"], env["CLIENT_ID"], env["CLIENT_SECRET"],
                   env["REDIRECT_URI"], env["BC_API_URL"].rstrip("/"),
                   env.get("BC_SCOPE") or "https://api.businesscentral.dynamics.com/.default", int(port))

    def as_env(self) -> dict[str, str]:
        return {"AUTH_MODE": self.auth_mode, "AUTHORITY": self.authority, "TENANT_ID": self.tenant_id,
                "CLIENT_ID": self.client_id, "CLIENT_SECRET": self.client_secret, "REDIRECT_URI": self.redirect_uri,
                "BC_API_URL": self.bc_api_url, "BC_SCOPE": self.bc_scope, "PORTAL_PORT": str(self.portal_port)}

    @property
    def delegated_scope(self) -> str:
        """The BC delegated permission the code flow asks for, derived from BC_SCOPE's resource."""
        resource = self.bc_scope.rsplit("/", 1)[0]
        return f"{resource}/Financials.ReadWrite.All"
