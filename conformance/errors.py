"""Why a run stops without a verdict: the kit's own bug, or a portal that never became ready. Neither is a
conformance result, so neither may become a check's outcome; ``bc-conformance run`` exits 2 for both."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any


class InternalError(Exception):
    """A bug in the kit — an exception inside a fake (recorded in a trace event's ``detail["internal_error"]``) or
    inside a check — never the portal's behaviour. ``where`` names the trace event (seq) or the check."""

    def __init__(self, error: str, where: str, tb: str = "", result: Any = None):
        super().__init__(f"{error} ({where})")
        self.error, self.where, self.tb = error, where, tb
        self.result = result  # the ScenarioResult whose trace shows it, if any (its trace goes to the report file)
        self.report: Path | None = None  # DIR/internal-error.json once written (``bc-conformance run``)

    @classmethod
    def of(cls, err: BaseException) -> InternalError:
        """Any unexpected exception of the kit, located at its innermost frame."""
        if isinstance(err, InternalError):
            return err
        return cls(f"{type(err).__name__}: {err}", where_raised(err), "".join(traceback.format_exception(err)))


class PortalNotReady(Exception):
    """The portal never became ready for a scenario (its command exited, or never listened on ``PORTAL_PORT``, or
    the app could not be built): what happened, for the user to fix; no verdict is written."""

    def __init__(self, mode: str, flow: str, scenario: str, explanation: str):
        super().__init__(f"the portal never became ready for {mode} > {flow} > {scenario}: {explanation}")
        self.mode, self.flow, self.scenario, self.explanation = mode, flow, scenario, explanation


def where_raised(err: BaseException) -> str:
    """``file:line in function`` of the innermost frame of an exception's traceback (the fakes record it)."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return "unknown"
    frame = frames[-1]
    path = "/".join(Path(frame.filename).parts[-2:])  # package/module.py: enough to find it, no home directory
    return f"{path}:{frame.lineno} in {frame.name}"
