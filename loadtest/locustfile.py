"""Locust users for the load test: one user is one WhatsApp account on the mesh.

A user creates a RemoteAuth session through a router, waits for the first QR on WatchSession,
has the sandbox's phone scan it (a simulated node links by itself), and waits for READY. Then,
at `LOADTEST_SEND_INTERVAL` seconds per account, it sends a message (SendMessage), now and then
gets one from the phone, sometimes stops and restores its session, and rarely logs out (then
links again under a new id). Unary calls go through a gRPC interceptor that fires Locust's
request events, as in Locust's own gRPC example; the QR and READY latencies are Locust events
too ("session" type), and every lifecycle step is appended to `LOADTEST_EVENTS` (JSON lines) for
the report.

How many users run is set by `run.py` through the file `LOADTEST_CONTROL` ("<users> <rate>" or
"stop"), which the shape below reads every second.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
import requests
from locust import LoadTestShape, User, constant_pacing, events, task
from locust.env import Environment

from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2, mesh_pb2_grpc

grpc_gevent.init_gevent()

ROUTERS = [a for a in os.environ.get("LOADTEST_ROUTERS", "127.0.0.1:50051").split(",") if a]
TOKEN = os.environ.get("LOADTEST_TOKEN", "")
SANDBOX = os.environ.get("LOADTEST_SANDBOX", "http://127.0.0.1:8090/")
EVENTS = os.environ.get("LOADTEST_EVENTS", "")
CONTROL = os.environ.get("LOADTEST_CONTROL", "")
PREFIX = os.environ.get("LOADTEST_PREFIX", "lt")
SIM_PREFIX = os.environ.get("LOADTEST_SIM_PREFIX", "sim-")
SEND_INTERVAL = float(os.environ.get("LOADTEST_SEND_INTERVAL", "30"))
INBOUND_SHARE = float(os.environ.get("LOADTEST_INBOUND_SHARE", "0.3"))
STOP_SHARE = float(os.environ.get("LOADTEST_STOP_SHARE", "0.02"))
LOGOUT_SHARE = float(os.environ.get("LOADTEST_LOGOUT_SHARE", "0.005"))
LINK_TIMEOUT = float(os.environ.get("LOADTEST_LINK_TIMEOUT", "180"))
MD = (("authorization", f"Bearer {TOKEN}"),)
CREATE_TRIES = 3

_numbers = itertools.count(1)
_lock = threading.Lock()
_channels: dict[str, grpc.Channel] = {}


def _record(kind: str, sid: str, node: str, seconds: float | None = None, **extra: Any) -> None:
    """One lifecycle step, as a JSON line in LOADTEST_EVENTS (read by the report)."""
    if not EVENTS:
        return
    line = json.dumps(
        {"t": time.time(), "kind": kind, "sid": sid, "node": node, "s": seconds, **extra}
    )
    with _lock, open(EVENTS, "a") as f:
        f.write(line + "\n")


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Fires a Locust request event for every unary call (Locust's gRPC example)."""

    def __init__(self, environment: Environment) -> None:
        self.env = environment

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        response = None
        exception: Exception | None = None
        start = time.perf_counter()
        response_length = 0
        try:
            response = continuation(client_call_details, request)
            response_length = response.result().ByteSize()
        except grpc.RpcError as e:
            exception = e
        self.env.events.request.fire(  # type: ignore[no-untyped-call]
            request_type="grpc",
            name=client_call_details.method,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=response_length,
            response=response,
            context=None,
            exception=exception,
        )
        return response


def _channel(environment: Environment, address: str) -> grpc.Channel:
    """One channel per router for the whole process, with the interceptor."""
    with _lock:
        if address not in _channels:
            _channels[address] = grpc.intercept_channel(
                grpc.insecure_channel(address), LocustInterceptor(environment)
            )
        return _channels[address]


class LinkError(Exception):
    pass


