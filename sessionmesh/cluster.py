"""`make cluster`: Redis, the sandbox, three nodes, two routers and the HTTP gateway with RemoteAuth,
on this machine.

Redis is the system's redis-server on a free port with a password made for this run (no
persistence, its files in the run dir), unless REDIS_URL names one. Nodes keep logins in Redis
(AUTH_STRATEGY=remoteauth) under a snapshot key made for this run (or MESH_SNAPSHOT_KEY); routers
learn the nodes from Redis. Routers and nodes talk mutual TLS and routers serve TLS, with
certificates from a throwaway CA in the run dir (`tls/`). Each router and node serves Prometheus
metrics on a port of its own. A node or router that dies is reported and the rest runs on
(SIGUSR1 starts it again); Ctrl-C stops everything in reverse order.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import grpc

from node.crypto import new_key_spec
from sessionmesh.certs import Authority
from sessionmesh.procs import (
    ProcessGroup,
    check_ports,
    free_port,
    port_from_env,
    run_until_interrupted,
    wait_http,
    wait_serving,
)
from sessionmesh.redis_conn import _redact_url

RUN_DIR = Path(os.environ.get("MESH_RUN_DIR", ".run"))
HOST = "127.0.0.1"
NODES = 3
ROUTERS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def start_redis(group: ProcessGroup, run_dir: Path, password: str) -> str:
    """The system's redis-server on a free port with `password`, data in `run_dir/redis`;
    returns its URL (password included)."""
    binary = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: install it (deploy/install-redis.sh)")
    data = run_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    argv = [
        # Absolute (ProcessGroup looks relative names up in the venv), not resolved: the binary
        # behaves by the name it is run under.
        str(Path(binary).absolute()),
        "--port", str(port),
        "--bind", HOST,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(data.resolve()),
        "--requirepass", password,
    ]  # fmt: skip
    proc = group.spawn("redis", argv)
    wait_redis(port, proc)
    return f"redis://:{password}@{HOST}:{port}/0"


def wait_redis(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        if _redis_answers(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer PING on port {port} within {timeout:.0f}s")


def main() -> None:
    RUN_DIR.mkdir(exist_ok=True)
    sandbox_port = port_from_env("SANDBOX_PORT", 8090, "make cluster")
    router_ports = {
        f"ROUTER{i}_PORT": port_from_env(f"ROUTER{i}_PORT", 50050 + i, "make cluster")
        for i in range(1, ROUTERS + 1)
    }
    node_ports = {
        f"NODE{i}_PORT": port_from_env(f"NODE{i}_PORT", 50060 + i, "make cluster")
        for i in range(1, NODES + 1)
    }
    gateway_port = port_from_env("GATEWAY_PORT", 8080, "make cluster")
    check_ports(
        {"SANDBOX_PORT": sandbox_port, **router_ports, **node_ports, "GATEWAY_PORT": gateway_port},
        "make cluster",
    )
    token = os.environ.get("MESH_DEV_TOKEN") or "dev-" + secrets.token_urlsafe(24)
    snapshot_key = os.environ.get("MESH_SNAPSHOT_KEY") or new_key_spec("cluster1")
    redis_password = secrets.token_urlsafe(24)
    ca = Authority(RUN_DIR / "tls")
    launcher = ca.issue("launcher", role="launcher")  # checks nodes' health over mTLS
    node_credentials = grpc.ssl_channel_credentials(
        ca.ca.read_bytes(), launcher.key.read_bytes(), launcher.cert.read_bytes()
    )
    router_credentials = grpc.ssl_channel_credentials(ca.ca.read_bytes())
    # Routers seal webhook secrets and nodes open them: a key of their own, not the logins'.
    webhook_key = os.environ.get("MESH_WEBHOOK_KEY") or new_key_spec("webhooks1")
    group = ProcessGroup(RUN_DIR / "logs")
    addresses: dict[str, str] = {}

    def wait_part(name: str) -> None:
        part = group.part(name)
        assert part is not None
        credentials = node_credentials if name.startswith("node") else router_credentials
        wait_serving(addresses[name], part.proc, name, credentials=credentials)

    def start() -> None:
        redis_url = os.environ.get("REDIS_URL") or start_redis(group, RUN_DIR, redis_password)
        sandbox_url = f"http://{HOST}:{sandbox_port}/"
        state = str(RUN_DIR / "cluster-sandbox-state.json")
        sb = group.spawn("sandbox", ["mesh-sandbox", "--port", str(sandbox_port), "--state", state])
        wait_http(sandbox_url + "healthz", sb, "sandbox")
        shared = {
            "REDIS_URL": redis_url,
            "MESH_WEBHOOK_KEY": webhook_key,
            "MESH_WEBHOOK_ALLOW": "127.0.0.0/8,::1",
        }
        metrics: dict[str, str] = {}
        for i, port in enumerate(node_ports.values(), start=1):
            name = f"node-{i}"
            addresses[name] = f"{HOST}:{port}"
            metrics[name] = str(free_port())
            env = {
                **shared,
                **ca.mtls_env(ca.issue(name)),
                "MESH_NODE_ID": name,
                "MESH_NODE_LISTEN": addresses[name],
                "MESH_METRICS_PORT": metrics[name],
                "WA_URL": sandbox_url,
                "AUTH_STRATEGY": "remoteauth",
                "MESH_SNAPSHOT_KEY": snapshot_key,
                "SESSION_STORAGE_PATH": str(RUN_DIR / f"cluster-{name}" / "sessions"),
            }
            group.spawn(name, ["mesh-node"], env, restartable=True)
        for i in range(1, NODES + 1):
            wait_part(f"node-{i}")
        for i, port in enumerate(router_ports.values(), start=1):
            name = f"router-{i}"
            addresses[name] = f"{HOST}:{port}"
            metrics[name] = str(free_port())
            public = ca.issue(f"{name}-public", role="public")
            env = {
                **shared,
                **ca.mtls_env(ca.issue(name, role="router")),
                "MESH_TLS_CERT": str(public.cert),
                "MESH_TLS_KEY": str(public.key),
                "MESH_ROUTER_LISTEN": addresses[name],
                "MESH_METRICS_PORT": metrics[name],
                "MESH_API_TOKENS": f"dev:{token}",
                "MESH_ADMIN_TENANTS": "dev",
            }
            group.spawn(name, ["mesh-router"], env, restartable=True)
        for i in range(1, ROUTERS + 1):
            wait_part(f"router-{i}")
        # The gateway speaks TLS to router-1, verified with the run's CA.
        gateway_url = f"http://{HOST}:{gateway_port}/"
        gateway = group.spawn(
            "gateway",
            ["mesh-gateway"],
            {
                "MESH_GATEWAY_LISTEN": f"{HOST}:{gateway_port}",
                "MESH_ROUTER": addresses["router-1"],
                "MESH_TLS_CA": str(ca.ca.resolve()),
            },
        )
        wait_http(gateway_url + "readyz", gateway, "gateway")
        env_file = RUN_DIR / "cluster.env"
        env_file.write_text(
            f"export MESH_ROUTER={addresses['router-1']}\nexport MESH_TOKEN={token}\n"
            f"export MESH_TLS_CA={ca.ca.resolve()}\nexport REDIS_URL={redis_url}\n"
            f"export MESH_GATEWAY={gateway_url.rstrip('/')}\n"
        )
        env_file.chmod(0o600)
        pids = {p.name: p.proc.pid for p in group.parts}
        nodes = "\n".join(
            f"  {name:<9}{addresses[name]}   pid {pids[name]}, metrics "
            f"http://{HOST}:{metrics[name]}/metrics"
            for name in [*(f"router-{i}" for i in range(1, ROUTERS + 1)),
                         *(f"node-{i}" for i in range(1, NODES + 1))]
        )  # fmt: skip
        print(
            f"""
Session Mesh cluster is running, RemoteAuth on Redis (logs in {group.logs}/).
{nodes}
  gateway  {gateway_url}   (HTTP API over TLS to router-1; docs at {gateway_url}docs)
  redis    {_redact_url(redis_url)}   (password in {env_file})
  sandbox  {sandbox_url}   (stand-in for WhatsApp Web, with a simulated phone)
  token    {token}   (tenant "dev", an admin: may drain nodes)
  TLS      routers serve TLS, routers and nodes talk mutual TLS (CA: {ca.ca})

Try, in another terminal:
  source {env_file}
  .venv/bin/meshctl create demo --remote --watch   # QR, then READY once the phone scans it
  curl -s -XPOST {sandbox_url}phone/scan -d '{{"code":"<payload>","phone":"6281234567890"}}'
  .venv/bin/meshctl cluster
  .venv/bin/meshctl drain node-1                   # its RemoteAuth sessions move, no QR
  kill -9 <a node's pid>                           # failover: READY elsewhere, no QR
  kill -USR1 {os.getpid()}                            # starts dead nodes and routers again

Ctrl-C stops everything.""",
            flush=True,
        )

    run_until_interrupted(group, "make cluster", start, restarted=wait_part)


if __name__ == "__main__":
    main()
