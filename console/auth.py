"""Who may use the console: a login with the console password (read-only) or the tenant's API
token (operator: stop, log out, drain). Compared in constant time."""

from __future__ import annotations

import hmac

from console.settings import ConsoleSettings

ROLE_KEY = "console.role"
VIEWER = "viewer"  # sees everything the tenant may see; changes nothing
OPERATOR = "operator"  # may also stop, log out and drain


def role_for(password: str, settings: ConsoleSettings) -> str | None:
    """The role a login with `password` gets, or None when it is wrong."""
    given = password.encode()
    role: str | None = None
    if settings.password and hmac.compare_digest(given, settings.password.encode()):
        role = VIEWER
    if hmac.compare_digest(given, settings.token.encode()):
        role = OPERATOR
    return role