class AccountUser(User):
    """One account: link, then send, receive, stop and restore, and now and then log out."""

    wait_time = constant_pacing(SEND_INTERVAL)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.number = next(_numbers)
        self.router = ROUTERS[self.number % len(ROUTERS)]
        self.stub = mesh_pb2_grpc.SessionMeshStub(_channel(environment, self.router))
        self.generation = 0
        self.sid = ""
        self.node = ""
        self.phone = f"62811{self.number:08d}"
        self.sent = 0

    # -- lifecycle ------------------------------------------------------------------------

    def _session_event(self, name: str, seconds: float, exc: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type="session",
            name=name,
            response_time=seconds * 1000,
            response_length=0,
            response=None,
            context=None,
            exception=exc,
        )

    def _wait(self, t0: float, *, expect_qr: bool, after_seq: int = 0) -> None:
        """Follow WatchSession until READY: on a QR, record its latency and have the phone scan
        it (a simulated node scans by itself)."""
        call = self.stub.WatchSession(
            mesh_pb2.WatchSessionRequest(session_id=self.sid, after_seq=after_seq),
            metadata=MD,
            timeout=LINK_TIMEOUT,
        )
        scanned = False
        try:
            for event in call:
                kind = event.WhichOneof("event")
                if kind == "qr" and not scanned:
                    first_qr = time.perf_counter() - t0
                    self._session_event("first_qr" if expect_qr else "qr_on_restore", first_qr)
                    _record("first_qr", self.sid, self.node, first_qr)
                    scanned = True
                    if not self.node.startswith(SIM_PREFIX):
                        self._scan(event.qr.code)
                elif kind == "state":
                    state = event.state.state
                    if state == pb.READY:
                        return
                    if state in (pb.FAILED, pb.LOGGED_OUT, pb.STOPPED):
                        raise LinkError(f"{pb.SessionState.Name(state)}: {event.state.reason}")
        except grpc.RpcError as e:
            raise LinkError(f"WatchSession: {e.code().name}: {e.details()}") from e
        finally:
            call.cancel()
        raise LinkError("WatchSession ended before READY")

    def _scan(self, code: str) -> None:
        t0 = time.perf_counter()
        exc: Exception | None = None
        try:
            r = requests.post(
                SANDBOX + "phone/scan", json={"code": code, "phone": self.phone}, timeout=30
            )
            if r.status_code != 200:
                exc = LinkError(f"scan answered {r.status_code}: {r.text[:200]}")
        except requests.RequestException as e:
            exc = e
        self._session_event("phone_scan", time.perf_counter() - t0, exc)
        if exc is not None:
            raise LinkError(str(exc))

    def _start(self, what: str) -> None:
        """CreateSession then wait for READY; `what` is "ready" (a new link) or "restore"."""
        t0 = time.perf_counter()
        try:
            session = self._create()
            self.node = session.node_id
            # From the reply's last event on: an earlier run's READY is history, not this one.
            self._wait(t0, expect_qr=what == "ready", after_seq=session.last_seq)
        except (LinkError, grpc.RpcError) as e:
            elapsed = time.perf_counter() - t0
            self._session_event(what, elapsed, e)
            _record(f"{what}_failed", self.sid, self.node, elapsed, error=str(e)[:300])
            return
        elapsed = time.perf_counter() - t0
        self._session_event(what, elapsed)
        _record(what, self.sid, self.node, elapsed)

    def _create(self) -> pb.Session:
        """CreateSession, tried again on UNAVAILABLE (a node briefly unreachable or moving), as
        the API asks of clients; every try is a request in Locust's stats."""
        for attempt in range(CREATE_TRIES):
            try:
                session: pb.Session = self.stub.CreateSession(
                    mesh_pb2.CreateSessionRequest(session_id=self.sid, auth_strategy=pb.REMOTE),
                    metadata=MD,
                    timeout=60,
                )
                return session
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == CREATE_TRIES - 1:
                    raise
                time.sleep(2.0 * (attempt + 1))
        raise AssertionError("unreachable")

    def _link_new(self) -> None:
        self.generation += 1
        self.sid = f"{PREFIX}-{self.number}-{self.generation}"
        _record("create", self.sid, "")
        self._start("ready")

    def on_start(self) -> None:
        self._link_new()

    # -- tasks ----------------------------------------------------------------------------

    @task
    def traffic(self) -> None:
        roll = random.random()
        if roll < LOGOUT_SHARE:
            self._logout()
        elif roll < LOGOUT_SHARE + STOP_SHARE:
            self._stop_restore()
        elif roll < LOGOUT_SHARE + STOP_SHARE + INBOUND_SHARE and not self.node.startswith(
            SIM_PREFIX
        ):
            self._inbound()
        else:
            self._send()

    def _send(self) -> None:
        self.sent += 1
        try:
            self.stub.SendMessage(
                mesh_pb2.SendMessageRequest(
                    session_id=self.sid,
                    to="6289900000001",
                    idempotency_key=f"{self.sid}-{self.sent}",
                    text=f"load test message {self.sent}",
                ),
                metadata=MD,
                timeout=30,
            )
        except grpc.RpcError:
            pass  # counted by the interceptor

    def _inbound(self) -> None:
        t0 = time.perf_counter()
        exc: Exception | None = None
        try:
            r = requests.post(
                SANDBOX + "phone/send",
                json={"phone": self.phone, "from": "6289900000002", "body": "inbound"},
                timeout=30,
            )
            if r.status_code != 200:
                exc = LinkError(f"phone/send answered {r.status_code}: {r.text[:200]}")
        except requests.RequestException as e:
            exc = e
        self._session_event("phone_send", time.perf_counter() - t0, exc)

    def _stop_restore(self) -> None:
        try:
            self.stub.StopSession(
                mesh_pb2.StopSessionRequest(session_id=self.sid), metadata=MD, timeout=60
            )
        except grpc.RpcError:
            return
        _record("stop", self.sid, self.node)
        self._start("restore")

    def _logout(self) -> None:
        try:
            self.stub.LogoutSession(
                mesh_pb2.LogoutSessionRequest(session_id=self.sid), metadata=MD, timeout=60
            )
        except grpc.RpcError:
            return
        _record("logout", self.sid, self.node)
        self._link_new()


class ControlledShape(LoadTestShape):
    """Users and spawn rate as `run.py` writes them in LOADTEST_CONTROL; "stop" ends the run."""

    def tick(self) -> tuple[int, float] | None:
        try:
            words = Path(CONTROL).read_text().split()
        except OSError:
            return (0, 1.0)
        if not words or words[0] == "stop":
            return None
        return (int(words[0]), float(words[1]) if len(words) > 1 else 1.0)


@events.test_stop.add_listener  # type: ignore[untyped-decorator]
def _closed(environment: Environment, **_: Any) -> None:
    _record("locust_stop", "", "")


__all__ = ["AccountUser", "ControlledShape"]
