"""Webhook fixtures: outbox stores on both backends (a private redis-server, a SQLite file),
HTTP receivers on loopback that record, verify and answer as a test tells them, dispatchers."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from node.crypto import SnapshotKeys
from sessionmesh.redis_conn import create_redis
from sessionmesh.v1 import common_pb2 as pb
from tests.redis_server import RedisServer, key_spec, random_prefix, settings_for
from webhooks.dispatcher import Dispatcher
from webhooks.envelope import event_name
from webhooks.model import Endpoint, new_webhook_id
from webhooks.publisher import Publisher
from webhooks.redis_store import RedisStore
from webhooks.registry import new_secret
from webhooks.sealing import Sealer
from webhooks.settings import LOOPBACK, RetryPolicy, WebhookSettings
from webhooks.sqlite_store import SqliteStore
from webhooks.store import WebhookStore

KEY = key_spec("wh1", 7)
FAST_RETRY = RetryPolicy(tries=6, first=0.05, cap=0.4, jitter=0.2)


def fast_settings(**overrides: Any) -> WebhookSettings:
    """Loopback allowed, quick retries, short polls (the outage itself stays real)."""
    base = WebhookSettings(
        keys=SnapshotKeys.parse(KEY),
        allow=LOOPBACK,
        retry=FAST_RETRY,
        timeout=5.0,
        poll_interval=0.02,
        concurrency=64,
    )
    return replace(base, **overrides)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with RedisServer() as server:
        yield server.url


@dataclass
class Backend:
    """Makes stores on one outbox (each process of a real mesh has its own)."""

    kind: str
    make: Callable[[], WebhookStore]
    env: dict[str, str] = field(default_factory=dict)  # the same outbox for a subprocess


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made: list[WebhookStore] = []
    settings = fast_settings()
    sealer = Sealer(settings.keys)
    if request.param == "sqlite":
        path = tmp_path / "webhooks.db"

        def make() -> WebhookStore:
            store = SqliteStore(
                path, sealer, claim_ttl=settings.claim_ttl, poll_interval=settings.poll_interval
            )
            made.append(store)
            return store

        yield Backend("sqlite", make, {"MESH_WEBHOOK_DB": str(path)})
    else:
        url = request.getfixturevalue("redis_url")
        prefix = random_prefix().split(":", 1)[0] + ":"

        def make() -> WebhookStore:
            client = create_redis(settings_for(url, cluster=False, timeout=3.0))
            store = RedisStore(client, sealer, prefix=prefix, claim_ttl=settings.claim_ttl)
            made.append(store)
            return store

        yield Backend("redis", make, {"REDIS_URL": url, "MESH_REDIS_PREFIX": prefix})
        cleaner = create_redis(settings_for(url, cluster=False))
        async for key in cleaner.scan_iter(match="{" + prefix + "*", count=500):
            await cleaner.delete(key)
        await cleaner.aclose()
    for store in made:
        await store.aclose()


@pytest.fixture
async def store(backend: Backend) -> WebhookStore:
    return backend.make()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0

    @property
    def json(self) -> Any:
        import json

        return json.loads(self.body)


class Receiver:
    """An HTTP receiver on 127.0.0.1. `answer(request_number) -> status` (default 200) says
    what to answer; `delay` holds each answer; `down()` and `up()` close and reopen the port."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answer: Callable[[int], int | tuple[int, dict[str, str]]] = lambda _n: 200
        self.delay = 0.0
        self.gate: asyncio.Event | None = None  # when set up, answers wait for it
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.arrived = asyncio.Event()
        self.in_flight = 0  # requests being answered now
        self.most_in_flight = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        n = len(self.received)
        got = Received(dict(request.headers), raw, time.time())
        self.received.append(got)
        self.arrived.set()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.in_flight -= 1
        answer = self.answer(n)
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        got.status = status
        return web.Response(status=status, text="ok" if status < 300 else "no", headers=headers)

    async def up(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        if not self.port:
            server = self._site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def ok(self) -> list[Received]:
        """Requests answered 2xx, in arrival order."""
        return [r for r in self.received if 200 <= r.status < 300]

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.received]


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[[], Awaitable[Receiver]]]:
    made: list[Receiver] = []

    async def make() -> Receiver:
        r = Receiver()
        made.append(r)
        return await r.up()

    yield make
    for r in made:
        await r.down()


