"""`make run`: the sandbox, one router, two nodes, the HTTP gateway and the console on this machine
(LocalAuth, no Redis).

Each part runs as its own process, as in production, on loopback: nodes check a secret made for
this run (MESH_NODE_SECRET) that only the router has, and every router and node serves
Prometheus metrics on a port of its own. A node or the router that dies is reported and the rest
runs on (SIGUSR1 starts it again); Ctrl-C stops them all cleanly.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from sessionmesh.procs import (
    ProcessGroup,
    check_ports,
    free_port,
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
    gateway_port = port_from_env("GATEWAY_PORT", 8080, "make run")
    check_ports(
        {
            "SANDBOX_PORT": sandbox_port,
            "ROUTER_PORT": router_port,
            "NODE1_PORT": node_ports[0],
            "NODE2_PORT": node_ports[1],
            "CONSOLE_PORT": console_port,
            "GATEWAY_PORT": gateway_port,
        },
        "make run",
    )
    token = os.environ.get("MESH_DEV_TOKEN") or "dev-" + secrets.token_urlsafe(24)
    secret = secrets.token_urlsafe(24)  # MESH_NODE_SECRET: loopback nodes answer the router only
    group = ProcessGroup(RUN_DIR / "logs")
    addresses: dict[str, str] = {}
    metrics: dict[str, int] = {}

    def wait_part(name: str) -> None:
        part = group.part(name)
        assert part is not None
        wait_serving(addresses[name], part.proc, name)

    # Webhooks: one SQLite outbox the router and both nodes share; loopback receivers allowed.
    webhooks = {
        "MESH_WEBHOOK_DB": str((RUN_DIR / "webhooks.db").resolve()),
        "MESH_WEBHOOK_ALLOW": "127.0.0.0/8,::1",
    }

    def start() -> None:
        sandbox_url = f"http://{HOST}:{sandbox_port}/"
        state = str(RUN_DIR / "sandbox-state.json")
        sb = group.spawn("sandbox", ["mesh-sandbox", "--port", str(sandbox_port), "--state", state])
        wait_http(sandbox_url + "healthz", sb, "sandbox")
        for i, port in enumerate(node_ports, start=1):
            name = f"node-{i}"
            addresses[name] = f"{HOST}:{port}"
            metrics[name] = free_port()
            env = {
                **webhooks,
                "MESH_NODE_ID": name,
                "MESH_NODE_LISTEN": addresses[name],
                "MESH_NODE_SECRET": secret,
                "MESH_METRICS_PORT": str(metrics[name]),
                "WA_URL": sandbox_url,
                "AUTH_STRATEGY": "localauth",
                "SESSION_STORAGE_PATH": str(RUN_DIR / name / "sessions"),
            }
            group.spawn(name, ["mesh-node"], env, restartable=True)
        for i in range(1, len(node_ports) + 1):
            wait_part(f"node-{i}")
        node_addrs = [addresses[f"node-{i}"] for i in range(1, len(node_ports) + 1)]
        router_addr = addresses["router"] = f"{HOST}:{router_port}"
        metrics["router"] = free_port()
        router_env = {
            **webhooks,
            "MESH_ROUTER_LISTEN": router_addr,
            "MESH_NODES": ",".join(node_addrs),
            "MESH_NODE_SECRET": secret,
            "MESH_METRICS_PORT": str(metrics["router"]),
            "MESH_API_TOKENS": f"dev:{token}",
        }
        group.spawn("router", ["mesh-router"], router_env, restartable=True)
        wait_part("router")
        gateway_url = f"http://{HOST}:{gateway_port}/"
        gateway = group.spawn(
            "gateway",
            ["mesh-gateway"],
            {"MESH_GATEWAY_LISTEN": f"{HOST}:{gateway_port}", "MESH_ROUTER": router_addr},
        )
        wait_http(gateway_url + "readyz", gateway, "gateway")
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
        env_file.write_text(
            f"export MESH_ROUTER={router_addr}\nexport MESH_TOKEN={token}\n"
            f"export MESH_GATEWAY={gateway_url.rstrip('/')}\n"
        )
        env_file.chmod(0o600)
        pids = {p.name: p.proc.pid for p in group.parts}
        metric_lines = "\n".join(
            f"  metrics  http://{HOST}:{port}/metrics   ({name}, pid {pids[name]})"
            for name, port in metrics.items()
        )
        print(
            f"""
Session Mesh is running (logs in {group.logs}/).
  router   {router_addr}   (gRPC, sessionmesh.v1.SessionMesh)
  nodes    {", ".join(node_addrs)}
{metric_lines}
  gateway  {gateway_url}   (HTTP API and server-sent events; docs at {gateway_url}docs)
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
  .venv/bin/meshctl webhook add http://127.0.0.1:9000/hook --events session.status,qr,message
  curl -s -H "Authorization: Bearer $MESH_TOKEN" $MESH_GATEWAY/v1/sessions   # the same over HTTP

Ctrl-C stops everything.""",
            flush=True,
        )

    run_until_interrupted(group, "make run", start, restarted=wait_part)


if __name__ == "__main__":
    main()
