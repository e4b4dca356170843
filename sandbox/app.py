"""The sandbox web app: a WhatsApp Web look-alike page, its WebSocket and the simulated phone."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import qrcode
from aiohttp import web

from sandbox import phone
from sandbox.accounts import Accounts
from sandbox.errors import BadRequest, SandboxError
from sandbox.pages import Pages
from sandbox.settings import FLOAT_KNOBS, KNOBS, SandboxSettings, knob_problem
from sessionmesh.config import ConfigError

__all__ = ["Sandbox", "SandboxSettings"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_QR_CODE = 2048


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The one place errors become responses: `{"error": "<field>: <message>"}`."""
    try:
        return await handler(request)
    except SandboxError as e:
        return web.json_response({"error": str(e)}, status=e.status)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return web.json_response({"error": e.reason}, status=e.status)


@functools.lru_cache(maxsize=64)
def qr_png(code: str) -> bytes:
    """The QR code for `code` as a PNG. A fixed mask skips trying all eight (a third of the time);
    the page scales the image onto its canvas."""
    qr = qrcode.QRCode(border=2, box_size=4, mask_pattern=0)
    qr.add_data(code)
    qr.make(fit=True)
    out = io.BytesIO()
    qr.make_image().save(out, format="PNG")
    return out.getvalue()


async def index(request: web.Request) -> web.Response:
    settings = request.app[SANDBOX].settings
    boot = json.dumps({"version": settings.version, "load_delay": settings.load_delay})
    html = (STATIC / "index.html").read_text().replace("__BOOT__", boot.replace("<", "\\u003c"))
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})


async def script(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "wa.js", headers={"Cache-Control": "no-store"})


async def qr_image(request: web.Request) -> web.Response:
    code = request.query.get("code", "")
    if not code or len(code) > MAX_QR_CODE:
        raise BadRequest("code", f"is required and at most {MAX_QR_CODE} characters")
    # Off the event loop: pages waiting for their next QR must not wait for this one's image.
    return web.Response(body=await asyncio.to_thread(qr_png, code), content_type="image/png")


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[SANDBOX].settings.as_dict())


async def put_config(request: web.Request) -> web.Response:
    body = await phone.json_object(request)
    for name, value in body.items():
        problem = knob_problem(name, value)
        if problem is not None:
            raise BadRequest(name, problem)
    changes = {k: float(v) if k in FLOAT_KNOBS else v for k, v in body.items()}
    return web.json_response(request.app[SANDBOX].configure(**changes).as_dict())


async def healthz(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    return web.json_response({"ok": True, "pages": sb.pages.count()})


class Sandbox:
    """The sandbox server; an async context manager whose `aclose()` is idempotent and final."""

    def __init__(
        self, settings: SandboxSettings | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._settings = settings or SandboxSettings()
        self._host = host
        self._port = port
        self._bound_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._closed = False
        self.accounts = Accounts()
        self.pages = Pages(self.accounts, lambda: self._settings)

    @property
    def settings(self) -> SandboxSettings:
        return self._settings

    def configure(self, **knobs: Any) -> SandboxSettings:
        """Change knobs at runtime; ConfigError names a bad one. Running flows see it next step."""
        unknown = set(knobs) - set(KNOBS)
        if unknown:
            raise ConfigError(f"{sorted(unknown)[0]} is not a sandbox setting")
        self._settings = dataclasses.replace(self._settings, **knobs)
        return self._settings

    def conflicts(self) -> dict[str, int]:
        """Per phone, how many times an older page was switched to CONFLICT."""
        return self.accounts.conflicts()

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[json_errors])
        app[SANDBOX] = self
        app[phone.ACCOUNTS] = self.accounts
        app[phone.PAGES] = self.pages
        app.router.add_get("/", index)
        app.router.add_get("/wa.js", script)
        app.router.add_get("/qr.png", qr_image)
        app.router.add_get("/ws", self.pages.handle)
        app.router.add_get("/sandbox/config", get_config)
        app.router.add_put("/sandbox/config", put_config)
        app.router.add_get("/healthz", healthz)
        app.router.add_routes(phone.routes)
        return app

    async def start(self) -> None:
        """Bind and serve; port 0 picks a free port (read it back from `url`)."""
        if self._closed:
            raise RuntimeError("this Sandbox was closed; make a new one")
        if self._runner is not None:
            raise RuntimeError("this Sandbox is already started")
        runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._bound_port = int(runner.addresses[0][1])
        log.info("sandbox serving on %s", self.url)

    @property
    def url(self) -> str:
        if self._bound_port is None:
            raise RuntimeError("the Sandbox is not started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._bound_port}/"

    async def aclose(self) -> None:
        """Close every page's WebSocket, then stop serving. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self.pages.aclose()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


SANDBOX = web.AppKey("sandbox", Sandbox)
