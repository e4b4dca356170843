"""The HTTP gateway: its overhead over the gRPC call it makes, and 2,000 event streams at once.

Runs the sandbox, one node, one router and `mesh-gateway` as processes (as `make run` does), then:
- overhead: sequential GETs of a session and of the session list over one keep-alive HTTP
  connection; for each, the client's latency minus the router call's duration that the gateway
  reports in Server-Timing (`router;dur=`); the same call made directly over gRPC for reference;
- streams: opens 2,000 server-sent-event streams on one gateway (two tenants, 1,000 each, on 4
  sessions that show a new QR every 2 s), holds them, and counts streams that ended or missed an
  event (a gap in the ids), with the gateway's memory before and while they are held.
Prints the figures and writes them to docs/benchmarks.md.

    python bench/gateway.py [--requests 3000] [--streams 2000] [--hold 60]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine, percentile, write_section
from sessionmesh.procs import ProcessGroup, wait_http, wait_serving
from sessionmesh.v1 import mesh_pb2, mesh_pb2_grpc
from tests.helpers import free_port

TOKENS = {"bench": "bench-token-0123456789abcdef", "bench2": "bench2-token-0123456789abcdef"}
SESSIONS = 4
QR_TTL = 2.0


@dataclass
class Mesh:
    group: ProcessGroup
    router: str
    gateway: str
    gateway_pid: int


def start_mesh(workdir: Path) -> Mesh:
    group = ProcessGroup(workdir / "logs")
    sb_port, node_port, router_port, gw_port = free_port(), free_port(), free_port(), free_port()
    sandbox = f"http://127.0.0.1:{sb_port}/"
    sb = group.spawn(
        "sandbox",
        ["mesh-sandbox", "--port", str(sb_port),
         "--qr-ttl", str(QR_TTL), "--first-qr-ttl", str(QR_TTL), "--qr-count", "1000"],
    )  # fmt: skip
    wait_http(sandbox + "healthz", sb, "sandbox")
    node_addr = f"127.0.0.1:{node_port}"
    node = group.spawn(
        "node",
        ["mesh-node"],
        {
            "MESH_NODE_ID": "bench-node",
            "MESH_NODE_LISTEN": node_addr,
            "WA_URL": sandbox,
            "SESSION_STORAGE_PATH": str(workdir / "sessions"),
            "QR_FIRST_TIMEOUT": str(QR_TTL),
            "QR_TIMEOUT": str(QR_TTL),
            "LOG_LEVEL": "WARNING",
        },
    )
    wait_serving(node_addr, node, "node")
    router_addr = f"127.0.0.1:{router_port}"
    router = group.spawn(
        "router",
        ["mesh-router"],
        {
            "MESH_ROUTER_LISTEN": router_addr,
            "MESH_NODES": node_addr,
            "MESH_API_TOKENS": ",".join(f"{t}:{tok}" for t, tok in TOKENS.items()),
            "LOG_LEVEL": "WARNING",
        },
    )
    wait_serving(router_addr, router, "router")
    gateway = f"127.0.0.1:{gw_port}"
    gw = group.spawn(
        "gateway",
        ["mesh-gateway"],
        {
            "MESH_GATEWAY_LISTEN": gateway,
            "MESH_ROUTER": router_addr,
            "MESH_GATEWAY_ACCESS_LOG": "false",
            "MESH_GATEWAY_HEARTBEAT": "15",
            "LOG_LEVEL": "WARNING",
        },
    )
    wait_http(f"http://{gateway}/readyz", gw, "gateway")
    return Mesh(group, router_addr, gateway, gw.pid)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def create_sessions(router: str) -> list[tuple[str, str]]:
    """(tenant, session id) pairs: SESSIONS per tenant, each showing QR codes."""
    made = []
    with grpc.insecure_channel(router) as channel:
        stub = mesh_pb2_grpc.SessionMeshStub(channel)
        for tenant, token in TOKENS.items():
            md = (("authorization", f"Bearer {token}"),)
            for i in range(SESSIONS // len(TOKENS)):
                sid = f"{tenant}-{i}"
                stub.CreateSession(mesh_pb2.CreateSessionRequest(session_id=sid), metadata=md)
                made.append((tenant, sid))
    return made


def overhead(mesh: Mesh, tenant: str, sid: str, n: int) -> dict[str, dict[str, list[float]]]:
    """Per call kind: client latency, router duration (Server-Timing), overhead, direct gRPC."""
    token = TOKENS[tenant]
    headers = {"Authorization": f"Bearer {token}"}
    md = (("authorization", f"Bearer {token}"),)
    conn = http.client.HTTPConnection(*mesh.gateway.split(":"))
    results: dict[str, dict[str, list[float]]] = {}
    with grpc.insecure_channel(mesh.router) as channel:
        stub = mesh_pb2_grpc.SessionMeshStub(channel)
        calls = {
            "GetSession": (f"/v1/sessions/{sid}", stub.GetSession,
                           mesh_pb2.GetSessionRequest(session_id=sid)),
            "ListSessions": ("/v1/sessions", stub.ListSessions, mesh_pb2.ListSessionsRequest()),
        }  # fmt: skip
        for name, (path, method, request) in calls.items():
            got: dict[str, list[float]] = {"http": [], "router": [], "overhead": [], "grpc": []}
            for i in range(n + 200):  # the first 200 warm up
                t0 = time.perf_counter()
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                took = time.perf_counter() - t0
                assert resp.status == 200, resp.status
                timing = resp.getheader("Server-Timing") or ""
                router = float(timing.split("router;dur=")[1].split(",")[0]) / 1000
                t0 = time.perf_counter()
                method(request, metadata=md, timeout=10)
                direct = time.perf_counter() - t0
                if i >= 200:
                    got["http"].append(took * 1000)
                    got["router"].append(router * 1000)
                    got["overhead"].append((took - router) * 1000)
                    got["grpc"].append(direct * 1000)
            results[name] = got
    conn.close()
    return results


@dataclass
class Stream:
    tenant: str
    sid: str
    ids: list[int] = field(default_factory=list)
    ended: str = ""
    opened: bool = False


async def hold_streams(
    mesh: Mesh, sessions: list[tuple[str, str]], count: int, hold: float
) -> dict[str, float]:
    streams = [Stream(*sessions[i % len(sessions)]) for i in range(count)]
    rss_before = rss_mib(mesh.gateway_pid)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    stop = asyncio.Event()

    async def run(http: aiohttp.ClientSession, s: Stream) -> None:
        headers = {"Authorization": f"Bearer {TOKENS[s.tenant]}"}
        try:
            async with http.get(
                f"http://{mesh.gateway}/v1/sessions/{s.sid}/events", headers=headers
            ) as resp:
                if resp.status != 200:
                    s.ended = f"HTTP {resp.status}: {await resp.text()}"
                    return
                s.opened = True
                reader = asyncio.ensure_future(read(resp, s))
                ender = asyncio.ensure_future(stop.wait())
                await asyncio.wait({reader, ender}, return_when=asyncio.FIRST_COMPLETED)
                if reader.done() and not stop.is_set():
                    s.ended = "the stream ended"
                reader.cancel()
                ender.cancel()
        except (aiohttp.ClientError, OSError) as e:
            s.ended = f"{type(e).__name__}: {e}"

    async def read(resp: aiohttp.ClientResponse, s: Stream) -> None:
        async for raw in resp.content:
            if raw.startswith(b"id: "):
                s.ids.append(int(raw[4:]))

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        tasks = []
        t0 = time.perf_counter()
        for start in range(0, count, 100):
            tasks += [asyncio.ensure_future(run(http, s)) for s in streams[start : start + 100]]
            await asyncio.sleep(0.2)
        while sum(s.opened or bool(s.ended) for s in streams) < count:
            if time.perf_counter() - t0 > 300:
                break
            await asyncio.sleep(0.2)
        opened_in = time.perf_counter() - t0
        marks = {id(s): len(s.ids) for s in streams}
        await asyncio.sleep(hold / 2)
        rss_held = rss_mib(mesh.gateway_pid)
        await asyncio.sleep(hold / 2)
        stop.set()
        await asyncio.gather(*tasks)
    dropped = sum(1 for s in streams if s.ended or not s.opened)
    gaps = sum(1 for s in streams if s.ids != list(range(s.ids[0], s.ids[0] + len(s.ids))) if s.ids)
    quiet = sum(1 for s in streams if len(s.ids) - marks[id(s)] == 0)
    events = sum(len(s.ids) - marks[id(s)] for s in streams)
    reasons = sorted({s.ended for s in streams if s.ended})[:3]
    return {
        "streams": count,
        "held": sum(1 for s in streams if s.opened and not s.ended),
        "dropped": dropped,
        "gaps": gaps,
        "quiet": quiet,
        "events": events,
        "opened_in": opened_in,
        "rss_before": rss_before,
        "rss_held": rss_held,
        "reasons": reasons,  # type: ignore[dict-item]
    }


def stats(values: list[float]) -> str:
    return f"{percentile(values, 50):.2f} / {percentile(values, 99):.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--streams", type=int, default=2000)
    p.add_argument("--hold", type=float, default=60.0)
    args = p.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        mesh = start_mesh(Path(tmp))
        try:
            sessions = create_sessions(mesh.router)
            time.sleep(QR_TTL * 2)  # the sessions show QR codes
            load = os.getloadavg()[0]
            calls = overhead(mesh, *sessions[0], args.requests)
            held = asyncio.run(hold_streams(mesh, sessions, args.streams, args.hold))
        finally:
            mesh.group.stop_all()
    rows = "\n".join(
        f"| {name} | {stats(r['overhead'])} | {stats(r['http'])} | {stats(r['router'])} "
        f"| {stats(r['grpc'])} |"
        for name, r in calls.items()
    )
    per_stream = (held["rss_held"] - held["rss_before"]) * 1024 / max(1, held["held"])
    body = f"""## HTTP gateway

