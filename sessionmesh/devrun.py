"""`make run`: the sandbox, one router and two nodes on this machine (LocalAuth, no Redis).

Each part runs as its own process, as in production; Ctrl-C stops them all cleanly.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

RUN_DIR = Path(os.environ.get("MESH_RUN_DIR", ".run"))
HOST = "127.0.0.1"


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit():
        sys.exit(f"make run: {name} must be a port number, got {raw!r}")
    return int(raw)


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f}s")


def _wait_grpc(address: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{what} was not SERVING at {address} within {timeout:.0f}s")


def main() -> None:
    RUN_DIR.mkdir(exist_ok=True)
    sandbox_port = _port("SANDBOX_PORT", 8090)
    router_port = _port("ROUTER_PORT", 50051)
    node_ports = [_port("NODE1_PORT", 50061), _port("NODE2_PORT", 50062)]
    token = os.environ.get("MESH_DEV_TOKEN") or "dev-" + secrets.token_urlsafe(24)
    logs = RUN_DIR / "logs"
    logs.mkdir(exist_ok=True)
    bin_dir = Path(sys.executable).parent
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = open(logs / f"{name}.log", "wb")  # closed with the process
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        procs.append((name, proc))
        return proc

    def stop_all() -> None:
        for _name, proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop in 30s; killing it")
                proc.kill()

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        sandbox_url = f"http://{HOST}:{sandbox_port}/"
        sb = spawn("sandbox", [str(bin_dir / "mesh-sandbox"), "--port", str(sandbox_port)], {})
        _wait_http(sandbox_url + "healthz", sb, "sandbox")
        node_addrs = []
        for i, port in enumerate(node_ports, start=1):
            addr = f"{HOST}:{port}"
            node_env = {
                "MESH_NODE_ID": f"node-{i}",
                "MESH_NODE_LISTEN": addr,
                "WA_URL": sandbox_url,
                "AUTH_STRATEGY": "localauth",
                "SESSION_STORAGE_PATH": str(RUN_DIR / f"node-{i}" / "sessions"),
            }
            spawn(f"node-{i}", [str(bin_dir / "mesh-node")], node_env)
            node_addrs.append(addr)
        for (name, proc), addr in zip(procs[1:], node_addrs, strict=True):
            _wait_grpc(addr, proc, name)
        router_addr = f"{HOST}:{router_port}"
        router = spawn(
            "router",
            [str(bin_dir / "mesh-router")],
            {
                "MESH_ROUTER_LISTEN": router_addr,
                "MESH_NODES": ",".join(node_addrs),
                "MESH_API_TOKENS": f"dev:{token}",
            },
        )
        _wait_grpc(router_addr, router, "router")
        (RUN_DIR / "env").write_text(f"export MESH_ROUTER={router_addr}\nexport MESH_TOKEN={token}\n")
        os.chmod(RUN_DIR / "env", 0o600)
        print(
            f"""
Session Mesh is running (logs in {logs}/).
  router   {router_addr}   (gRPC, sessionmesh.v1.SessionMesh)
  nodes    {", ".join(node_addrs)}
  sandbox  {sandbox_url}   (stand-in for WhatsApp Web, with a simulated phone)
  token    {token}   (tenant "dev")

Try, in another terminal:
  source {RUN_DIR}/env
  .venv/bin/meshctl create demo --watch        # draws the QR, waits for READY
  curl -s -XPOST {sandbox_url}phone/scan -d '{{"code":"<QR payload>","phone":"6281234567890"}}'
  .venv/bin/meshctl list
  .venv/bin/meshctl cluster

Ctrl-C stops everything.""",
            flush=True,
        )
        while all(proc.poll() is None for _n, proc in procs):
            time.sleep(0.5)
        dead = [n for n, p in procs if p.poll() is not None]
        print(f"stopping: {', '.join(dead)} exited (see {logs}/)")
    except KeyboardInterrupt:
        print("\nstopping...")
    except RuntimeError as e:
        print(f"make run: {e} (see {logs}/)")
        stop_all()
        sys.exit(1)
    stop_all()
    print("stopped.")


if __name__ == "__main__":
    main()
