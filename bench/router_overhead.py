"""Router overhead: GetSession through the router minus GetSession at the node, and the setup of
a WatchSession stream (call to first event) the same two ways, in three transports:

- plain: no TLS anywhere (loopback, the node checks a shared secret);
- tls: the router serves TLS to clients, and routers and nodes talk mutual TLS;
- the node answered directly over the same transport the router uses toward it.

The sandbox, one node and one router run as processes (`mesh-sandbox`, `mesh-node`,
`mesh-router`), the client here; one session is created (it shows QR codes: GetSession and
WatchSession answer the same in any state). Calls go one at a time, so each figure is latency,
not throughput.

    python bench/router_overhead.py [--calls 2000] [--streams 200] [--profile DIR]

`--profile DIR` records the router process with py-spy during the plain run (a speedscope
file and py-spy's top functions), for finding what the overhead is made of.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine, percentile, write_section
from sessionmesh.certs import Authority
from sessionmesh.procs import ProcessGroup, wait_http, wait_serving
from sessionmesh.v1 import mesh_pb2, mesh_pb2_grpc, node_pb2, node_pb2_grpc
from tests.helpers import free_port

TOKEN = "bench-token-0123456789abcdef"
MD = (("authorization", f"Bearer {TOKEN}"),)
SECRET = "bench-node-secret-0123456789"
ROUNDS = 10


@dataclass
class Figures:
    unary: list[float]  # ms
    stream: list[float]  # ms, call to first event


@dataclass
class Mesh:
    group: ProcessGroup
    router: str
    node: str
    router_pid: int
    client_creds: grpc.ChannelCredentials | None  # toward the router
    node_creds: grpc.ChannelCredentials | None  # toward the node, as the router has them
    node_md: tuple[tuple[str, str], ...]


def start(work: Path, tls: bool, sandbox: str, router_extra: dict[str, str] | None = None) -> Mesh:
    """One node and one router as processes (mTLS and public TLS with `tls`, else the loopback
    secret); `router_extra` adds to the router's environment."""
    group = ProcessGroup(work / "logs")
    node_addr, router_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    node_env = {
        "MESH_NODE_ID": "node-1",
        "MESH_NODE_LISTEN": node_addr,
        "WA_URL": sandbox,
        "SESSION_STORAGE_PATH": str(work / "sessions"),
        "LOG_LEVEL": "WARNING",
    }
    router_env = {
        "MESH_ROUTER_LISTEN": router_addr,
        "MESH_NODES": node_addr,
        "MESH_API_TOKENS": f"bench:{TOKEN}",
        "LOG_LEVEL": "WARNING",
        **(router_extra or {}),
    }
    client_creds = node_creds = None
    node_md: tuple[tuple[str, str], ...] = ()
    if tls:
        ca = Authority(work / "ca")
        node_env.update(ca.mtls_env(ca.issue("node-1")))
        router_env.update(ca.mtls_env(ca.issue("router-1", role="router")))
        public = ca.issue("router-public", role="public")
        router_env.update(MESH_TLS_CERT=str(public.cert), MESH_TLS_KEY=str(public.key))
        client_creds = grpc.ssl_channel_credentials(ca.ca.read_bytes())
        bench = ca.issue("bench", role="router")
        node_creds = grpc.ssl_channel_credentials(
            ca.ca.read_bytes(), bench.key.read_bytes(), bench.cert.read_bytes()
        )
    else:
        node_env["MESH_NODE_SECRET"] = router_env["MESH_NODE_SECRET"] = SECRET
        node_md = (("x-mesh-node-secret", SECRET),)
    node = group.spawn("node", ["mesh-node"], node_env)
    wait_serving(node_addr, node, "node", credentials=node_creds)
    router = group.spawn("router", ["mesh-router"], router_env)
    wait_serving(router_addr, router, "router", credentials=client_creds)
    return Mesh(group, router_addr, node_addr, router.pid, client_creds, node_creds, node_md)


def channel(address: str, creds: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    if creds is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, creds)


