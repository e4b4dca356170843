"""Link a session through the router with the sandbox's phone, as a user scanning would.

A QR shown by the page can expire between the client seeing it and the phone scanning it (the
sandbox answers 410 then, as WhatsApp's servers refuse a stale ref); on a busy machine that
happens, so the phone scans the next QR the page shows, until one is accepted.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2

EXPIRED = 410


async def link(
    stub: Any,
    http: aiohttp.ClientSession,
    sandbox: str,
    sid: str,
    number: str,
    metadata: tuple[tuple[str, str], ...],
    *,
    strategy: int | None = None,
    create: bool = True,
) -> None:
    """CreateSession (unless `create` is false), scan its QR with `number`, wait for READY."""
    if create:
        request = mesh_pb2.CreateSessionRequest(session_id=sid)
        if strategy is not None:
            request.auth_strategy = strategy  # type: ignore[assignment]
        await stub.CreateSession(request, metadata=metadata)
    call = stub.WatchSession(mesh_pb2.WatchSessionRequest(session_id=sid), metadata=metadata)
    try:
        async for event in call:
            kind = event.WhichOneof("event")
            if kind == "qr":
                async with http.post(
                    f"{sandbox}phone/scan", json={"code": event.qr.code, "phone": number}
                ) as resp:
                    if resp.status not in (200, EXPIRED):
                        raise RuntimeError(
                            f"scan of {sid} answered {resp.status}: {await resp.text()}"
                        )
            elif kind == "state" and event.state.state == pb.READY:
                return
            elif kind == "state" and event.state.state == pb.FAILED:
                raise RuntimeError(f"{sid} failed: {event.state.reason}")
        raise RuntimeError(f"{sid}: stream ended before READY")
    finally:
        call.cancel()
