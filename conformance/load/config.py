"""The Locust runner's configuration: one JSON file the orchestrator writes (mode 0600, removed after the run)
and every runner process — local, master or worker — reads. It holds the fake accounts' passwords (fake users of
the run's registry, never the client secret, a code or a token)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flows import MODES, Role


@dataclass
class RunConfig:
    mode: str
    portal_url: str
    page: str
    redirect_path: str
    authority_host: str  # host:port of the fake Authority (its pages are filled in by the users)
    ca_file: str
    accounts: list[tuple[str, str]]  # (username, password); user i signs in as accounts[i]
    users: int
    spawn_rate: float
    duration: float
    out_dir: str  # where the runner writes visits.jsonl, stats.json and started
    role: str = "local"  # local | master | worker
    workers: int = 0  # the master waits for this many workers; account slots are shared out by worker index
    master_host: str = "127.0.0.1"
    master_port: int = 5557
    wait: tuple[float, float] = (0.3, 1.0)  # seconds a user waits between visits
    two_tabs: float = 0.2  # chance that a signed-in user opens the page twice at once
    request_timeout: float = 10.0
    web_port: int = 0  # > 0: Locust's web UI on 127.0.0.1:web_port (local or master)
    step_names: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def names_for(mode: str) -> dict[str, str]:
        """Locust request names by what the request does, from the flow's step ids (never a typed number)."""
        flow = MODES[mode].flow
        names = {"page": f"{flow.id_of(Role.ACCESS)} portal page", "other": f"{flow.id_of(Role.ACCESS)} portal, "
                 "other path"}
        for key, role, what in (("authorize", Role.REDIRECT, "authorize"), ("login", Role.LOGIN, "sign-in"),
                                ("consent", Role.CONSENT, "consent"), ("callback", Role.CALLBACK, "callback")):
            if flow.has(role):
                names[key] = f"{flow.id_of(role)} {what}"
        return names

    def write(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f)

    @classmethod
    def read(cls, path: str | Path) -> RunConfig:
        raw: dict[str, Any] = json.loads(Path(path).read_text())
        raw["accounts"] = [tuple(a) for a in raw["accounts"]]
        raw["wait"] = tuple(raw["wait"])
        return cls(**raw)