async def measure(mesh: Mesh, calls: int, streams: int) -> tuple[Figures, Figures]:
    """(through the router, at the node)."""
    async with (
        channel(mesh.router, mesh.client_creds) as rch,
        channel(mesh.node, mesh.node_creds) as nch,
    ):
        api = mesh_pb2_grpc.SessionMeshStub(rch)
        node = node_pb2_grpc.SessionNodeStub(nch)
        await api.CreateSession(mesh_pb2.CreateSessionRequest(session_id="b1"), metadata=MD)

        async def via_router() -> None:
            await api.GetSession(mesh_pb2.GetSessionRequest(session_id="b1"), metadata=MD)

        async def at_node() -> None:
            request = node_pb2.NodeSessionRequest(tenant="bench", session_id="b1")
            await node.GetSession(request, metadata=mesh.node_md)

        async def watch_router() -> None:
            call = api.WatchSession(mesh_pb2.WatchSessionRequest(session_id="b1"), metadata=MD)
            await call.read()
            call.cancel()

        async def watch_node() -> None:
            request = node_pb2.NodeWatchRequest(tenant="bench", session_id="b1")
            call = node.WatchSession(request, metadata=mesh.node_md)
            await call.read()
            call.cancel()

        async def times(fn: Any, n: int) -> list[float]:
            for _ in range(min(100, n)):  # warm up: connections, caches, the JIT of nothing
                await fn()
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                await fn()
                out.append((time.perf_counter() - t0) * 1000)
            return out

        # Interleaved in rounds, so that load from elsewhere falls on both alike (short rounds:
        # on a shared machine the load changes within a minute).
        r_unary, n_unary, r_stream, n_stream = [], [], [], []
        rounds = ROUNDS
        for _ in range(rounds):
            r_unary += await times(via_router, calls // rounds)
            n_unary += await times(at_node, calls // rounds)
            r_stream += await times(watch_router, streams // rounds)
            n_stream += await times(watch_node, streams // rounds)
        return Figures(r_unary, r_stream), Figures(n_unary, n_stream)


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if os.path.exists(found) else None


def run(args: argparse.Namespace) -> dict[str, tuple[Figures, Figures]]:
    out: dict[str, tuple[Figures, Figures]] = {}
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as tmp:
        work = Path(tmp)
        sb_group = ProcessGroup(work / "sb-logs")
        sb_port = free_port()
        sandbox = f"http://127.0.0.1:{sb_port}/"
        sb = sb_group.spawn("sandbox", ["mesh-sandbox", "--port", str(sb_port)])
        wait_http(sandbox + "healthz", sb, "sandbox")
        try:
            for name, tls in (("plain", False), ("tls", True)):
                mesh = start(work / name, tls, sandbox)
                spy = None
                try:
                    spy_exe = py_spy()
                    if args.profile and spy_exe:
                        os.makedirs(args.profile, exist_ok=True)
                        spy = subprocess.Popen(
                            [spy_exe, "record", "-p", str(mesh.router_pid), "-r", "250",
                             "-f", "raw", "-o", f"{args.profile}/router-{name}.txt"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        )  # fmt: skip
                        time.sleep(1)
                    out[name] = asyncio.run(measure(mesh, args.calls, args.streams))
                finally:
                    if spy is not None:
                        spy.send_signal(2)
                        spy.wait(60)
                    mesh.group.stop_all(10)
        finally:
            sb_group.stop_all(10)
    return out


def top(profile: Path, n: int = 15) -> list[tuple[str, float, float]]:
    """(function, inclusive %, self %) of py-spy's raw (collapsed) stacks, busiest first."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                  + ")" if " (" in f else f for f in stack.split(";")]  # fmt: skip
        total += int(count)
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
    ranked = sorted(inclusive, key=lambda f: -own.get(f, 0))[:n]
    return [(f, 100 * inclusive[f] / total, 100 * own.get(f, 0) / total) for f in ranked]


def row(label: str, values: list[float]) -> str:
    return f"| {label} | {percentile(values, 50):.2f} | {percentile(values, 99):.2f} |"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--profile", default=os.environ.get("MESH_BENCH_PROFILE"))
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    results = run(args)
    load_after = os.getloadavg()[0]
    if args.profile:
        for name in results:
            path = Path(args.profile) / f"router-{name}.txt"
            if path.exists():
                print(f"--- router profile, {name} (function, inclusive %, self %)")
                for fn, inc, own in top(path):
                    print(f"{own:5.1f} {inc:5.1f}  {fn}")
    lines = [
        "## Router overhead (`bench/router_overhead.py`)",
        "",
        f"Machine: {machine()}. One node, one router and the sandbox as processes on loopback; "
        f"{args.calls} GetSession calls and {args.streams} WatchSession setups (call to first "
        f"event) each way, one at a time, interleaved in {ROUNDS} rounds; load average "
        f"{load_before:.1f} at the start, {load_after:.1f} at the end. `plain`: no TLS (the node "
        "checks a shared secret); `tls`: TLS on the router's API, mutual TLS router to node "
        "(the node answered directly over mTLS too). Overhead = through the router minus at "
        "the node, per percentile.",
        "",
        "| call | p50 ms | p99 ms |",
        "|---|---|---|",
    ]
    for name, (router, node) in results.items():
        lines += [
            row(f"{name}: GetSession through the router", router.unary),
            row(f"{name}: GetSession at the node", node.unary),
            row(f"{name}: WatchSession setup through the router", router.stream),
            row(f"{name}: WatchSession setup at the node", node.stream),
        ]
    lines += ["", "| overhead | p50 ms | p99 ms |", "|---|---|---|"]
    for name, (router, node) in results.items():
        for what, r, n in (("GetSession", router.unary, node.unary),
                           ("WatchSession setup", router.stream, node.stream)):  # fmt: skip
            p50 = percentile(r, 50) - percentile(n, 50)
            p99 = percentile(r, 99) - percentile(n, 99)
            lines.append(f"| {name}: {what} | {p50:.2f} | {p99:.2f} |")
    if "plain" in results and "tls" in results:
        lines += ["", "| TLS and mTLS cost (tls minus plain, through the router) | p50 ms | p99 ms |",
                  "|---|---|---|"]  # fmt: skip
        for what, attr in (("GetSession", "unary"), ("WatchSession setup", "stream")):
            t, p = getattr(results["tls"][0], attr), getattr(results["plain"][0], attr)
            lines.append(
                f"| {what} | {percentile(t, 50) - percentile(p, 50):.2f} | "
                f"{percentile(t, 99) - percentile(p, 99):.2f} |"
            )
    body = "\n".join(lines)
    print(body)
    write_section("router-overhead", body)


if __name__ == "__main__":
    main()
