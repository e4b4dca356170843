"""`make run`: the sandbox, one router and two nodes on this machine (LocalAuth, no Redis).

Each part runs as its own process, as in production; Ctrl-C stops them all cleanly.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from sessionmesh.procs import (
    ProcessGroup,
    port_from_env,
    run_until_interrupted,
    wait_http,
    wait_serving,
)

RUN_DIR = Path(os.environ.get("MESH_RUN_DIR", ".run"))
CONSOLE_APP = Path(__file__).resolve().parent.parent / "console" / "app.py"
HOST = "127.0.0.1"


def main() -> None:
    RUN_DIR.mkdir(exist_ok=True)
    sandbox_port = port_from_env("SANDBOX_PORT", 8090, "make run")
    router_port = port_from_env("ROUTER_PORT", 50051, "make run")
    node_ports = [
        port_from_env("NODE1_PORT", 50061, "make run"),
        port_from_env("NODE2_PORT", 50062, "make run"),
    ]
    console_port = port_from_env("CONSOLE_PORT", 8501, "make run")
    token = os.environ.get("MESH_DEV_TOKEN") or "dev-" + secrets.token_urlsafe(24)
    group = ProcessGroup(RUN_DIR / "logs")

    def start() -> None:
        sandbox_url = f"http://{HOST}:{sandbox_port}/"
        sb = group.spawn("sandbox", ["mesh-sandbox", "--port", str(sandbox_port)])
        wait_http(sandbox_url + "healthz", sb, "sandbox")
        nodes = []
        for i, port in enumerate(node_ports, start=1):
            addr = f"{HOST}:{port}"
            env = {
                "MESH_NODE_ID": f"node-{i}",
                "MESH_NODE_LISTEN": addr,
                "WA_URL": sandbox_url,
                "AUTH_STRATEGY": "localauth",
                "SESSION_STORAGE_PATH": str(RUN_DIR / f"node-{i}" / "sessions"),
            }
            nodes.append((addr, group.spawn(f"node-{i}", ["mesh-node"], env)))
        for i, (addr, proc) in enumerate(nodes, start=1):
            wait_serving(addr, proc, f"node-{i}")
        node_addrs = [addr for addr, _ in nodes]
        router_addr = f"{HOST}:{router_port}"
        router_env = {
            "MESH_ROUTER_LISTEN": router_addr,
            "MESH_NODES": ",".join(node_addrs),
            "MESH_API_TOKENS": f"dev:{token}",
        }
        wait_serving(router_addr, group.spawn("router", ["mesh-router"], router_env), "router")
        console_url = f"http://{HOST}:{console_port}/"
        console = group.spawn(
            "console",
            [
                "streamlit",
                "run",
                str(CONSOLE_APP),
                "--server.headless",
                "true",
                "--server.address",
                HOST,
                "--server.port",
                str(console_port),
                "--browser.gatherUsageStats",
                "false",
            ],
            {"MESH_ROUTER": router_addr, "MESH_TOKEN": token},
        )
        wait_http(console_url + "_stcore/health", console, "console")
        env_file = RUN_DIR / "env"
        env_file.write_text(f"export MESH_ROUTER={router_addr}\nexport MESH_TOKEN={token}\n")
        env_file.chmod(0o600)
        print(
            f"""
Session Mesh is running (logs in {group.logs}/).
  router   {router_addr}   (gRPC, sessionmesh.v1.SessionMesh)
  nodes    {", ".join(node_addrs)}
  sandbox  {sandbox_url}   (stand-in for WhatsApp Web, with a simulated phone)
  console  {console_url}   (ops console: capacity, latency, sessions, tier planner)
  token    {token}   (tenant "dev")

Try, in another terminal:
  source {env_file}
  .venv/bin/meshctl create demo --watch        # draws the QR, waits for READY
  # the simulated phone scans the QR (paste the "payload:" line meshctl printed):
  curl -s -XPOST {sandbox_url}phone/scan -d '{{"code":"<payload>","phone":"6281234567890"}}'
  .venv/bin/meshctl list
  .venv/bin/meshctl cluster

Ctrl-C stops everything.""",
            flush=True,
        )

    run_until_interrupted(group, "make run", start)


if __name__ == "__main__":
    main()
