"""What the kit runs the scenarios against: the reference portal, or any WSGI app given as ``module:attr``."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from portals.config import CONTRACT, ConfigError, PortalConfig

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


def _contract_names(err: BaseException) -> list[str]:
    """The contract variables an import failed to read: ``os.environ["AUTHORITY"]`` raises KeyError('AUTHORITY'),
    ``PortalConfig.from_env()`` a ConfigError naming the missing ones (also when chained from another error)."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, KeyError) and cause.args and cause.args[0] in CONTRACT:
            return [cause.args[0]]
        if isinstance(cause, ConfigError) and (names := [n for n in CONTRACT if n in str(cause)]):
            return names
        cause = cause.__cause__ or cause.__context__
    return []


def _reader(err: BaseException, module_name: str) -> str:
    """Where the environment was read: the innermost frame of the portal's own code (not os, importlib or the
    kit's ``PortalConfig``), so the user knows which line to move into a factory."""
    where = repr(module_name)
    for frame, line in traceback.walk_tb(err.__traceback__):
        name = frame.f_globals.get("__name__", "")
        kit = name in ("os", "portals.config") or name.partition(".")[0] == "importlib"
        if not kit and not frame.f_code.co_filename.startswith("<"):
            where = f"{name!r} ({frame.f_code.co_filename}, line {line})"
    return where


def _factory_hint(err: BaseException, module_name: str) -> str:
    """An app whose module reads the environment contract at import cannot be loaded (the kit sets the contract
    per scenario, after loading): say so, and show the fix, a factory."""
    names = _contract_names(err)
    if not names:
        return ""
    return (f"\n  Module {_reader(err, module_name)} reads {', '.join(names)} from the environment at import time,"
            f"\n  but the kit sets the environment contract ({', '.join(CONTRACT)}) per scenario, after loading "
            f"the app.\n  Expose a factory that reads os.environ when it is called, and pass --portal-app "
            f"{module_name}:create_app:\n"
            f"      def create_app():\n"
            f"          {names[0].lower()} = os.environ[\"{names[0]}\"]  # read per scenario, when the kit calls it\n"
            f"          return make_app({names[0].lower()})  # your WSGI app, configured from the environment")


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
                              + _factory_hint(err, module_name)) from None
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