`python bench/gateway.py --requests {args.requests} --streams {args.streams} --hold {args.hold:.0f}`
(sandbox, one node, one router and `mesh-gateway` as processes on loopback). Machine: {machine()}.

**Overhead over the gRPC call it makes** (goal: p50 ≤ 2 ms, p99 ≤ 5 ms): {args.requests}
sequential GETs on one keep-alive connection (after 200 to warm up). Overhead is the client's
HTTP latency minus the router call's duration the gateway reports in `Server-Timing`; it holds
HTTP parsing, auth, the JSON, the loopback hop and the client's own HTTP code. Direct gRPC is the
same call from the bench over gRPC, for reference. Milliseconds, p50 / p99; the machine's
load average was {load:.1f} on its {os.cpu_count()} cores when it started (others' work included).

| call | overhead | HTTP, end to end | router call (Server-Timing) | direct gRPC |
|---|---|---|---|---|
{rows}

**Concurrent SSE streams on one gateway** (goal: 2,000 held, 0 dropped): {held["streams"]:.0f}
streams (two tenants, 1,000 each, on {SESSIONS} sessions showing a new QR every {QR_TTL:.0f} s),
opened 100 at a time in {held["opened_in"]:.1f} s and held {args.hold:.0f} s.

| streams | held | dropped | with a gap | without an event while held | events while held | gateway RSS before | RSS while held | per stream |
|---|---|---|---|---|---|---|---|---|
| {held["streams"]:.0f} | {held["held"]:.0f} | {held["dropped"]:.0f} | {held["gaps"]:.0f} | {held["quiet"]:.0f} | {held["events"]:.0f} | {held["rss_before"]:.0f} MiB | {held["rss_held"]:.0f} MiB | {per_stream:.0f} KiB |
"""
    if held["reasons"]:
        body += f"\nWhy streams ended: {'; '.join(map(str, held['reasons']))}\n"
    print(body)
    print(json.dumps({k: v for k, v in held.items() if k != "reasons"}), file=sys.stderr)
    write_section("gateway", body)


if __name__ == "__main__":
    main()
