"""The ASGI application: routes, problem responses, body limit, Server-Timing, the router client's
lifetime."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import api, models, waha
from gateway.errors import (
    PROBLEM_JSON,
    BadRequest,
    BodyTooLarge,
    GatewayError,
    HttpRefusal,
    Problem,
    problem_for,
)
from gateway.openapi import finish
from gateway.settings import GatewaySettings
from gateway.upstream import RouterClient, upstream_seconds

DESCRIPTION = """\
HTTP in front of Session Mesh's gRPC API (`sessionmesh.v1.SessionMesh`): one route per RPC under
`/v1`, a session's events as server-sent events, and WAHA-compatible routes under `/api`.

Send the tenant's API token as `Authorization: Bearer <token>` (or `X-Api-Key: <token>`, as WAHA
does). Errors are RFC 9457 `application/problem+json`; `code` is the gRPC status behind them.
"""


def problem_response(problem: Problem) -> JSONResponse:
    return JSONResponse(
        problem.body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_JSON
    )


def _aliases(request: Request) -> dict[str, str] | None:
    found: dict[str, str] | None = getattr(request.state, "field_aliases", None)
    return found


async def _on_gateway_error(request: Request, exc: Exception) -> Response:
    return problem_response(problem_for(exc, aliases=_aliases(request)))


_HEADERS = {"last-event-id": "Last-Event-ID", "idempotency-key": "Idempotency-Key"}


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    first = errors[0] if errors else {"loc": ("body",), "msg": "is not valid"}
    field = models.field_name(tuple(first["loc"]))
    if first["loc"][:1] == ("header",):
        name = str(first["loc"][-1])
        field = _HEADERS.get(name.lower(), name)
    message = str(first["msg"])
    bad = BadRequest(f"{field}: {message}", field=field)
    return problem_response(problem_for(bad, aliases=_aliases(request)))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    problem = problem_for(HttpRefusal(exc.status_code, str(exc.detail)))
    problem.headers.update(exc.headers or {})
    if exc.status_code == 405:
        problem.headers["Allow"] = ", ".join(_allowed(request))
    return problem_response(problem)


def _allowed(request: Request) -> list[str]:
    """Every method the API serves at this path (Starlette names only the first route's)."""
    path = request.url.path
    for template, item in request.app.openapi()["paths"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return sorted(m.upper() for m in item)
    return []


async def _on_anything(request: Request, exc: Exception) -> Response:
    return problem_response(problem_for(exc))


class BodyLimit:
    """Answers 413 for a body over `limit` bytes, by Content-Length or as it streams in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = BodyTooLarge(f"the request body is larger than {self.limit} bytes")
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await problem_response(problem_for(too_large))(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise StarletteHTTPException(413, str(too_large))
            return message

        await self.app(scope, counted, send)


class ServerTiming:
    """Adds `Server-Timing: router;dur=<ms>, gateway;dur=<ms>`: time waiting on the router, and
    the gateway's own time until the reply started."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        spent: list[float] = []
        token = upstream_seconds.set(spent)
        started = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                total = time.perf_counter() - started
                router = sum(spent)
                value = f"router;dur={router * 1000:.3f}, gateway;dur={(total - router) * 1000:.3f}"
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"server-timing", value.encode())],
                }
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            upstream_seconds.reset(token)


def create_app(settings: GatewaySettings, router: RouterClient | None = None) -> FastAPI:
    """The gateway. Its lifespan opens the router client (or uses `router`) and closes it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = router or RouterClient(settings)
        async with client:
            app.state.router = client
            yield

    app = FastAPI(
        title="Session Mesh HTTP API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs" if settings.docs else None,
        redoc_url=None,
        separate_input_output_schemas=False,
    )
    app.state.settings = settings
    app.include_router(api.router)
    app.include_router(waha.router)
    app.include_router(waha.ping_router)

    @app.get("/healthz", tags=["health"], operation_id="Healthz", response_model=models.Health)
    async def healthz() -> dict[str, Any]:
        """The gateway is up."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        operation_id="Readyz",
        response_model=models.Health,
        responses={503: {"model": models.Health, "description": "the router is not SERVING"}},
    )
    async def readyz(request: Request) -> Response:
        """The router answers its health check SERVING."""
        client: RouterClient = request.app.state.router
        if await client.serving():
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable"}, status_code=503)

    app.add_exception_handler(GatewayError, _on_gateway_error)
    app.add_exception_handler(UnicodeEncodeError, _on_gateway_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_anything)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(ServerTiming)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = FastAPI.openapi(app)
            app.openapi_schema = finish(
                document,
                [models.SendText, models.SendMedia, models.SendUpload, models.QrImage,
                 models.QrRaw, models.SessionEvent, models.Problem, waha.WahaQrValue],
            )  # fmt: skip
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
