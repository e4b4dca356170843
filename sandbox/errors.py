"""Errors the sandbox's HTTP API answers with; `app.json_errors` maps them to responses in one place.

SandboxError            every error names the request field it is about
 ├── BadRequest         400: malformed input
 ├── NotFound           404: no such phone, device or QR code on show
 ├── LimitReached       409: the phone already has its maximum of linked devices
 └── Gone               410: the QR code was shown once but has expired
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base class; `field` names the offending request field, `status` the HTTP status."""

    status = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class BadRequest(SandboxError):
    status = 400


class NotFound(SandboxError):
    status = 404


class LimitReached(SandboxError):
    status = 409


class Gone(SandboxError):
    status = 410
