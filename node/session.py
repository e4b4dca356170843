"""One hosted WhatsApp Web session: its state machine, driven by what the page reports."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from playwright.async_api import BrowserContext, Page
from playwright.async_api import Error as PlaywrightError

from node import whatsapp as wa
from node.auth_store import SnapshotStore
from node.browser import BrowserClosed, BrowserPool
from node.crypto import SnapshotError
from node.errors import NodeError, PageError
from node.events import EventLog, timestamp
from node.settings import NodeSettings
from sessionmesh import telemetry
from sessionmesh.v1 import common_pb2 as pb

log = logging.getLogger(__name__)

TERMINAL = frozenset({pb.STOPPED, pb.LOGGED_OUT, pb.FAILED})
LINKED = frozenset({pb.AUTHENTICATED, pb.READY})
MAX_CRASH_RESTARTS = 3
BROWSER_WAIT = 60.0  # how long a session waits for a relaunched Chromium


class _Outcome(enum.Enum):
    DONE = "done"
    RESTART = "restart"


@dataclass
class SessionInfo:
    """What survives the session's browser: identity, state and the seq of its last event."""

    tenant: str
    session_id: str
    auth_strategy: int
    labels: dict[str, str] = field(default_factory=dict)
    state: int = pb.STARTING
    phone: str = ""
    last_error: str = ""
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    ready_at: float = 0.0
    last_seq: int = 0
    resume: bool = True  # bring it back when the node starts again


