"""`make cluster`: Redis, the sandbox, three nodes and two routers with RemoteAuth, on this machine.

Redis is the system's redis-server on a free port (no persistence, its files in the run dir),
unless REDIS_URL names one. Nodes keep logins in Redis (AUTH_STRATEGY=remoteauth) under a
snapshot key made for this run (or MESH_SNAPSHOT_KEY); routers learn the nodes from Redis.
Ctrl-C stops everything in reverse order.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

from node.crypto import new_key_spec
from sessionmesh.procs import (
    ProcessGroup,
    port_from_env,
    run_until_interrupted,
    wait_http,
    wait_serving,
)

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
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(group: ProcessGroup, run_dir: Path) -> str:
    """The system's redis-server on a free port, data in `run_dir/redis`; returns its URL."""
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
    ]  # fmt: skip
    proc = group.spawn("redis", argv)
    wait_redis(port, proc)
    return f"redis://{HOST}:{port}/0"


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
    router_ports = [
        port_from_env(f"ROUTER{i}_PORT", 50050 + i, "make cluster") for i in range(1, ROUTERS + 1)
    ]
    node_ports = [
        port_from_env(f"NODE{i}_PORT", 50060 + i, "make cluster") for i in range(1, NODES + 1)
    ]
    token = os.environ.get("MESH_DEV_TOKEN") or "dev-" + secrets.token_urlsafe(24)
    snapshot_key = os.environ.get("MESH_SNAPSHOT_KEY") or new_key_spec("cluster1")
    group = ProcessGroup(RUN_DIR / "logs")

    def start() -> None:
        redis_url = os.environ.get("REDIS_URL") or start_redis(group, RUN_DIR)
        sandbox_url = f"http://{HOST}:{sandbox_port}/"
        sb = group.spawn("sandbox", ["mesh-sandbox", "--port", str(sandbox_port)])
        wait_http(sandbox_url + "healthz", sb, "sandbox")
        shared = {"REDIS_URL": redis_url}
        nodes = []
        for i, port in enumerate(node_ports, start=1):
            addr = f"{HOST}:{port}"
            env = {
                **shared,
                "MESH_NODE_ID": f"node-{i}",
                "MESH_NODE_LISTEN": addr,
                "WA_URL": sandbox_url,
                "AUTH_STRATEGY": "remoteauth",
                "MESH_SNAPSHOT_KEY": snapshot_key,
                "SESSION_STORAGE_PATH": str(RUN_DIR / f"cluster-node-{i}" / "sessions"),
            }
            nodes.append((addr, group.spawn(f"node-{i}", ["mesh-node"], env)))
        for i, (addr, proc) in enumerate(nodes, start=1):
            wait_serving(addr, proc, f"node-{i}")
        routers = []
        for i, port in enumerate(router_ports, start=1):
            addr = f"{HOST}:{port}"
            env = {
                **shared,
                "MESH_ROUTER_LISTEN": addr,
                "MESH_API_TOKENS": f"dev:{token}",
                "MESH_ADMIN_TENANTS": "dev",
            }
            routers.append((addr, group.spawn(f"router-{i}", ["mesh-router"], env)))
        for i, (addr, proc) in enumerate(routers, start=1):
            wait_serving(addr, proc, f"router-{i}")
        env_file = RUN_DIR / "cluster.env"
        env_file.write_text(
            f"export MESH_ROUTER={routers[0][0]}\nexport MESH_TOKEN={token}\n"
            f"export REDIS_URL={redis_url}\n"
        )
        env_file.chmod(0o600)
        print(
            f"""
Session Mesh cluster is running, RemoteAuth on Redis (logs in {group.logs}/).
  routers  {", ".join(a for a, _ in routers)}   (gRPC, sessionmesh.v1.SessionMesh)
  nodes    {", ".join(a for a, _ in nodes)}   (node-1 .. node-{NODES})
  redis    {redis_url}
  sandbox  {sandbox_url}   (stand-in for WhatsApp Web, with a simulated phone)
  token    {token}   (tenant "dev", an admin: may drain nodes)

Try, in another terminal:
  source {env_file}
  .venv/bin/meshctl create demo --remote --watch   # QR, then READY once the phone scans it
  curl -s -XPOST {sandbox_url}phone/scan -d '{{"code":"<payload>","phone":"6281234567890"}}'
  .venv/bin/meshctl cluster
  .venv/bin/meshctl drain node-1                   # its RemoteAuth sessions move, no QR
  kill -9 <a node's pid>                           # failover: READY elsewhere, no QR

Ctrl-C stops everything.""",
            flush=True,
        )

    run_until_interrupted(group, "make cluster", start)


if __name__ == "__main__":
    main()
