"""What the kit runs the scenarios against: the reference portal, or any WSGI app given as ``module:attr``."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from portals.config import PortalConfig

REFERENCE = "portals.reference:create_app"


class TargetError(ValueError):
    """A target that cannot be used; raised before any scenario runs, with what to fix."""


def _is_wsgi_app(obj: Any) -> bool:
    if hasattr(obj, "wsgi_app"):
        return True
    try:
        params = [p for p in inspect.signature(obj).parameters.values()
                  if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2


@dataclass
class InProcessTarget:
    """``module:attr`` naming a WSGI app, or a factory that builds one from the environment contract.

    A factory is called afresh for every scenario (no state leaks between scenarios); a module-level app
    is re-imported for every scenario, with the environment contract already set.
    """

    spec: str
    _factory: Callable[..., Any] | None = None
    _is_app: bool = False

    @classmethod
    def load(cls, spec: str) -> InProcessTarget:
        module_name, sep, attr = spec.partition(":")
        if not sep or not module_name or not attr:
            raise TargetError(f"--portal-app expects MODULE:ATTR (e.g. {REFERENCE}), got {spec!r}")
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())  # as `python -m`, flask and gunicorn do: MODULE may live right here
        try:
            module = importlib.import_module(module_name)
        except Exception as err:
            raise TargetError(f"--portal-app {spec}: cannot import {module_name!r}: {type(err).__name__}: {err}"
                              ) from None
        obj = getattr(module, attr, None)
        if obj is None or not callable(obj):
            raise TargetError(f"--portal-app {spec}: {module_name!r} has no callable {attr!r} "
                              "(expected a WSGI app or a factory returning one)")
        return cls(spec, obj, _is_wsgi_app(obj))

    def build(self, config: PortalConfig) -> Any:
        """A fresh WSGI app for one scenario (the environment contract is set by the caller)."""
        assert self._factory is not None
        if not self._is_app:
            app = self._factory()
        else:
            module_name, _, attr = self.spec.partition(":")
            module = importlib.reload(sys.modules[module_name])
            app = getattr(module, attr)
        if not callable(app):
            raise TargetError(f"{self.spec} returned {type(app).__name__}, not a WSGI app")
        return app

    @property
    def name(self) -> str:
        return "reference portal" if self.spec == REFERENCE else self.spec

    @property
    def cli_args(self) -> str:
        """How ``bc-conformance run`` names this target again (for replay commands)."""
        return "" if self.spec == REFERENCE else f"--portal-app {self.spec}"
