"""A node's WatchSession beyond the session's last event: OUT_OF_RANGE naming the last seq, once
the session knows its history (a takeover first adopts its previous owner's events)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest

from node.events import EventLog
from node.service import NodeService
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import node_pb2, node_pb2_grpc


class _Session:
    def __init__(self, log: EventLog) -> None:
        self.log = log


class _Host:
    def __init__(self, log: EventLog) -> None:
        self.session = _Session(log)

    def get(self, tenant: str, session_id: str) -> _Session:
        return self.session


@pytest.fixture
async def serve() -> Any:
    servers: list[grpc.aio.Server] = []
    channels: list[grpc.aio.Channel] = []

    async def make(log: EventLog) -> node_pb2_grpc.SessionNodeStub:
        server = grpc.aio.server()
        service = NodeService(_Host(log), address=lambda: "", serving=lambda: True)  # type: ignore[arg-type]
        node_pb2_grpc.add_SessionNodeServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return node_pb2_grpc.SessionNodeStub(channel)

    yield make
    for channel in channels:
        await channel.close()
    for server in servers:
        await server.stop(0)


async def first(call: Any) -> Any:
    async for event in call:
        return event
    return None


def watch(stub: Any, after: int) -> Any:
    return stub.WatchSession(
        node_pb2.NodeWatchRequest(tenant="acme", session_id="s1", after_seq=after)
    )


async def test_after_seq_beyond_the_end_names_the_last_seq(serve: Any) -> None:
    log = EventLog("s1")
    for _ in range(3):
        log.append(state=pb.StateChange(state=pb.STARTING))
    stub = await serve(log)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await first(watch(stub, 9))
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "seq 3" in (err.value.details() or "")
    assert (await first(watch(stub, 2))).seq == 3  # at or below the end: events as before


async def test_a_taking_over_session_answers_once_it_has_adopted_its_events(serve: Any) -> None:
    log = EventLog("s1", gated=True)
    stub = await serve(log)
    call = watch(stub, 4)
    reader = asyncio.ensure_future(first(call))
    await asyncio.sleep(0.2)
    assert not reader.done()  # it does not yet know where the log ends
    previous = [pb.SessionEvent(session_id="s1", seq=n) for n in range(1, 6)]
    log.adopt(previous)
    log.append(state=pb.StateChange(state=pb.STARTING))
    log.release(6)
    event = await asyncio.wait_for(reader, 10)
    assert event.seq == 5
