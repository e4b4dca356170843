"""Message figures through the mesh, on the sandbox's calibrated page.

Runs the sandbox, one node and one router as processes (as `make run` does, with its SQLite
webhook outbox) and a webhook receiver in this process, links `--sessions` sessions with the
simulated phone, then measures:
- send to phone-received: SendMessage through the router until the recipient's phone holds the
  message (polled every 10 ms; the sandbox delivers at once, its acks come `ack_delay` apart);
- inbound message to webhook received: the phone sends to a session until the session's
  `message` webhook arrives (Standard Webhooks signed, from the node's outbox);
- throughput: messages a second through one node, all sessions sending at once with a high
  `MESH_SEND_RATE`, and what one session sends at the default rate limit;
- lost or doubled: every message sent once is received once, and every webhook once.
Prints the figures and writes them to docs/benchmarks.md.

    python bench/messages.py [--sessions 4] [--count 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.linking import link
from bench.report import machine, percentile, write_section
from sessionmesh.procs import ProcessGroup, wait_http, wait_serving
from sessionmesh.v1 import mesh_pb2, mesh_pb2_grpc
from tests.helpers import free_port

TOKEN = "bench-token-0123456789abcdef"
MD = (("authorization", f"Bearer {TOKEN}"),)
HOST = "127.0.0.1"
FRIEND = "6289900000001"


class Receiver:
    """Webhook receiver: when each message text arrived, and each webhook-id seen."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.ids: list[str] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def hook(self, request: web.Request) -> web.Response:
        now = time.perf_counter()
        body = json.loads(await request.read())
        self.ids.append(request.headers["webhook-id"])
        text = body.get("payload", {}).get("text", "")
        if body.get("event") == "message" and text:
            self.arrived.setdefault(text, now)
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, HOST, port).start()
        self.url = f"http://{HOST}:{port}/hook"


def start_mesh(work: Path, send_rate: str) -> tuple[ProcessGroup, str, str]:
    group = ProcessGroup(work / "logs")
    sb_port, node_port, router_port = free_port(), free_port(), free_port()
    sandbox = f"http://{HOST}:{sb_port}/"
    wait_http(
        sandbox + "healthz",
        group.spawn("sandbox", ["mesh-sandbox", "--port", str(sb_port), "--ack-delay", "0.5"]),
        "sandbox",
    )
    shared = {
        "MESH_WEBHOOK_DB": str(work / "webhooks.db"),
        "MESH_WEBHOOK_ALLOW": "127.0.0.0/8",
        "LOG_LEVEL": "WARNING",
    }
    node = f"{HOST}:{node_port}"
    proc = group.spawn(
        "node",
        ["mesh-node"],
        {
            **shared,
            "MESH_NODE_ID": "bench-node",
            "MESH_NODE_LISTEN": node,
            "WA_URL": sandbox,
            "SESSION_STORAGE_PATH": str(work / "sessions"),
            "MESH_SEND_RATE": send_rate,
            "MESH_SEND_BURST": "1",
        },
    )
    wait_serving(node, proc, "node")
    router = f"{HOST}:{router_port}"
    proc = group.spawn(
        "router",
        ["mesh-router"],
        {
            **shared,
            "MESH_ROUTER_LISTEN": router,
            "MESH_NODES": node,
            "MESH_API_TOKENS": f"bench:{TOKEN}",
        },
    )
    wait_serving(router, proc, "router")
    return group, sandbox, router


async def inbox(http: aiohttp.ClientSession, sandbox: str, number: str) -> list[dict[str, Any]]:
    async with http.get(f"{sandbox}phone/messages", params={"phone": number}) as resp:
        return list((await resp.json())["messages"])


async def send_to_phone(
    stub: Any, http: aiohttp.ClientSession, sandbox: str, n: int
) -> list[float]:
    """SendMessage until the friend's phone holds it, one at a time."""
    took = []
    for i in range(n):
        text = f"out {i} {time.time_ns()}"
        t0 = time.perf_counter()
        await stub.SendMessage(
            mesh_pb2.SendMessageRequest(
                session_id="s0", to=FRIEND, idempotency_key=text.replace(" ", "-"), text=text
            ),
            metadata=MD,
            timeout=120,
        )
        while not any(m["body"] == text for m in await inbox(http, sandbox, FRIEND)):  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # the phone has no push: poll it
        took.append(time.perf_counter() - t0)
    return took


async def inbound_to_webhook(
    http: aiohttp.ClientSession, sandbox: str, receiver: Receiver, numbers: list[str], n: int
) -> list[float]:
    took = []
    for i in range(n):
        text = f"in {i} {time.time_ns()}"
        t0 = time.perf_counter()
        async with http.post(
            f"{sandbox}phone/send",
            json={"phone": numbers[i % len(numbers)], "from": FRIEND, "body": text},
        ) as resp:
            assert resp.status == 200, await resp.text()
        deadline = time.monotonic() + 60
        while text not in receiver.arrived:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no webhook for {text!r}")
            await asyncio.sleep(0.005)
        took.append(receiver.arrived[text] - t0)
    return took


