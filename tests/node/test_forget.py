"""A node forgets its finished sessions after MESH_FINISHED_TTL, keeping their logins and seq."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio
import pytest

from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import node_pb2, node_pb2_grpc
from tests.helpers import wait_for

pytestmark = pytest.mark.browser


async def test_stopped_sessions_are_forgotten_and_start_again_without_reusing_a_seq(
    sandbox: Any, node_factory: Any, watchers: Any
) -> None:
    node = await node_factory(sandbox.url, finished_ttl=0.5)
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = node_pb2_grpc.SessionNodeStub(channel)
        key = {"tenant": "acme", "session_id": "s1"}
        await stub.StartSession(node_pb2.StartSessionRequest(**key))
        w = watchers(stub.WatchSession(node_pb2.NodeWatchRequest(**key)))
        await w.wait_qr()
        stopped = await stub.StopSession(node_pb2.NodeSessionRequest(**key))
        assert stopped.state == pb.STOPPED

        async def listed() -> int:
            reply = await stub.ListSessions(node_pb2.NodeListSessionsRequest())
            return len(reply.sessions)

        await wait_for(
            lambda: _zero(listed()), what="the stopped session to be forgotten", timeout=30
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetSession(node_pb2.NodeSessionRequest(**key))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        again = await stub.StartSession(node_pb2.StartSessionRequest(**key))
        assert again.last_seq > stopped.last_seq or again.state == pb.STARTING
        w2 = watchers(
            stub.WatchSession(node_pb2.NodeWatchRequest(**key, after_seq=stopped.last_seq))
        )
        await w2.wait(lambda x: len(x.events) >= 1, "the restarted session's first event")
        assert w2.events[0].seq == stopped.last_seq + 1


async def _zero(count: Any) -> bool:
    return await count == 0