@pytest.fixture
async def dispatchers() -> AsyncIterator[Callable[..., Awaitable[Dispatcher]]]:
    made: list[Dispatcher] = []

    async def make(store: WebhookStore, **overrides: Any) -> Dispatcher:
        from webhooks.guard import Guard
        from webhooks.registry import Registry

        settings = fast_settings(**overrides)
        registry = Registry(store, Guard(settings.allow))

        async def disable(tenant: str, webhook_id: str, reason: str) -> object:
            return await registry.change(tenant, webhook_id, enabled=False, disabled_reason=reason)

        d = Dispatcher(store, settings, disable=disable)
        await d.start()
        made.append(d)
        return d

    yield make
    for d in made:
        await d.aclose()


async def add_hook(
    store: WebhookStore,
    url: str,
    *,
    tenant: str = "acme",
    events: tuple[str, ...] = ("session.status", "qr", "message", "message.ack"),
    session_id: str = "",
    secret: str | None = None,
    created_at: float | None = None,
) -> Endpoint:
    endpoint = Endpoint(
        id=new_webhook_id(),
        tenant=tenant,
        url=url,
        events=events,
        session_id=session_id,
        secret=secret or new_secret(),
        created_at=created_at if created_at is not None else time.time() - 3600,
    )
    await store.add_hook(endpoint)
    return endpoint


class Events:
    """SessionEvents as a node's log makes them: seq 1, 2, 3 ... per session."""

    def __init__(self) -> None:
        self.seqs: dict[str, int] = {}

    def _next(self, session_id: str) -> pb.SessionEvent:
        self.seqs[session_id] = self.seqs.get(session_id, 0) + 1
        event = pb.SessionEvent(session_id=session_id, seq=self.seqs[session_id])
        event.time.GetCurrentTime()
        return event

    def state(self, session_id: str, state: int, reason: str = "") -> pb.SessionEvent:
        e = self._next(session_id)
        e.state.CopyFrom(pb.StateChange(state=state, reason=reason))  # type: ignore[arg-type]
        return e

    def qr(self, session_id: str, attempt: int = 1) -> pb.SessionEvent:
        e = self._next(session_id)
        e.qr.CopyFrom(pb.QrCode(code=f"ref{attempt},a,b,c,1", attempt=attempt))
        return e

    def message(self, session_id: str, msg_id: str, text: str) -> pb.SessionEvent:
        e = self._next(session_id)
        e.message.CopyFrom(
            pb.Message(
                id=msg_id,
                direction=pb.INBOUND,
                chat_id="6281234567890@c.us",
                sender="6281234567890@c.us",
                type=pb.TEXT,
                text=text,
            )
        )
        return e

    def ack(self, session_id: str, msg_id: str, ack: int) -> pb.SessionEvent:
        e = self._next(session_id)
        e.ack.CopyFrom(
            pb.MessageAck(message_id=msg_id, chat_id="6281234567890@c.us", ack=ack)  # type: ignore[arg-type]
        )
        return e


@pytest.fixture
def events() -> Events:
    return Events()


async def publish(store: WebhookStore, *items: pb.SessionEvent, tenant: str = "acme") -> int:
    assert all(event_name(e) for e in items)
    return await Publisher(store).publish([(tenant, e) for e in items])


async def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def process_env(backend: Backend, **extra: str) -> dict[str, str]:
    """The environment of a router or dispatcher process on this test's outbox."""
    return {
        **backend.env,
        "MESH_WEBHOOK_KEY": KEY,
        "MESH_WEBHOOK_ALLOW": "127.0.0.0/8,::1",
        "MESH_WEBHOOK_RETRY_FIRST": "0.1",
        "MESH_WEBHOOK_RETRY_MAX": "1",
        "MESH_WEBHOOK_RETRY_TRIES": "100",
        "MESH_WEBHOOK_TIMEOUT": "5",
        "MESH_WEBHOOK_POLL": "0.02",
        "MESH_OTEL_CONSOLE": "false",
        **extra,
    }


@dataclass
class Spawned:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    address: str = ""

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_output(self, text: str, timeout: float = 60.0) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.output()}")
            return text in self.output()

        await wait_for(seen, timeout, what=f"{self.name} to print {text!r}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture
def spawn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Spawned]]:
    """Real subprocesses, their output in files (printed when the test fails)."""
    made: list[Spawned] = []

    def make(name: str, argv: list[str], env: dict[str, str]) -> Spawned:
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        spawned = Spawned(name, proc, log)
        made.append(spawned)
        return spawned

    yield make
    failed = getattr(request.node, "rep_call", None)
    for s in made:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
            try:
                s.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()
        if failed is not None and failed.failed:
            print(f"--- {s.name} output ---\n{s.output()}")