async def throughput(stub: Any, sessions: int, per_session: int) -> tuple[int, float]:
    async def one(s: int) -> None:
        for i in range(per_session):
            text = f"bulk {s} {i} {time.time_ns()}"
            await stub.SendMessage(
                mesh_pb2.SendMessageRequest(
                    session_id=f"s{s}", to=FRIEND, idempotency_key=text.replace(" ", "-"), text=text
                ),
                metadata=MD,
                timeout=300,
            )

    t0 = time.perf_counter()
    await asyncio.gather(*(one(s) for s in range(sessions)))
    return sessions * per_session, time.perf_counter() - t0


async def rate_limited(stub: Any, n: int) -> float:
    """Messages a second one session sends at the default MESH_SEND_RATE (1/s, burst 3)."""
    t0 = time.perf_counter()
    await asyncio.gather(
        *(
            stub.SendMessage(
                mesh_pb2.SendMessageRequest(
                    session_id="s0", to=FRIEND, idempotency_key=f"rl-{i}", text=f"rate {i}"
                ),
                metadata=MD,
                timeout=300,
            )
            for i in range(n)
        )
    )
    return n / (time.perf_counter() - t0)


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    receiver = Receiver()
    await receiver.start()
    numbers = [f"62899100000{i:02d}" for i in range(args.sessions)]
    group, sandbox, router = await asyncio.to_thread(start_mesh, work / "fast", "1000")
    try:
        async with grpc.aio.insecure_channel(router) as channel, aiohttp.ClientSession() as http:
            stub = mesh_pb2_grpc.SessionMeshStub(channel)
            await stub.CreateWebhook(
                mesh_pb2.CreateWebhookRequest(url=receiver.url, events=["message"]), metadata=MD
            )
            for i, number in enumerate(numbers):
                await link(stub, http, sandbox, f"s{i}", number, MD)
            figures["send_to_phone"] = await send_to_phone(stub, http, sandbox, args.count)
            figures["inbound_to_webhook"] = await inbound_to_webhook(
                http, sandbox, receiver, numbers, args.count
            )
            sent, seconds = await throughput(stub, args.sessions, args.count)
            figures["throughput"] = (sent, seconds)
            received = await inbox(http, sandbox, FRIEND)
            bodies = [m["body"] for m in received]
            figures["doubled"] = len(bodies) - len(set(bodies))
            figures["lost"] = sum(
                1
                for t in [f"out {i}" for i in range(args.count)]
                if not any(b.startswith(t + " ") for b in bodies)
            )
            figures["webhooks_doubled"] = len(receiver.ids) - len(set(receiver.ids))
    finally:
        group.stop_all()
    group, sandbox, router = await asyncio.to_thread(start_mesh, work / "default", "1")
    try:
        async with grpc.aio.insecure_channel(router) as channel, aiohttp.ClientSession() as http:
            stub = mesh_pb2_grpc.SessionMeshStub(channel)
            await link(stub, http, sandbox, "s0", numbers[0], MD)
            figures["rate_limited"] = await rate_limited(stub, 10)
    finally:
        group.stop_all()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--count", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mesh-bench-msg-") as tmp:
        f = asyncio.run(run(args, Path(tmp)))
    sent, seconds = f["throughput"]
    lines = ["## Messages (`bench/messages.py`)\n", f"Machine: {machine()}.\n"]
    lines.append(
        f"Command: `python bench/messages.py --sessions {args.sessions} --count {args.count}`. "
        "Sandbox (calibrated page, acks 0.5 s apart), one node, one router as processes, the "
        "webhook outbox in SQLite as under `make run`, a receiver on loopback.\n"
    )
    lines.append("| figure | p50 | p95 | max | goal |")
    lines.append("|---|---|---|---|---|")
    for label, key, goal in (
        (
            "send to phone-received",
            "send_to_phone",
            "p95 ≤ 300 ms (the sandbox adds no delay here)",
        ),
        ("inbound message to webhook received", "inbound_to_webhook", "p95 ≤ 500 ms"),
    ):
        v = f[key]
        lines.append(
            f"| {label} | {percentile(v, 50) * 1000:.0f} ms | {percentile(v, 95) * 1000:.0f} ms | "
            f"{max(v) * 1000:.0f} ms | {goal} |"
        )
    lines.append("")
    lines.append(
        f"Throughput through one node: {sent} messages from {args.sessions} sessions in "
        f"{seconds:.1f} s, {sent / seconds:.1f} messages/s (`MESH_SEND_RATE` raised to 1000). "
        f"One session at the default rate limit (1/s, burst 3 lowered to 1 here): "
        f"{f['rate_limited']:.2f} messages/s.\n"
    )
    lines.append(
        f"Lost: {f['lost']}; doubled at the phone: {f['doubled']}; webhooks doubled (same "
        f"webhook-id twice): {f['webhooks_doubled']}. Goal: 0 each. (Faults: see the tests, "
        "which kill nodes, routers and dispatchers mid-delivery.)"
    )
    body = "\n".join(lines)
    print(body)
    write_section("messages", body)


if __name__ == "__main__":
    main()
