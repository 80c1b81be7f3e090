"""Serve the reference portal as a process (``python -m portals.serve``), configured by the environment
contract and listening on 127.0.0.1:PORTAL_PORT — the kit can then verify it like any external portal."""

from __future__ import annotations

import sys

from werkzeug.serving import run_simple

from portals.config import ConfigError, PortalConfig
from portals.reference import create_app


def main() -> int:
    try:
        config = PortalConfig.from_env()
    except ConfigError as err:
        print(f"portal configuration error: {err}", file=sys.stderr)
        return 2
    run_simple("127.0.0.1", config.portal_port, create_app(config), threaded=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
