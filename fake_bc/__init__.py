"""A fake Microsoft Dynamics 365 Business Central API v2.0 that unmodified ``requests`` clients accept.

``BusinessCentral`` is the sans-IO core; ``conformance.inprocess.mount`` and ``conformance.loopback`` serve it.
"""

from fake_bc.auth import AuthFailure, EntraApps, TokenVerifier, VerifiedToken
from fake_bc.core import BC_HOST, DEFAULT_ENVIRONMENTS, BusinessCentral
from fake_bc.data import DEMO_COMPANY, SeedSpec
from fake_bc.faults import BCFaults
from fake_bc.limits import LimitSettings

__all__ = ["BC_HOST", "DEFAULT_ENVIRONMENTS", "DEMO_COMPANY", "AuthFailure", "BCFaults", "BusinessCentral",
           "EntraApps", "LimitSettings", "SeedSpec", "TokenVerifier", "VerifiedToken"]
