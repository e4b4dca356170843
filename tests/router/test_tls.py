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

from console.client import MeshClient
from console.errors import ConfigError as ConsoleConfigError
from console.settings import ConsoleSettings
from router.settings import RouterSettings
from sessionmesh import meshctl
from sessionmesh.certs import Authority
from sessionmesh.config import ConfigError
from sessionmesh.tls import TransportSecurity
from sessionmesh.v1 import mesh_pb2, mesh_pb2_grpc
from tests.conftest import TOKENS

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


def test_clients_send_no_token_in_clear_off_loopback() -> None:
    out = io.StringIO()
    code = meshctl.main(["--router", "10.0.0.9:50051", "--token", TOKENS["acme"], "list"], out)
    assert code == 2
    env = {"MESH_TOKEN": TOKENS["acme"], "MESH_ROUTER": "10.0.0.9:50051"}
    with pytest.raises(ConsoleConfigError, match="MESH_TLS_CA"):
        ConsoleSettings.from_env(env)
    assert ConsoleSettings.from_env({**env, "MESH_ALLOW_INSECURE": "true"}).allow_insecure
