"""Errors the console shows to its operator.

ConsoleError
├── ConfigError   a missing or bad setting (MESH_TOKEN, MESH_ROUTER)
└── ApiError      a failed call to the router: carries the gRPC status name and details
"""

from __future__ import annotations


class ConsoleError(Exception):
    """Base of the console's errors."""


class ConfigError(ConsoleError):
    """A missing or bad setting; the message names the variable."""


class ApiError(ConsoleError):
    """A router call that failed; `code` is the gRPC status name (e.g. UNAVAILABLE)."""

    def __init__(self, code: str, details: str, method: str) -> None:
        super().__init__(f"{method}: {code}: {details}")
        self.code = code
        self.details = details
        self.method = method
