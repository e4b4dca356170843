"""One hosted WhatsApp Web session: its state machine, driven by what the page reports."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import BrowserContext, Page
from playwright.async_api import Error as PlaywrightError

from node import whatsapp as wa
from node.auth_store import SnapshotStore
from node.browser import BrowserClosed, BrowserPool, RestoreError
from node.crypto import SnapshotError
from node.errors import FailedPrecondition, NodeError, NodeUnavailable, PageError
from node.events import EventLog, timestamp
from node.keyring import KeyRing, RealmHooks
from node.sends import Closed, SendLog, SendQueue, SendRecord
from node.settings import NodeSettings
from node.warm import WarmPages
from sessionmesh import telemetry
from sessionmesh.aio import cancel_and_wait
from sessionmesh.sending import Send
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2

log = logging.getLogger(__name__)

TERMINAL = frozenset({pb.STOPPED, pb.LOGGED_OUT, pb.FAILED})
LINKED = frozenset({pb.AUTHENTICATED, pb.READY})
MAX_CRASH_RESTARTS = 3
SEEN_KEPT = 200  # message ids remembered per session (in its record) against duplicates
ACK_WAIT = 10.0  # seconds a send waits for WhatsApp's server to take the message
# Unchanged logins are not saved again, but every this many intervals they are anyway: writes
# the hooks cannot see (a service worker's) reach the store at least that often.
FULL_SAVE_EVERY = 10
BROWSER_WAIT = 60.0  # how long a session waits for a relaunched Chromium


def unabandoned(
    coro: Coroutine[Any, Any, None], tasks: set[asyncio.Future[None]]
) -> asyncio.Future[None]:
    """`coro` as a task kept in `tasks` until it ends, whose outcome is always read.

    A snapshot write runs on under `asyncio.shield` when its caller is cancelled; if it then
    failed (a lapsed lease: StaleFence), nobody awaited it and asyncio logged "Task exception
    was never retrieved" with a traceback. The failure itself is handled where it happens
    (`RemoteSession` marks the lease lost, keeps the snapshot for its writer)."""
    task = asyncio.ensure_future(coro)
    tasks.add(task)

    def done(t: asyncio.Future[None]) -> None:
        tasks.discard(t)
        if not t.cancelled() and (e := t.exception()) is not None:
            log.debug("a snapshot write ended with %r", e)

    task.add_done_callback(done)
    return task


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
    seen: list[str] = field(default_factory=list)  # newest message ids, so none is told twice


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
        sends: SendLog | None = None,
        warm: WarmPages | None = None,
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
        self._ring = KeyRing()  # the keys its pages made; snapshots carry the stored ones
        self._saved = False  # a good copy of this page's login is in the store
        self._unchanged_saves = 0
        self._hooks: RealmHooks | None = None
        self._progress_events: set[str] = set()  # loading events seen since the last scan
        self.canary = wa.Canary("", ())  # the WhatsApp Web build seen last, and missing hooks
        self._sends = sends
        self._warm = warm
        self._queue = SendQueue(settings.send_rate, settings.send_burst)
        self._seen: dict[str, None] = dict.fromkeys(info.seen)
        self._acks: dict[str, int] = {}  # last ack told, by message id
        self._ack_changed = asyncio.Condition()

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
        self._queue = SendQueue(self._settings.send_rate, self._settings.send_burst)
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
        """Write the login to the store once it is checked restorable; False if there was
        nothing to save, it would not restore (the last good copy stays) or the write failed
        (with `strict`, a failed write raises instead)."""
        page = self._page
        if page is None or self.info.state not in LINKED:
            return False
        changes = self._ring.take_changes()
        self._unchanged_saves = (self._unchanged_saves + 1) if not changes else 0
        if self._saved and not changes and self._unchanged_saves < FULL_SAVE_EVERY:
            return True  # nothing written since the last good copy: it is still this one
        with self._phases.phase("snapshot save") as span:
            try:
                state, refused = await page.snapshot(self._ring)
                if refused:
                    self._ring.changed |= changes
                    log.warning(
                        "%s: snapshot not saved, it would not restore: %s",
                        self.info.session_id,
                        refused,
                    )
                    telemetry.mesh_metrics().snapshot_refused()
                    telemetry.failed(span, refused)
                    return False
                write = unabandoned(
                    self._store.save(self.info.tenant, self.info.session_id, state), self._writes
                )
                # A cancelled caller must not leave a write behind that lands after a delete.
                await asyncio.shield(write)
                self._saved, self._unchanged_saves = True, 0
            except Exception as e:
                self._ring.changed |= changes
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
            self.adopted()
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
        self._saved, self._unchanged_saves = False, 0  # a new page: its first save is whole
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
            # A restored page's login is the stored copy: what it writes as it loads is saved
            # at the next interval (or at stop), not at once, when a failover's restores
            # share the node's cores.
            self._saved = self._restored
            if snapshot is not None:
                for material in snapshot.get("keys") or []:
                    self._ring.add(material)
            else:
                self._phases.end("auth restore", restored=False)
            warm = self._warm.take() if snapshot is None and self._warm is not None else None
            if warm is not None:  # WhatsApp Web loaded already, showing a fresh QR
                for material in self._ring.materials():
                    warm.ring.add(material)
                self._ring, self._hooks, self._page = warm.ring, warm.hooks, warm.driver
                self._context, page = warm.context, warm.page
                self._watch_page(page, queue)
                self._page.attach(queue.put_nowait)
                await self._page.tell_state()
            else:
                with self._phases.phase("browser context"):
                    try:
                        context, page = await self._open_page(snapshot)
                    except RestoreError as e:
                        self._fail(wa.restore_failed(str(e)))
                        return _Outcome.DONE
                self._context = context
                self._watch_page(page, queue)
                self._hooks = RealmHooks(page, self._ring)
                await self._hooks.install(context)
                self._page = wa.WhatsAppPage(page, queue.put_nowait)
                s = self._settings
                with self._phases.phase("page load"):
                    await self._page.open(
                        s.wa_url, navigation_timeout=s.navigation_timeout, timeout=s.auth_timeout
                    )
            await self._check_canary(wa.HOOKS_AT_LOAD)
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

    @staticmethod
    def _watch_page(page: Page, queue: asyncio.Queue[wa.PageEvent]) -> None:
        page.on("crash", lambda _p: queue.put_nowait(wa.PageEvent("crash", None)))
        page.on("close", lambda _p: queue.put_nowait(wa.PageEvent("closed", None)))

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
            value = event.value if isinstance(event.value, dict) else {"percent": event.value}
            self._progress_events.add(str(value.get("event", "")))
            percent = max(0, min(100, int(value.get("percent") or 0)))
            self.log.append(loading=pb.Loading(percent=percent))
            self._changed()
            return False
        if event.kind == "message" and isinstance(event.value, dict):
            await self._on_message(event.value)
            return False
        if event.kind == "ack" and isinstance(event.value, dict):
            await self._on_ack(event.value)
            return False
        if event.kind == "passkey":
            self._fail(wa.PASSKEY_REASON)
            return True
        if event.kind == "post_logout":
            return await self._logged_out_from_phone()
        if event.kind == "hook_error":
            self._fail(f"page error: WhatsApp Web's modules could not be hooked: {event.value}")
            return True
        if event.kind == "synced" and event.value and self.info.state == pb.AUTHENTICATED:
            self.info.ready_at = time.time()
            self._set_state(pb.READY)
            self._phases.end("auth restore", restored=True)
            # Once the account is loaded, what sending and receiving rely on is registered.
            await self._check_canary({**wa.HOOKS_FOR_MESSAGES, **wa.HOOKS_FOR_MEDIA})
            if not self._restored:
                self._check_progress_event()
                await self.save_snapshot()  # a restored login is in the store already
            self._start_snapshot_loop()
        return False

    # -- messages ------------------------------------------------------------------------

    def adopted(self) -> None:
        """After the previous owner's events were adopted: its messages count as told."""
        for event in self.log.since(0):
            if event.WhichOneof("event") == "message":
                self._remember(event.message.id)

    def _remember(self, message_id: str) -> bool:
        """True the first time a message id is told."""
        if message_id in self._seen:
            return False
        self._seen[message_id] = None
        while len(self._seen) > SEEN_KEPT:
            del self._seen[next(iter(self._seen))]
        self.info.seen = list(self._seen)
        return True

    async def _on_message(self, value: dict[str, Any]) -> None:
        message = wa.message_of(value)
        if not message.id or not self._remember(message.id):
            return
        self._acks[message.id] = message.ack
        self.log.append(message=message)
        self._changed()
        async with self._ack_changed:
            self._ack_changed.notify_all()

    async def _on_ack(self, value: dict[str, Any]) -> None:
        message_id, ack = str(value.get("id", "")), int(value.get("ack", 0))
        if not message_id or self._acks.get(message_id) == ack:
            return
        self._acks[message_id] = ack
        self.log.append(
            ack=pb.MessageAck(message_id=message_id, chat_id=str(value.get("chat", "")), ack=ack)  # type: ignore[arg-type]
        )
        self._changed()
        async with self._ack_changed:
            self._ack_changed.notify_all()

    async def send(
        self, send: Send, fetch: Callable[[Send], Awaitable[tuple[Send, bytes]]] | None = None
    ) -> mesh_pb2.SendMessageResponse:
        """Send in order at the session's rate; a key already sent answers its message.
        `fetch` gets a media file given by URL (only when there is something to send)."""
        if self.info.state != pb.READY:
            raise FailedPrecondition(
                f"session {self.info.session_id!r} is {pb.SessionState.Name(self.info.state)}, "
                "not READY: messages can be sent once it is linked and loaded"
            )
        if self._sends is None:
            raise NodeUnavailable("this session has no send log")
        record = await self._sends.get(send.key)
        if record is not None and record.digest != send.digest:
            raise FailedPrecondition(
                f"idempotency_key {send.key!r} was already used for a different message"
            )
        if record is not None and record.state == "sent":
            return mesh_pb2.SendMessageResponse(
                message_id=record.message_id,
                ack=record.ack,  # type: ignore[arg-type]
                duplicate=True,
            )
        media: bytes | None = None
        if send.media is not None and send.media.url and fetch is not None:
            send, media = await fetch(send)
        try:
            return await self._queue.run(lambda: self._send_now(send, media))  # type: ignore[no-any-return]
        except Closed as e:
            raise NodeUnavailable(
                f"session {self.info.session_id!r} is stopping or moving to another node; "
                "retry with the same idempotency_key"
            ) from e

    async def _send_now(self, send: Send, media: bytes | None) -> mesh_pb2.SendMessageResponse:
        page, sends = self._page, self._sends
        if page is None or sends is None or self.info.state != pb.READY:
            raise Closed("the session left READY")
        record = await sends.get(send.key)  # a pending one: its outcome was never known
        if record is None:
            key_id = await page.new_message_id()
            record = SendRecord(send.key, send.digest, "", "pending", at=time.time(), key_id=key_id)
            await sends.put(record)
        args: dict[str, Any] = {
            "to": send.chat_id,
            "text": send.text,
            "id": record.key_id,
            "replyTo": send.reply_to,
        }
        if send.media is not None:
            args["media"] = {
                "data": base64.b64encode(media if media is not None else send.media.data).decode(),
                "mimetype": send.media.mimetype,
                "filename": send.media.filename,
                "caption": send.media.caption,
                "kind": send.media.kind,
            }
        result = await page.send(args)
        message_id = str(result["id"])
        ack = await self._wait_ack(message_id, int(result.get("ack") or 0))
        record = SendRecord(
            send.key, send.digest, message_id, "sent", ack=ack, at=time.time(), key_id=record.key_id
        )
        await sends.put(record)
        return mesh_pb2.SendMessageResponse(
            message_id=message_id,
            ack=ack,  # type: ignore[arg-type]
            duplicate=bool(result.get("existed")),
        )

    async def _wait_ack(self, message_id: str, ack: int) -> int:
        """The ack once WhatsApp's server has the message (or gave up on it), else as it is
        after ACK_WAIT."""
        deadline = time.monotonic() + ACK_WAIT
        async with self._ack_changed:
            while True:
                ack = self._acks.get(message_id, ack)
                left = deadline - time.monotonic()
                if ack != 0 or left <= 0:
                    return ack
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ack_changed.wait(), left)

    async def media(self, message_id: str) -> dict[str, Any]:
        if self._page is None or self.info.state != pb.READY:
            raise FailedPrecondition(
                f"session {self.info.session_id!r} is "
                f"{pb.SessionState.Name(self.info.state)}, not READY"
            )
        return await self._page.media(message_id)

    async def _logged_out_from_phone(self) -> bool:
        await self._close_snapshot_loop()
        await self._delete_login()
        self.info.resume = False
        self._set_state(pb.LOGGED_OUT, "logged out from the phone")
        return True

    async def _check_canary(self, hooks: dict[str, str]) -> None:
        page = self._page
        if page is None:
            return
        try:
            found = await page.canary(hooks)
        except PlaywrightError:
            return
        missing = {m for m in self.canary.missing if m not in hooks} | set(found.missing)
        self.canary = wa.Canary(found.version or self.canary.version, tuple(sorted(missing)))
        if found.missing:
            log.warning(
                "%s: WhatsApp Web %s lacks hooks the node relies on: %s",
                self.info.session_id,
                found.version,
                ", ".join(found.missing),
            )

    def _check_progress_event(self) -> None:
        """After a scan, the loading screen reports progress; if only the old event name (or
        none) fired, the node's hook for the new one is broken."""
        if "offline_progress_update_from_bridge" in self._progress_events:
            missing = {m for m in self.canary.missing if m != wa.PROGRESS_EVENT}
        else:
            missing = {*self.canary.missing, wa.PROGRESS_EVENT}
            log.warning("%s: no %s event before READY", self.info.session_id, wa.PROGRESS_EVENT)
        self.canary = wa.Canary(self.canary.version, tuple(sorted(missing)))

    async def _on_socket_state(self, state: str) -> bool:
        current = self.info.state
        if state == wa.CONNECTED and current in (pb.STARTING, pb.SCAN_QR_CODE):
            assert self._page is not None
            self.info.phone = await self._page.phone() or self.info.phone
            self._set_state(pb.AUTHENTICATED)
            if not self._restored:
                await self.save_snapshot()
            return False
        if state == wa.UNPAIRED:
            if current in LINKED:
                return await self._logged_out_from_phone()
            if self._restored and current == pb.STARTING:
                return self._restore_failed()
            return False
        if state == wa.UNPAIRED_IDLE:
            self._fail(f"QR attempts exhausted: {self._qr_attempt} QR codes shown, none scanned")
            return True
        if state == wa.CONFLICT:
            self._fail("conflict: the account was opened in another browser; the login is kept")
            return True
        if state in wa.END_STATES:
            self._fail(wa.END_STATES[state])
            return True
        return False

    def _restore_failed(self) -> bool:
        """The page showed a QR instead of the saved account: keep the copy (the phone may
        still have the device linked), and say so rather than ask for a new scan."""
        self._phases.end("auth restore", error="the saved login was not accepted")
        self._fail(wa.restore_failed(wa.SHOWED_QR))
        return True

    async def _on_qr(self, value: object) -> bool:
        if not isinstance(value, dict) or not value.get("ref"):
            return False
        ref = str(value["ref"])
        if ref == self._last_ref:
            return False
        if self._restored and self.info.state == pb.STARTING:
            return self._restore_failed()
        assert self._page is not None
        code = await self._page.qr_payload(ref, value.get("code"))
        self._last_ref = ref
        self._qr_attempt += 1
        if self._qr_attempt == 1:
            self._progress_events.clear()
            await self._check_canary(wa.HOOKS_FOR_QR)
        limit = self._settings.qr_max_retries
        if limit and self._qr_attempt > limit:
            self._fail(f"QR attempts exhausted: QR_MAX_RETRIES={limit} reached")
            return True
        if self.info.state != pb.SCAN_QR_CODE:
            self._set_state(pb.SCAN_QR_CODE)
        s = self._settings
        # The ref's place in its series and when the page first showed it (a warm page may
        # have shown it before this session took the page).
        first = value.get("n", self._qr_attempt) == 1
        shown = float(value.get("at") or 0) / 1000 or time.time()
        lifetime = s.qr_first_timeout if first else s.qr_timeout
        self._phases.end("qr wait", attempts=self._qr_attempt)
        self.log.append(
            qr=pb.QrCode(
                code=code, attempt=self._qr_attempt, expires_at=timestamp(shown + lifetime)
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
        self._queue.close()
        if save and self.info.state in LINKED:
            await asyncio.shield(self.save_snapshot())
        task, self._task = self._task, None
        if task is not None and not task.done():
            await cancel_and_wait(task)  # a cancel of our caller still propagates
        await self._close_context()

    async def _close_snapshot_loop(self) -> None:
        snap, self._snapshot_task = self._snapshot_task, None
        await cancel_and_wait(snap)

    async def _close_context(self) -> None:
        await self._close_snapshot_loop()
        hooks, self._hooks = self._hooks, None
        if hooks is not None:
            await hooks.aclose()
        context, self._context, self._page = self._context, None, None
        if context is not None:
            with contextlib.suppress(Exception):
                await context.close()
