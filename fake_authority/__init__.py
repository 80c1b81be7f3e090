"""A fake Microsoft Entra ID Authority that unmodified MSAL Python and MSAL Node accept.

``Authority`` is the sans-IO core; ``conformance.inprocess.mount`` and ``conformance.loopback`` serve it.
"""

from fake_authority.core import Authority
from fake_authority.registry import BC_RESOURCE, Client, Registry, RegistryError, Secret, User

LOGIN_HOST = "https://login.microsoftonline.com"
BC_SCOPE = f"{BC_RESOURCE}/.default"

__all__ = ["BC_RESOURCE", "BC_SCOPE", "LOGIN_HOST", "Authority", "Client", "Registry", "RegistryError", "Secret",
           "User"]
