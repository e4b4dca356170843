"""Only a mesh's routers may call its nodes: mutual TLS off loopback, a shared secret on
loopback, no reflection, and a node that will not listen off loopback without them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from node.settings import NodeSettings
from sessionmesh.certs import Authority
from sessionmesh.config import ConfigError
from sessionmesh.tls import SECRET_HEADER, TransportSecurity
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2, node_pb2, node_pb2_grpc

pytestmark = pytest.mark.browser

SECRET = "a-dev-secret-0123456789"


def security(ca: Authority, name: str, role: str = "node") -> TransportSecurity:
    return TransportSecurity.from_env(ca.mtls_env(ca.issue(name, role=role)))


async def list_sessions(channel: grpc.aio.Channel, **kwargs: Any) -> Any:
    stub = node_pb2_grpc.SessionNodeStub(channel)
    return await stub.ListSessions(node_pb2.NodeListSessionsRequest(), timeout=5, **kwargs)


async def start(channel: grpc.aio.Channel, **kwargs: Any) -> Any:
    stub = node_pb2_grpc.SessionNodeStub(channel)
    request = node_pb2.StartSessionRequest(tenant="globex", session_id="planted")
    return await stub.StartSession(request, timeout=5, **kwargs)


async def test_a_node_with_mtls_refuses_callers_without_a_mesh_certificate(
    tmp_path: Path, sandbox: Any, node_factory: Any, router_factory: Any, clients: Any
) -> None:
    ca = Authority(tmp_path / "ca")
    node = await node_factory(sandbox.url, security=security(ca, "node-1"))
    # No TLS at all, TLS without a client certificate, a certificate from another CA: refused.
    other = Authority(tmp_path / "other")
    stranger = other.issue("stranger")
    attempts = {
        "plaintext": grpc.aio.insecure_channel(node.address),
        "no client certificate": grpc.aio.secure_channel(
            node.address, grpc.ssl_channel_credentials(ca.ca.read_bytes())
        ),
        "another CA's certificate": grpc.aio.secure_channel(
            node.address,
            grpc.ssl_channel_credentials(
                ca.ca.read_bytes(), stranger.key.read_bytes(), stranger.cert.read_bytes()
            ),
        ),
    }
    for what, channel in attempts.items():
        async with channel:
            for call in (list_sessions, start):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(channel)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE, what
    assert node.host.all() == []
    # A router holding a mesh certificate reaches it.
    router = await router_factory([node.address], security=security(ca, "router-1", "router"))
    api = clients(router.address)
    status = await api.GetClusterStatus(mesh_pb2.GetClusterStatusRequest())
    assert [n.health for n in status.nodes] == [pb.SERVING]


async def test_a_loopback_node_with_a_secret_refuses_calls_without_it(
    sandbox: Any, node_factory: Any, router_factory: Any, clients: Any
) -> None:
    node = await node_factory(sandbox.url, security=TransportSecurity(node_secret=SECRET))
    async with grpc.aio.insecure_channel(node.address) as channel:
        for metadata in ((), ((SECRET_HEADER, "wrong-secret-0123456789"),)):
            for call in (list_sessions, start):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(channel, metadata=metadata)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (await list_sessions(channel, metadata=((SECRET_HEADER, SECRET),))).sessions == []
    assert node.host.all() == []
    router = await router_factory([node.address], security=TransportSecurity(node_secret=SECRET))
    status = await clients(router.address).GetClusterStatus(mesh_pb2.GetClusterStatusRequest())
    assert [n.health for n in status.nodes] == [pb.SERVING]


async def test_a_node_serves_no_reflection(sandbox: Any, node_factory: Any) -> None:
    node = await node_factory(sandbox.url)
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_node_certificate_cannot_call_another_node(
    tmp_path: Path, sandbox: Any, node_factory: Any
) -> None:
    """Both certificates come from the mesh's CA, so the transport lets the call through; the
    node refuses it because the caller's certificate is not a router's. Health stays open."""
    ca = Authority(tmp_path / "ca")
    node = await node_factory(sandbox.url, security=security(ca, "node-1"))
    peer = ca.issue("node-2", role="node")
    credentials = grpc.ssl_channel_credentials(
        ca.ca.read_bytes(), peer.key.read_bytes(), peer.cert.read_bytes()
    )
    async with grpc.aio.secure_channel(node.address, credentials) as channel:
        for call in (list_sessions, start):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(channel)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "routers only" in (err.value.details() or "")
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert node.host.all() == []
    # A PKI that names routers by DNS name or CN instead: MESH_MTLS_ROUTER_ID says which.
    named = TransportSecurity.from_env(
        {**ca.mtls_env(ca.issue("node-3")), "MESH_MTLS_ROUTER_ID": "mesh-router"}
    )
    assert named.caller_is_router({"x509_common_name": [b"mesh-router"]})
    assert not named.caller_is_router({"x509_common_name": [b"mesh-node"]})


def test_a_node_off_loopback_refuses_to_start_without_mtls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MESH_MTLS_CERT"):
        NodeSettings.from_env({"MESH_NODE_LISTEN": "0.0.0.0:50061"})
    with pytest.raises(ConfigError, match="loopback development only"):
        NodeSettings.from_env({"MESH_NODE_LISTEN": "10.1.2.3:50061", "MESH_NODE_SECRET": SECRET})
    ca = Authority(tmp_path / "ca")
    env = {"MESH_NODE_LISTEN": "0.0.0.0:50061", **ca.mtls_env(ca.issue("node-1"))}
    assert NodeSettings.from_env(env).security.mutual is not None
    with pytest.raises(ConfigError, match="MESH_MTLS_CA"):
        NodeSettings.from_env({k: v for k, v in env.items() if k != "MESH_MTLS_CA"})
    with pytest.raises(ConfigError, match="MESH_MTLS_KEY"):
        NodeSettings.from_env({k: v for k, v in env.items() if k != "MESH_MTLS_KEY"})
    assert "KEY" not in repr(NodeSettings.from_env(env).security)


@pytest.mark.parametrize(
    "escape",
    [
        {"MESH_ALLOW_INSECURE": "true"},
        {"MESH_ALLOW_INSECURE": "true", "MESH_NODE_SECRET": SECRET},
    ],
    ids=["insecure flag", "insecure flag and secret"],
)
@pytest.mark.parametrize("listen", ["0.0.0.0:50061", "10.1.2.3:50061", "node-1:50061"])
def test_no_flag_lets_a_node_off_loopback_start_without_mtls(
    listen: str, escape: dict[str, str]
) -> None:
    """MESH_ALLOW_INSECURE is the router's public API's flag only: a node off loopback has mTLS
    or does not start, and says which variables to set."""
    with pytest.raises(ConfigError, match="MESH_MTLS_CERT") as err:
        NodeSettings.from_env({"MESH_NODE_LISTEN": listen, **escape})
    assert listen in str(err.value)
    # Loopback development stays open, with or without the secret.
    assert NodeSettings.from_env({"MESH_NODE_LISTEN": "127.0.0.1:50061", **escape})


async def test_the_health_port_answers_probes_in_clear_and_serves_nothing_else(
    tmp_path: Path, sandbox: Any, node_factory: Any
) -> None:
    """MESH_HEALTH_LISTEN: a probe without TLS (Kubernetes') reads the node's health there; the
    node's API stays behind mutual TLS on its own port."""
    ca = Authority(tmp_path / "ca")
    node_env = {**ca.mtls_env(ca.issue("node-1")), "MESH_HEALTH_LISTEN": "127.0.0.1:0"}
    node = await node_factory(sandbox.url, security=TransportSecurity.from_env(node_env))
    assert node.health_address and node.health_address != node.address
    async with grpc.aio.insecure_channel(node.health_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        for call in (list_sessions, start):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(channel, metadata=((SECRET_HEADER, SECRET),))
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    async with grpc.aio.insecure_channel(node.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await list_sessions(channel)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert node.host.all() == []
    # A drain turns the probe's answer NOT_SERVING too: one servicer behind both ports.
    await node.set_not_serving()
    async with grpc.aio.insecure_channel(node.health_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
