"""The sandbox web app: a WhatsApp Web look-alike page, its WebSocket, its media server and the
simulated phone."""

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
from sandbox.browsers import MIN_CHROME, refusal
from sandbox.bundle import bundle
from sandbox.errors import BadRequest, NotFound, SandboxError
from sandbox.media import INFO, MAX_FILE_BYTES, MediaStore
from sandbox.messages import Mail
from sandbox.pages import Pages
from sandbox.settings import KNOBS, SandboxSettings, coerce, knob_problem
from sandbox.state import StateFile
from sessionmesh.config import ConfigError

__all__ = ["Sandbox", "SandboxSettings"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_QR_CODE = 2048
SAVE_DELAY = 0.2

# As the real page: scripts only from its own origin (no inline script, no eval), workers from
# its own origin, nothing framed.
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "worker-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data: blob:",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "origin-when-cross-origin",
}
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


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


@functools.lru_cache(maxsize=8)
def _static_text(name: str) -> str:
    return (STATIC / name).read_text()


async def index(request: web.Request) -> web.Response:
    """The app, or the "update your browser" page for a headless or outdated browser."""
    settings = request.app[SANDBOX].settings
    why = refusal(request.headers.get("User-Agent", ""), request.headers.get("Sec-CH-UA"))
    if why is not None:
        log.info("update page for %s: %s", request.remote, why)
        return web.Response(
            text=_static_text("update.html"), content_type="text/html", headers=PAGE_HEADERS
        )
    weight = settings.weight
    script_kb = round(weight.script_mb * 1024)
    boot = {
        "version": settings.version,
        "loadDelay": settings.load_delay,
        "legacyQrDom": settings.legacy_qr_dom,
        "refuseWebdriver": settings.refuse_webdriver,
        "minChrome": MIN_CHROME,
        "heapMb": weight.heap_mb,
        "idbMb": weight.idb_mb,
        "bundle": f"/app/bundle.js?kb={script_kb}" if script_kb > 0 else None,
    }
    html = _static_text("index.html").replace("__BOOT__", json.dumps(boot).replace("<", "\\u003c"))
    return web.Response(text=html, content_type="text/html", headers=PAGE_HEADERS)


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file() or path.suffix not in STATIC_TYPES:
        raise NotFound("path", f"no static file {name!r}")
    return web.Response(
        body=await asyncio.to_thread(path.read_bytes),
        content_type=STATIC_TYPES[path.suffix],
        charset="utf-8",
        headers=PAGE_HEADERS,
    )


async def app_bundle(request: web.Request) -> web.Response:
    try:
        kb = int(request.query.get("kb", "0"))
    except ValueError:
        raise BadRequest("kb", "must be a whole number of kilobytes") from None
    if not 0 < kb <= 256 * 1024:
        raise BadRequest("kb", "must be 1 to 262144")
    body = await asyncio.to_thread(bundle, kb)
    return web.Response(
        body=body, content_type="text/javascript", charset="utf-8", headers=PAGE_HEADERS
    )


async def qr_image(request: web.Request) -> web.Response:
    code = request.query.get("code", "")
    if not code or len(code) > MAX_QR_CODE:
        raise BadRequest("code", f"is required and at most {MAX_QR_CODE} characters")
    # Off the event loop: pages waiting for their next QR must not wait for this one's image.
    return web.Response(body=await asyncio.to_thread(qr_png, code), content_type="image/png")


async def media_upload(request: web.Request) -> web.Response:
    """A page uploads an encrypted file; the answer says where it lives."""
    kind = request.match_info["kind"]
    if kind not in INFO:
        raise NotFound("kind", f"no media kind {kind!r}")
    blob = await request.read()
    if not blob or len(blob) > MAX_FILE_BYTES + 1024:
        raise BadRequest("body", f"must be 1 byte to {MAX_FILE_BYTES} bytes")
    uploaded = request.app[phone.MEDIA].put(kind, blob)
    return web.json_response(
        {
            "url": str(request.url.with_path(uploaded.direct_path).with_query(None)),
            "direct_path": uploaded.direct_path,
            "enc_filehash": uploaded.enc_filehash,
        }
    )


async def media_download(request: web.Request) -> web.Response:
    blob = request.app[phone.MEDIA].get(request.path)
    if blob is None:
        raise NotFound("path", "no such media (or it expired)")
    return web.Response(body=blob, content_type="application/octet-stream")


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[SANDBOX].settings.as_dict())


async def put_config(request: web.Request) -> web.Response:
    body = await phone.json_object(request)
    for name, value in body.items():
        problem = knob_problem(name, value)
        if problem is not None:
            raise BadRequest(name, problem)
    changes = {k: coerce(k, v) for k, v in body.items()}
    return web.json_response(request.app[SANDBOX].configure(**changes).as_dict())


async def healthz(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    return web.json_response({"ok": True, "pages": sb.pages.count()})


class Sandbox:
    """The sandbox server; an async context manager whose `aclose()` is idempotent and final.

    With `state_path`, the simulated server remembers linked devices, account states and
    messages across its restarts, as WhatsApp's servers do; without it, in memory only."""

    def __init__(
        self,
        settings: SandboxSettings | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        state_path: Path | None = None,
    ) -> None:
        self._settings = settings or SandboxSettings()
        self._host = host
        self._port = port
        self._bound_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._closed = False
        self._state = None if state_path is None else StateFile(state_path)
        self._save_handle: asyncio.TimerHandle | None = None
        self.accounts = Accounts(on_change=self._save)
        self.mail = Mail()
        self.media = MediaStore()
        self.pages = Pages(
            self.accounts, self.mail, self.media, lambda: self._settings, self._save_soon
        )

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

    # --- the state file ---

    def _snapshot(self) -> dict[str, Any]:
        return {**self.accounts.to_state(), **self.mail.to_state()}

    def _save(self) -> None:
        """Write the state now (links, unlinks and account states are never left unsaved)."""
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        if self._state is not None:
            self._state.save(self._snapshot())

    def _save_soon(self) -> None:
        """Write the state shortly (messages and acks come in bursts)."""
        if self._state is None or self._save_handle is not None:
            return
        self._save_handle = asyncio.get_running_loop().call_later(SAVE_DELAY, self._save)

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[json_errors], client_max_size=MAX_FILE_BYTES + 4096)
        app[SANDBOX] = self
        app[phone.ACCOUNTS] = self.accounts
        app[phone.PAGES] = self.pages
        app[phone.MAIL] = self.mail
        app[phone.MEDIA] = self.media
        app.router.add_get("/", index)
        app.router.add_get("/static/{name}", static_file)
        app.router.add_get("/app/bundle.js", app_bundle)
        app.router.add_get("/qr.png", qr_image)
        app.router.add_post("/mms/{kind}", media_upload)
        app.router.add_get("/v/{tail:.+}", media_download)
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
        if self._state is not None:
            saved = self._state.load()
            self.accounts.load_state(saved)
            self.mail.load_state(saved)
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

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("the Sandbox is not started")
        return self._bound_port

    async def aclose(self) -> None:
        """Close every page's WebSocket, save the state, then stop serving. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self.pages.aclose()
        if self._runner is not None:
            self._save()
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
