"""Gateway settings, TLS both ways, the one error mapping, and the enums in step with the proto."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from gateway import models
from gateway.errors import HTTP_STATUS, Upstream, problem_for
from gateway.settings import GatewaySettings
from sessionmesh.certs import Authority
from sessionmesh.config import ConfigError
from sessionmesh.tls import TransportSecurity
from tests.conftest import TOKENS
from tests.helpers import free_port


def test_defaults_and_names_of_bad_values(tmp_path: Path) -> None:
    s = GatewaySettings.from_env({})
    assert (s.listen, s.router, s.scheme) == ("127.0.0.1:8080", "127.0.0.1:50051", "http")
    bad: list[tuple[dict[str, str], str]] = [
        ({"MESH_GATEWAY_LISTEN": "nope"}, "MESH_GATEWAY_LISTEN"),
        ({"MESH_GATEWAY_LISTEN": "0.0.0.0:8080"}, "MESH_GATEWAY_TLS_CERT"),
        ({"MESH_ROUTER": "10.0.0.5:50051"}, "MESH_TLS_CA"),
        ({"MESH_GATEWAY_HEARTBEAT": "0"}, "MESH_GATEWAY_HEARTBEAT"),
        ({"MESH_GATEWAY_TIMEOUT": "soon"}, "MESH_GATEWAY_TIMEOUT"),
        ({"MESH_GATEWAY_MAX_BODY": "10"}, "MESH_GATEWAY_MAX_BODY"),
        ({"MESH_TLS_CA": str(tmp_path / "missing.pem")}, "MESH_TLS_CA"),
        ({"MESH_GATEWAY_TLS_CERT": str(tmp_path / "x")}, "MESH_GATEWAY_TLS_CERT"),
        ({"MESH_ALLOW_INSECURE": "maybe"}, "MESH_ALLOW_INSECURE"),
    ]
    for env, var in bad:
        with pytest.raises(ConfigError, match=var):
            GatewaySettings.from_env(env)
    # Off loopback without TLS only when told so.
    s = GatewaySettings.from_env(
        {
            "MESH_GATEWAY_LISTEN": "0.0.0.0:8080",
            "MESH_ROUTER": "10.0.0.5:1",
            "MESH_ALLOW_INSECURE": "true",
        }
    )
    assert s.allow_insecure
    ca = Authority(tmp_path / "ca")
    issued = ca.issue("gateway")
    s = GatewaySettings.from_env(
        {
            "MESH_GATEWAY_LISTEN": "0.0.0.0:8443",
            "MESH_GATEWAY_TLS_CERT": str(issued.cert),
            "MESH_GATEWAY_TLS_KEY": str(issued.key),
        }
    )
    assert s.scheme == "https" and "BEGIN" not in repr(s)
    with pytest.raises(ConfigError, match="MESH_GATEWAY_TLS_KEY"):
        GatewaySettings.from_env({"MESH_GATEWAY_TLS_CERT": str(issued.cert)})


def test_mesh_gateway_refuses_to_start_off_loopback_without_tls() -> None:
    gateway = Path(sys.executable).parent / "mesh-gateway"
    env = {**os.environ, "MESH_GATEWAY_LISTEN": "0.0.0.0:0"}
    env.pop("MESH_ALLOW_INSECURE", None)
    done = subprocess.run([str(gateway)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert "MESH_GATEWAY_LISTEN 0.0.0.0:0 is not a loopback address" in done.stderr


def test_every_grpc_status_maps_to_one_http_status_and_no_5xx_leaks_details() -> None:
    for code in grpc.StatusCode:
        if code is grpc.StatusCode.OK:
            continue
        assert code in HTTP_STATUS, code
    problem = problem_for(Upstream(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!"))
    assert problem.status == 501 and problem.body["code"] == "UNIMPLEMENTED"
    problem = problem_for(Upstream(grpc.StatusCode.UNKNOWN, "Exception calling application: x"))
    assert problem.status == 500 and "Exception" not in problem.body["detail"]
    problem = problem_for(RuntimeError("secret internals"))
    assert problem.status == 500 and "secret" not in str(problem.body)
    problem = problem_for(Upstream(grpc.StatusCode.INVALID_ARGUMENT, "media.url: must be http(s)"))
    assert problem.body["errors"] == [
        {"field": "media.url", "detail": "media.url: must be http(s)"}
    ]
    aliased = problem_for(
        Upstream(grpc.StatusCode.INVALID_ARGUMENT, "to: bad"), aliases={"to": "chatId"}
    )
    assert (
        aliased.body["errors"][0]["field"] == "chatId" and aliased.body["detail"] == "chatId: bad"
    )
    assert problem_for(Upstream(grpc.StatusCode.UNAVAILABLE, "x")).headers["Retry-After"] == "1"
    too_large = Upstream(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (2000000 vs. 1048576)"
    )
    assert (
        problem_for(too_large).status == 413 and "Retry-After" not in problem_for(too_large).headers
    )


def test_the_enums_mirror_the_proto() -> None:
    for mirror, proto in models.PROTO_ENUMS.items():
        assert [m.value for m in mirror] == [v.name for v in proto.DESCRIPTOR.values], mirror


@pytest.mark.browser
async def test_tls_to_the_router_and_from_clients(
    tmp_path: Path, router_factory: Any, gateway_factory: Any
) -> None:
    """The router serves TLS (MESH_TLS_CERT/KEY); the gateway verifies it with MESH_TLS_CA and
    serves HTTPS itself (MESH_GATEWAY_TLS_CERT/KEY)."""
    ca = Authority(tmp_path / "ca")
    router_cert = ca.issue("router")
    security = TransportSecurity.from_env(
        {"MESH_TLS_CERT": str(router_cert.cert), "MESH_TLS_KEY": str(router_cert.key)}
    )
    router = await router_factory([f"127.0.0.1:{free_port()}"], security=security)
    web = ca.issue("gateway")
    gw = await gateway_factory(
        router.address,
        router_ca=ca.ca.read_bytes(),
        tls_cert=web.cert,
        tls_key=web.key,
    )
    assert gw.url.startswith("https://")
    context = ssl.create_default_context(cafile=str(ca.ca))
    headers = {"Authorization": f"Bearer {TOKENS['acme']}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gw.url}/v1/sessions", headers=headers, ssl=context) as resp:
            assert resp.status == 200 and (await resp.json())["sessions"] == []
        async with http.get(f"{gw.url}/readyz", ssl=context) as resp:
            assert resp.status == 200
        # A gateway that does not trust the router's CA gets no answer from it.
        other = Authority(tmp_path / "other")
        blind = await gateway_factory(router.address, router_ca=other.ca.read_bytes(), timeout=3)
        async with http.get(f"{blind.url}/v1/sessions", headers=headers) as resp:
            assert resp.status == 503 and (await resp.json())["code"] == "UNAVAILABLE"
        async with http.get(f"{blind.url}/readyz") as resp:
            assert resp.status == 503