class HostedSession:
    """Runs one session's browser context; every change is an event in `log`.

    With `claim` (RemoteAuth), the runner first awaits `claim(session)`, which takes the
    session's lease and adopts the previous owner's events, before it allocates any seq; the
    log is gated so watchers only see events once they are durable."""

    def __init__(
        self,
        info: SessionInfo,
        *,
        settings: NodeSettings,
        pool: BrowserPool,
        store: SnapshotStore,
        on_change: Callable[[HostedSession], None],
        claim: Callable[[HostedSession], Awaitable[None]] | None = None,
    ) -> None:
        self.info = info
        self.log = EventLog(
            info.session_id,
            last_seq=info.last_seq,
            size=settings.event_log_size,
            gated=claim is not None,
        )
        self._claim = claim
        self._settings = settings
        self._pool = pool
        self._store = store
        self._on_change = on_change
        self._context: BrowserContext | None = None
        self._page: wa.WhatsAppPage | None = None
        self._task: asyncio.Task[None] | None = None
        self._snapshot_task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Future[None]] = set()  # store writes, never cut off half-way
        self._restored = False
        self._qr_attempt = 0
        self._last_ref = ""
        self._phases = telemetry.Phases(info)  # the QR timeline as spans

    # -- public --------------------------------------------------------------------------

    @property
    def key(self) -> tuple[str, str]:
        return (self.info.tenant, self.info.session_id)

    @property
    def state(self) -> int:
        return self.info.state

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def to_proto(self, node_id: str) -> pb.Session:
        i = self.info
        return pb.Session(
            session_id=i.session_id,
            state=i.state,  # type: ignore[arg-type]
            node_id=node_id,
            auth_strategy=i.auth_strategy,  # type: ignore[arg-type]
            phone=i.phone,
            created_at=timestamp(i.created_at),
            updated_at=timestamp(i.updated_at),
            ready_at=timestamp(i.ready_at) if i.ready_at else None,
            last_error=i.last_error,
            labels=i.labels,
            last_seq=self.log.visible_seq,
        )

    async def finished(self) -> None:
        """Wait until the runner (if any) has ended and closed its browser context."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait([task])

    def start(self) -> asyncio.Task[None]:
        """Start (or restart) the session's runner; the caller keeps the task."""
        assert not self.running
        self.info.resume = True
        if self._claim is None:
            self._set_state(pb.STARTING)
        else:  # the STARTING event waits for the lease and the previous owner's events
            self.log.reopen()
            self.info.state, self.info.last_error = pb.STARTING, ""
            self.info.updated_at = time.time()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"session {self.info.tenant}/{self.info.session_id}"
        )
        return self._task

    async def stop(self, reason: str, *, resume: bool = False) -> None:
        """Stop the browser and keep the login (a final snapshot if linked)."""
        self.info.resume = resume
        await self._halt(save=True)
        if self.info.state not in TERMINAL:
            self._set_state(pb.STOPPED, reason)
        else:
            self._on_change(self)

    async def close(self, reason: str) -> None:
        """Close at once, keeping the login and writing nothing (another node owns it now)."""
        self.info.resume = False
        await self._halt(save=False)
        if self.info.state not in TERMINAL:
            self._set_state(pb.STOPPED, reason)

    async def _delete_login(self) -> None:
        """Delete the saved login once no write of it is still under way."""
        await asyncio.gather(*self._writes, return_exceptions=True)
        await self._store.delete(self.info.tenant, self.info.session_id)

    async def logout(self) -> None:
        """Unlink the device, delete the login and close the browser."""
        self.info.resume = False
        if self._page is not None and self.info.state in LINKED:
            try:
                await asyncio.wait_for(self._page.logout(), timeout=10)
            except (TimeoutError, PlaywrightError, PageError) as e:
                log.warning(
                    "%s: logout in the page failed (%s); deleting the login anyway",
                    self.info.session_id,
                    e,
                )
        await self._halt(save=False)
        await self._delete_login()
        if self.info.state != pb.LOGGED_OUT:  # the page may have reported it first
            self._set_state(pb.LOGGED_OUT, "logged out on request")

    async def save_snapshot(self, *, strict: bool = False) -> bool:
        """Write the login to the store; False if there was nothing to save or it failed
        (with `strict`, a failed write raises instead)."""
        context = self._context
        if context is None or self.info.state not in LINKED:
            return False
        with self._phases.phase("snapshot save") as span:
            try:
                state = await context.storage_state(indexed_db=True)
                write = asyncio.ensure_future(
                    self._store.save(self.info.tenant, self.info.session_id, dict(state))
                )
                self._writes.add(write)
                write.add_done_callback(self._writes.discard)
                # A cancelled caller must not leave a write behind that lands after a delete.
                await asyncio.shield(write)
            except Exception as e:
                log.warning("%s: snapshot not saved: %s", self.info.session_id, e)
                telemetry.failed(span, e)
                if strict:
                    raise
                return False
        return True

    # -- the runner ----------------------------------------------------------------------

    async def _run(self) -> None:
        if self._claim is not None:
            try:
                await self._claim(self)
            except NodeError as e:
                self._fail(str(e))
                return
            self._set_state(pb.STARTING)
        restarts = 0
        while True:
            outcome = await self._run_once()
            if outcome is _Outcome.DONE:
                return
            restarts += 1
            if restarts > MAX_CRASH_RESTARTS:
                self._set_state(
                    pb.FAILED, f"browser crash: gave up after {MAX_CRASH_RESTARTS} restarts"
                )
                return
            self._set_state(pb.STARTING, "browser crash: restarting from the saved login")

    async def _run_once(self) -> _Outcome:
        queue: asyncio.Queue[wa.PageEvent] = asyncio.Queue()
        self._qr_attempt, self._last_ref = 0, ""
        if self.info.state != pb.STARTING:
            self._set_state(pb.STARTING)
        try:
            self._phases.begin("auth restore")  # ends here, or at READY when restoring
            try:
                snapshot = await self._store.load(self.info.tenant, self.info.session_id)
            except (NodeError, SnapshotError) as e:
                self._fail(f"the saved login could not be loaded: {e}")
                return _Outcome.DONE
            self._restored = snapshot is not None
            if not self._restored:
                self._phases.end("auth restore", restored=False)
            with self._phases.phase("browser context"):
                context, page = await self._open_page(snapshot)
            self._context = context
            page.on("crash", lambda _p: queue.put_nowait(wa.PageEvent("crash", None)))
            page.on("close", lambda _p: queue.put_nowait(wa.PageEvent("closed", None)))
            self._page = wa.WhatsAppPage(page, queue.put_nowait)
            with self._phases.phase("page load"):
                await self._page.open(self._settings.wa_url, timeout=self._settings.auth_timeout)
            if not self._restored:
                self._phases.begin("qr wait")  # ends at the first QR (handled after this)
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=self._stall_timeout())
                except TimeoutError:
                    self._fail(self._stall_reason())
                    return _Outcome.DONE
                if event.kind in ("crash", "closed"):
                    return self._crashed(event.kind)
                if await self._handle(event):
                    return _Outcome.DONE
        except PageError as e:
            if not self._browser_alive():
                return self._crashed("closed")
            self._fail(f"page error: {e}")
            return _Outcome.DONE
        except (PlaywrightError, BrowserClosed) as e:
            if not self._browser_alive():
                return self._crashed("closed")
            self._fail(f"page error: {str(e).splitlines()[0][:200]}")
            return _Outcome.DONE
        finally:
            failed = self.info.state == pb.FAILED
            self._phases.close(error=self.info.last_error if failed else "")
            await self._close_context()

    async def _open_page(self, snapshot: dict[str, object] | None) -> tuple[BrowserContext, Page]:
        deadline = time.monotonic() + BROWSER_WAIT
        delay = 0.2
        while True:
            try:
                return await self._pool.open_page(snapshot)
            except BrowserClosed:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _browser_alive(self) -> bool:
        try:
            return self._pool.browser.is_connected()
        except BrowserClosed:
            return False

    def _crashed(self, kind: str) -> _Outcome:
        log.warning(
            "%s: %s", self.info.session_id, "page crashed" if kind == "crash" else "browser gone"
        )
        return _Outcome.RESTART

    def _stall_timeout(self) -> float | None:
        s = self._settings
        if self.info.state == pb.STARTING:
            return s.auth_timeout
        if self.info.state == pb.AUTHENTICATED:
            return s.auth_timeout * 4
        return None

    def _stall_reason(self) -> str:
        if self.info.state == pb.STARTING:
            return f"page error: no QR and no login within {self._settings.auth_timeout:.0f}s"
        return f"page error: linked but not ready within {self._settings.auth_timeout * 4:.0f}s"

    async def _handle(self, event: wa.PageEvent) -> bool:
        """Apply one page event; True when the session has ended."""
        if event.kind == "state":
            return await self._on_socket_state(str(event.value))
        if event.kind == "qr":
            return await self._on_qr(event.value)
        if event.kind == "progress":
            percent = max(0, min(100, int(event.value or 0)))
            self.log.append(loading=pb.Loading(percent=percent))
            self._changed()
            return False
        if event.kind == "synced" and event.value and self.info.state == pb.AUTHENTICATED:
            self.info.ready_at = time.time()
            self._set_state(pb.READY)
            self._phases.end("auth restore", restored=True)
            await self.save_snapshot()
            self._start_snapshot_loop()
        return False

    async def _on_socket_state(self, state: str) -> bool:
        current = self.info.state
        if state == wa.CONNECTED and current in (pb.STARTING, pb.SCAN_QR_CODE):
            assert self._page is not None
            self.info.phone = await self._page.phone() or self.info.phone
            self._set_state(pb.AUTHENTICATED)
            await self.save_snapshot()
            return False
        if state == wa.UNPAIRED:
            if current in LINKED:
                await self._close_snapshot_loop()
                await self._delete_login()
                self.info.resume = False
                self._set_state(pb.LOGGED_OUT, "logged out from the phone")
                return True
            if self._restored and current == pb.STARTING:
                self._restored = False
                await self._delete_login()
                self.info.last_error = "the saved login was rejected; a new QR scan is needed"
                self._phases.end("auth restore", error="the saved login was rejected")
                self._phases.begin("qr wait")
            return False
        if state == wa.UNPAIRED_IDLE:
            self._fail(f"QR attempts exhausted: {self._qr_attempt} QR codes shown, none scanned")
            return True
        if state == wa.CONFLICT:
            self._fail("conflict: the account was opened in another browser; the login is kept")
            return True
        return False

    async def _on_qr(self, value: object) -> bool:
        if not isinstance(value, dict) or not value.get("ref"):
            return False
        ref = str(value["ref"])
        if ref == self._last_ref:
            return False
        assert self._page is not None
        code = await self._page.qr_payload(ref, value.get("code"))
        self._last_ref = ref
        self._qr_attempt += 1
        limit = self._settings.qr_max_retries
        if limit and self._qr_attempt > limit:
            self._fail(f"QR attempts exhausted: QR_MAX_RETRIES={limit} reached")
            return True
        if self.info.state != pb.SCAN_QR_CODE:
            self._set_state(pb.SCAN_QR_CODE)
        s = self._settings
        lifetime = s.qr_first_timeout if self._qr_attempt == 1 else s.qr_timeout
        self._phases.end("qr wait", attempts=self._qr_attempt)
        self.log.append(
            qr=pb.QrCode(
                code=code, attempt=self._qr_attempt, expires_at=timestamp(time.time() + lifetime)
            )
        )
        self._changed()
        return False

    # -- helpers -------------------------------------------------------------------------

    def _set_state(self, state: int, reason: str = "") -> None:
        self.info.state = state
        if state == pb.FAILED or (reason and state in TERMINAL):
            self.info.last_error = reason
        elif state in (pb.READY,):
            self.info.last_error = ""
        self.log.append(state=pb.StateChange(state=state, reason=reason))  # type: ignore[arg-type]
        self._changed()

    def _fail(self, reason: str) -> None:
        log.warning("%s/%s failed: %s", self.info.tenant, self.info.session_id, reason)
        self._set_state(pb.FAILED, reason)

    def _changed(self) -> None:
        self.info.updated_at = time.time()
        self.info.last_seq = self.log.last_seq
        self._on_change(self)

    def _start_snapshot_loop(self) -> None:
        if self._snapshot_task is None or self._snapshot_task.done():
            self._snapshot_task = asyncio.get_running_loop().create_task(self._snapshot_loop())

    async def _snapshot_loop(self) -> None:
        with telemetry.detached():  # periodic saves start traces of their own
            while self.info.state == pb.READY:
                await asyncio.sleep(self._settings.snapshot_interval)
                await self.save_snapshot()

    async def _halt(self, *, save: bool) -> None:
        """Stop the runner: final snapshot first (shielded), then cancel and close."""
        if save and self.info.state in LINKED:
            await asyncio.shield(self.save_snapshot())
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_context()

    async def _close_snapshot_loop(self) -> None:
        snap, self._snapshot_task = self._snapshot_task, None
        if snap is not None:
            snap.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await snap

    async def _close_context(self) -> None:
        await self._close_snapshot_loop()
        context, self._context, self._page = self._context, None, None
        if context is not None:
            with contextlib.suppress(Exception):
                await context.close()
