"""A session's events as server-sent events: one WatchSession stream per HTTP stream.

Each event's `id` is its seq, `event` its type and `data` its JSON. A client that reconnects
with `Last-Event-ID` resumes after that seq with no gap: the router's WatchSession replays what
it missed, and follows the session across node restarts and failovers. Comment lines go out
when the stream is idle, so proxies do not close it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import grpc
import grpc.aio

from gateway import models
from gateway.deps import Mesh
from gateway.errors import BadRequest, Upstream, problem_for
from sessionmesh.v1 import common_pb2, mesh_pb2

RETRY_MS = 2000  # how long EventSource clients wait before reconnecting


def resume_point(last_event_id: str | None, after_seq: int | None) -> int:
    """The seq to resume after: `Last-Event-ID` (what EventSource sends on reconnect) wins
    over the `after_seq` query parameter."""
    if last_event_id is not None and last_event_id.strip() != "":
        value = last_event_id.strip()
        if not value.isascii() or not value.isdigit() or len(value) > 19:
            raise BadRequest(
                "Last-Event-ID: must be the id of an event of this stream (a seq)",
                field="Last-Event-ID",
            )
        return int(value)
    return after_seq or 0


def frame(event: common_pb2.SessionEvent) -> bytes:
    data = models.event(event)
    return f"id: {event.seq}\nevent: {data.type}\ndata: {data.model_dump_json(exclude_none=True)}\n\n".encode()


def error_frame(exc: BaseException) -> bytes:
    problem = problem_for(exc)
    return f"event: error\ndata: {json.dumps(problem.body)}\n\n".encode()


async def check_resume(mesh: Mesh, session_id: str, after: int, *, follow: bool) -> int | None:
    """The session's last seq now, or None while its node cannot be reached (a failover in
    progress): a following stream then opens anyway and WatchSession waits for the session,
    as the gRPC stream does. Other errors (unknown session, bad token, a seq from the future)
    become HTTP errors here, before the stream starts."""
    try:
        current: common_pb2.Session = await mesh.call(
            "GetSession", mesh_pb2.GetSessionRequest(session_id=session_id)
        )
    except Upstream as e:
        if follow and e.grpc_code == grpc.StatusCode.UNAVAILABLE:
            return None
        raise
    if after > current.last_seq:
        raise BadRequest(
            f"Last-Event-ID: seq {after} is beyond the session's last event ({current.last_seq})",
            field="Last-Event-ID",
        )
    last: int = current.last_seq
    return last


async def stream(
    mesh: Mesh,
    session_id: str,
    after: int,
    *,
    heartbeat: float,
    until: int | None = None,
    deadline: float | None = None,
) -> AsyncIterator[bytes]:
    """The SSE body. With `until`, it ends after that seq (or at `deadline` seconds);
    otherwise it runs until the client leaves, the router ends it, or the gateway stops."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    if until is not None and until <= after:
        return
    call = mesh.router.watch(session_id, after, mesh.token)
    reader: asyncio.Task[object] | None = None
    ends_at = None if deadline is None else time.monotonic() + deadline
    try:
        while True:
            if reader is None:
                reader = asyncio.ensure_future(call.read())
            wait = heartbeat
            if ends_at is not None:
                wait = min(wait, ends_at - time.monotonic())
                if wait <= 0:
                    return
            done, _ = await asyncio.wait({reader}, timeout=wait)
            if not done:
                yield b": keepalive\n\n"
                continue
            if reader.cancelled():
                return  # the gateway is stopping: it cancelled the call
            item = reader.result()
            reader = None
            if item is grpc.aio.EOF or not isinstance(item, common_pb2.SessionEvent):
                return  # the router ended the stream (it is stopping): the client reconnects
            yield frame(item)
            if until is not None and item.seq >= until:
                return
    except grpc.aio.AioRpcError as e:
        if e.code() != grpc.StatusCode.CANCELLED:
            yield error_frame(Upstream(e.code(), e.details() or ""))
    finally:
        call.cancel()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
