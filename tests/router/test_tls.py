"""TLS on the public API: the router serves it from MESH_TLS_CERT/KEY, meshctl and the console
verify it with MESH_TLS_CA, and nothing goes plaintext off loopback unless told to."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from console.client import MeshClient
from console.errors import ConfigError as ConsoleConfigError
from console.settings import ConsoleSettings
from router.nodes import NodeClient
from router.settings import RouterSettings
from sessionmesh import meshctl
from sessionmesh.certs import Authority
from sessionmesh.config import ConfigError
from sessionmesh.tls import TransportSecurity
from sessionmesh.v1 import mesh_pb2, mesh_pb2_grpc
from tests.conftest import TOKENS, router_settings

BASE = {"MESH_NODES": "127.0.0.1:50061", "MESH_API_TOKENS": f"acme:{TOKENS['acme']}"}


def public_tls(ca: Authority) -> TransportSecurity:
    issued = ca.issue("router")
    return TransportSecurity.from_env(
        {"MESH_TLS_CERT": str(issued.cert), "MESH_TLS_KEY": str(issued.key)}
    )


async def test_router_serves_tls_and_clients_verify_it(
    tmp_path: Path, fake_nodes: Any, router_factory: Any
) -> None:
    ca = Authority(tmp_path / "ca")
    node = await fake_nodes()
    router = await router_factory([node.address], security=public_tls(ca))
    metadata = (("authorization", f"Bearer {TOKENS['acme']}"),)
    request = mesh_pb2.ListSessionsRequest()
    credentials = grpc.ssl_channel_credentials(ca.ca.read_bytes())
    async with grpc.aio.secure_channel(router.address, credentials) as channel:
        stub = mesh_pb2_grpc.SessionMeshStub(channel)
        assert (await stub.ListSessions(request, metadata=metadata, timeout=10)).sessions == []
    async with grpc.aio.insecure_channel(router.address) as channel:
        stub = mesh_pb2_grpc.SessionMeshStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListSessions(request, metadata=metadata, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # A certificate from another CA is not trusted.
    other = Authority(tmp_path / "other")
    wrong = grpc.ssl_channel_credentials(other.ca.read_bytes())
    async with grpc.aio.secure_channel(router.address, wrong) as channel:
        stub = mesh_pb2_grpc.SessionMeshStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ListSessions(request, metadata=metadata, timeout=10)

    # meshctl verifies with --ca (or MESH_TLS_CA); without it, the TLS port does not answer.
    def ctl(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        args = ["--router", router.address, "--token", TOKENS["acme"], *argv]
        return meshctl.main(args, out), out.getvalue()

    code, out = await asyncio.to_thread(ctl, "--ca", str(ca.ca), "create", "s1")
    assert code == 0 and "s1" in out
    code, _ = await asyncio.to_thread(ctl, "--timeout", "3", "list")
    assert code == 1

    # The console too.
    console = MeshClient(
        ConsoleSettings(router=router.address, token=TOKENS["acme"], tls_ca=ca.ca.read_bytes())
    )
    try:
        sessions = await asyncio.to_thread(console.sessions)
    finally:
        console.close()
    assert [s.session_id for s in sessions] == ["s1"]


def test_a_router_off_loopback_without_tls_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MESH_TLS_CERT"):
        RouterSettings.from_env({**BASE, "MESH_ROUTER_LISTEN": "0.0.0.0:50051"})
    allowed = {**BASE, "MESH_ROUTER_LISTEN": "0.0.0.0:50051", "MESH_ALLOW_INSECURE": "true"}
    assert RouterSettings.from_env(allowed).security.allow_insecure
    ca = Authority(tmp_path / "ca")
    issued = ca.issue("router")
    env = {
        **BASE,
        "MESH_ROUTER_LISTEN": "0.0.0.0:50051",
        "MESH_TLS_CERT": str(issued.cert),
        "MESH_TLS_KEY": str(issued.key),
    }
    assert RouterSettings.from_env(env).security.public is not None
    # Nodes off loopback need mTLS from the router too.
    with pytest.raises(ConfigError, match="MESH_MTLS_CERT"):
        RouterSettings.from_env({**BASE, "MESH_NODES": "10.0.0.7:50061"})


def test_the_insecure_flag_never_lets_a_router_call_a_node_off_loopback_in_clear(
    tmp_path: Path,
) -> None:
    """MESH_ALLOW_INSECURE is for the public API; router-to-node calls off loopback are mTLS,
    with no flag to turn that off (not in MESH_NODES, not in a node's heartbeat)."""
    insecure = {**BASE, "MESH_NODES": "10.0.0.7:50061", "MESH_ALLOW_INSECURE": "true"}
    with pytest.raises(ConfigError, match="MESH_MTLS_CERT"):
        RouterSettings.from_env(insecure)
    security = TransportSecurity.from_env({"MESH_ALLOW_INSECURE": "true"})
    with pytest.raises(ConfigError, match="mutual TLS"):
        security.check_node_address("10.0.0.7:50061", "the heartbeat of node-1")
    security.check_node_address("127.0.0.1:50061")  # loopback development stays open
    # And the node client itself refuses, whatever path an address came by.
    loopback = router_settings(["127.0.0.1:50061"], security=security)
    with pytest.raises(ConfigError, match="mutual TLS"):
        NodeClient("10.0.0.7:50061", loopback, static=False, node_id="node-9")
    ca = Authority(tmp_path / "ca")
    mtls = {**insecure, **ca.mtls_env(ca.issue("router-1", role="router"))}
    assert RouterSettings.from_env(mtls).security.mutual is not None
    with pytest.raises(ConfigError, match="MESH_MTLS_NODE_NAME"):
        TransportSecurity.from_env({"MESH_MTLS_NODE_NAME": "mesh-node"})


async def test_a_router_checks_a_nodes_certificate_against_mesh_mtls_node_name(
    tmp_path: Path, fake_nodes: Any, router_factory: Any, clients: Any
) -> None:
    """Nodes that advertise an address no certificate names (a pod IP) carry one shared name;
    the router verifies that name, and without it refuses the node's certificate."""
    ca = Authority(tmp_path / "ca")
    node_cert = ca.issue("mesh-node", ["mesh-node"])
    node_security = TransportSecurity.from_env(ca.mtls_env(node_cert))
    node = await fake_nodes(credentials=node_security.node_server_credentials())
    router_env = ca.mtls_env(ca.issue("router-1", role="router"))
    named = TransportSecurity.from_env({**router_env, "MESH_MTLS_NODE_NAME": "mesh-node"})
    router = await router_factory([node.address], security=named)
    client = clients(router.address)
    created = await client.CreateSession(mesh_pb2.CreateSessionRequest(session_id="s1"))
    assert created.node_id == node.node_id and node.starts == [("acme", "s1")]

    unnamed = TransportSecurity.from_env(router_env)  # checks 127.0.0.1: not in the certificate
    router = await router_factory([node.address], security=unnamed)
    client = clients(router.address)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.CreateSession(mesh_pb2.CreateSessionRequest(session_id="s2"))
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert node.starts == [("acme", "s1")]


async def test_the_health_port_serves_health_in_clear_and_nothing_else(
    tmp_path: Path, fake_nodes: Any, router_factory: Any
) -> None:
    ca = Authority(tmp_path / "ca")
    issued = ca.issue("router")
    security = TransportSecurity.from_env(
        {
            "MESH_TLS_CERT": str(issued.cert),
            "MESH_TLS_KEY": str(issued.key),
            "MESH_HEALTH_LISTEN": "127.0.0.1:0",
        }
    )
    node = await fake_nodes()
    router = await router_factory([node.address], security=security)
    assert router.health_address and router.health_address != router.address
    async with grpc.aio.insecure_channel(router.health_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = mesh_pb2_grpc.SessionMeshStub(channel)
        metadata = (("authorization", f"Bearer {TOKENS['acme']}"),)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListSessions(mesh_pb2.ListSessionsRequest(), metadata=metadata, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            call = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
            )
            async for _ in call:
                pass
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(ConfigError, match="MESH_HEALTH_LISTEN"):
        TransportSecurity.from_env({"MESH_HEALTH_LISTEN": "nowhere"})


def test_clients_send_no_token_in_clear_off_loopback() -> None:
    out = io.StringIO()
    code = meshctl.main(["--router", "10.0.0.9:50051", "--token", TOKENS["acme"], "list"], out)
    assert code == 2
    env = {"MESH_TOKEN": TOKENS["acme"], "MESH_ROUTER": "10.0.0.9:50051"}
    with pytest.raises(ConsoleConfigError, match="MESH_TLS_CA"):
        ConsoleSettings.from_env(env)
    assert ConsoleSettings.from_env({**env, "MESH_ALLOW_INSECURE": "true"}).allow_insecure
