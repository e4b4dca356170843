"""Gateway errors, and the one place that turns them (and gRPC statuses) into RFC 9457 problems.

    GatewayError                 an answer other than success; becomes application/problem+json
    ├── BadRequest          400  input the gateway refuses itself (a header, a body, a query)
    ├── NoCredentials       401  neither `Authorization: Bearer` nor `X-Api-Key`
    ├── NoQrCode            409  the session shows no QR code now (the detail says its state)
    ├── AlreadyExists       422  WAHA's answer to creating a session that exists
    ├── BodyTooLarge        413  a body over MESH_GATEWAY_MAX_BODY
    ├── Stopping            503  the gateway is stopping
    ├── HttpRefusal         4xx  what the HTTP layer refused (no such route, wrong method)
    └── Upstream            ...  the router answered a gRPC status: see `HTTP_STATUS`

`problem_for(exc)` is the only translation: every route, the SSE stream's `error` event and the
exception handlers call it. A 5xx the router did not explain carries no detail of its own, and
nothing the gateway did not mean to say (a traceback, an exception's text) reaches a client.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

import grpc
import grpc.aio

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# gRPC status -> HTTP status, as Google's API guidelines map them (AIP-193), with
# FAILED_PRECONDITION as 409: the session is in the wrong state for the call.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 503,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
}
# Statuses whose gRPC message is the router's own words, fit for a client.
_TRUSTED_DETAIL = {code for code, status in HTTP_STATUS.items() if status < 500} | {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNIMPLEMENTED,
}
# gRPC's words when a message is over the receiver's limit (not a quota: retrying cannot help).
_TOO_LARGE = "Received message larger than max"
# Seconds a client should wait before trying again, by HTTP status.
_RETRY_AFTER = {429: 1, 503: 1}
# The router's INVALID_ARGUMENT messages start with the field: "to: ...", "labels['k']: ...".
_FIELD_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*(?:\[[^\]]{0,80}\])?): ")


class GatewayError(Exception):
    """Base of every error the gateway answers with; `detail` goes to the client."""

    status = 500
    code = "INTERNAL"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class BadRequest(GatewayError):
    status = 400
    code = "INVALID_ARGUMENT"


class NoCredentials(GatewayError):
    status = 401
    code = "UNAUTHENTICATED"


class NoQrCode(GatewayError):
    status = 409
    code = "FAILED_PRECONDITION"


class BodyTooLarge(GatewayError):
    status = 413
    code = "INVALID_ARGUMENT"


class AlreadyExists(GatewayError):
    status = 422
    code = "ALREADY_EXISTS"


class HttpRefusal(GatewayError):
    """The HTTP layer's own refusal (404 no route, 405 method, 413...)."""

    _CODES = {404: "NOT_FOUND", 405: "UNIMPLEMENTED", 413: "INVALID_ARGUMENT"}

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = self._CODES.get(status, "INVALID_ARGUMENT")


class Stopping(GatewayError):
    status = 503
    code = "UNAVAILABLE"


class Upstream(GatewayError):
    """The router answered `grpc_code`; the HTTP status follows `HTTP_STATUS`."""

    def __init__(self, grpc_code: grpc.StatusCode, details: str) -> None:
        self.grpc_code = grpc_code
        self.status = HTTP_STATUS.get(grpc_code, 500)
        self.code = grpc_code.name
        if grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED and _TOO_LARGE in details:
            self.status = 413  # gRPC's own refusal of a request over MESH_MAX_MESSAGE_BYTES
        field = None
        if grpc_code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
            match = _FIELD_RE.match(details)
            field = match.group(1) if match else None
        super().__init__(details, field=field)


@contextmanager
def upstream_errors() -> Iterator[None]:
    """Turn a gRPC error from the router into `Upstream` (the gateway's one place for it)."""
    try:
        yield
    except grpc.aio.AioRpcError as e:
        raise Upstream(e.code(), e.details() or "") from e


class Problem:
    """An RFC 9457 problem: status, title, detail, plus `code` (the gRPC status name) and,
    for a bad field, `errors: [{field, detail}]`."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers


def problem_for(exc: BaseException, *, aliases: Mapping[str, str] | None = None) -> Problem:
    """The problem a client gets for `exc`. `aliases` renames fields for routes whose
    request names differ from the API's (the WAHA routes' `chatId` for `to`). Anything that
    is not a GatewayError is logged and answered as a bare 500."""
    if isinstance(exc, UnicodeEncodeError):
        # JSON may escape a lone surrogate ("\ud800"); protobuf strings must be UTF-8.
        exc = BadRequest("body: holds text that is not valid Unicode (a lone surrogate)")
    elif not isinstance(exc, GatewayError):
        log.error("unexpected error", exc_info=exc)
        exc = GatewayError("internal error in the gateway")
    status = exc.status
    detail = exc.detail
    if isinstance(exc, Upstream) and exc.grpc_code not in _TRUSTED_DETAIL:
        log.warning("router answered %s: %s", exc.code, exc.detail)
        detail = f"the router answered {exc.code}"
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": exc.code,
    }
    if exc.field is not None:
        field = exc.field
        if aliases:
            head, sep, rest = field.partition(".")
            field = aliases.get(field, aliases.get(head, head) + sep + rest)
            body["detail"] = detail.replace(f"{exc.field}:", f"{field}:", 1)
        body["errors"] = [{"field": field, "detail": body["detail"]}]
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="session-mesh"'
    if status in _RETRY_AFTER:
        headers["Retry-After"] = str(_RETRY_AFTER[status])
    return Problem(status, body, headers)
