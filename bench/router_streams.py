"""Router memory while it holds many WatchSession streams: RSS and PSS of the router process
alone, before, while holding, and after, and how many streams ended while held.

The sandbox, one node and one router run as processes (`mesh-sandbox`, `mesh-node`,
`mesh-router`) on loopback, the clients here, all on one connection to the router as an
application server would hold them. A few sessions are created (they show QR codes) and the
streams spread over them; each stream must receive its session's first event before it counts
as open. Then they are held, and any that ends (cancelled or failed) is counted.

    python bench/router_streams.py [--streams 5000] [--sessions 20] [--hold 60] [--tls]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import router_overhead
from bench.report import machine, write_section
from node.memory import pss_bytes, rss_bytes
from sessionmesh.procs import ProcessGroup, wait_http
from sessionmesh.v1 import mesh_pb2, mesh_pb2_grpc
from tests.helpers import Watcher, free_port, wait_for

MD = router_overhead.MD  # the token the mesh started by router_overhead.start accepts
MIB = 1024 * 1024


def memory(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of one process in MiB, from /proc/PID/smaps_rollup."""
    return rss_bytes(pid) / MIB, pss_bytes(pid) / MIB


def start(work: Path, sandbox: str, streams: int, tls: bool) -> tuple[ProcessGroup, str, int, Any]:
    mesh = router_overhead.start(
        work, tls, sandbox, router_extra={"MESH_TENANT_MAX_STREAMS": str(streams)}
    )
    return mesh.group, mesh.router, mesh.router_pid, mesh.client_creds


async def measure(address: str, pid: int, creds: Any, args: argparse.Namespace) -> dict[str, float]:
    channel = (
        grpc.aio.secure_channel(address, creds) if creds else grpc.aio.insecure_channel(address)
    )
    async with channel:
        api = mesh_pb2_grpc.SessionMeshStub(channel)
        for i in range(args.sessions):
            request = mesh_pb2.CreateSessionRequest(session_id=f"m{i}")
            await api.CreateSession(request, metadata=MD, timeout=120)
        # A few streams first, so that what the router loads on its first stream is not
        # counted per stream.
        warm = [
            Watcher(api.WatchSession(mesh_pb2.WatchSessionRequest(session_id="m0"), metadata=MD))
            for _ in range(10)
        ]
        await wait_for(lambda: all(w.events for w in warm), timeout=120, what="warm-up streams")
        for w in warm:
            w.call.cancel()
        await asyncio.gather(*(w.aclose() for w in warm))
        rss0, pss0 = memory(pid)
        t0 = time.monotonic()
        made: list[Watcher] = []
        for i in range(args.streams):
            request = mesh_pb2.WatchSessionRequest(session_id=f"m{i % args.sessions}")
            made.append(Watcher(api.WatchSession(request, metadata=MD, timeout=None)))
            if len(made) % 500 == 0:
                await asyncio.sleep(0)  # let the reads start as the streams open
        try:
            await wait_for(
                lambda: all(w.events or w.error for w in made),
                timeout=600,
                what=f"{args.streams} streams each with its first event",
            )
            opened = time.monotonic() - t0
            failed_open = sum(1 for w in made if w.error is not None)
            rss1, pss1 = memory(pid)
            deadline = time.monotonic() + args.hold
            peak_rss, peak_pss = rss1, pss1
            while time.monotonic() < deadline:
                await asyncio.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
                rss, pss = memory(pid)
                peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            ended = sum(1 for w in made if w.error is not None) - failed_open
            events = sum(len(w.events) for w in made)
        finally:
            for w in made:
                w.call.cancel()
            await asyncio.gather(*(w.aclose() for w in made))
        # The router lets go of closed streams as it hears of them; wait a bounded while for
        # half the growth to go, and report what is left either way.
        with contextlib.suppress(AssertionError):
            await wait_for(
                lambda: memory(pid)[0] < rss0 + (peak_rss - rss0) / 2,
                timeout=10,
                what="router memory to fall after closing",
            )
        rss2, pss2 = memory(pid)
    return {
        "opened_s": opened,
        "failed_open": failed_open,
        "ended": ended,
        "events": events,
        "rss0": rss0,
        "pss0": pss0,
        "rss1": rss1,
        "pss1": pss1,
        "peak_rss": peak_rss,
        "peak_pss": peak_pss,
        "rss2": rss2,
        "pss2": pss2,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--streams", type=int, default=5000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--hold", type=float, default=60.0, help="seconds to hold them open")
    ap.add_argument("--tls", action="store_true", help="TLS on the API, mTLS to the node")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as tmp:
        work = Path(tmp)
        sb_group = ProcessGroup(work / "sb-logs")
        sb_port = free_port()
        sandbox = f"http://127.0.0.1:{sb_port}/"
        sb = sb_group.spawn("sandbox", ["mesh-sandbox", "--port", str(sb_port)])
        wait_http(sandbox + "healthz", sb, "sandbox")
        try:
            group, address, pid, creds = start(work / "mesh", sandbox, args.streams, args.tls)
            try:
                r = asyncio.run(measure(address, pid, creds, args))
            finally:
                group.stop_all(10)
        finally:
            sb_group.stop_all(10)
    load_after = os.getloadavg()[0]
    n = args.streams
    per_rss = (r["rss1"] - r["rss0"]) * MIB / n / 1024
    per_pss = (r["pss1"] - r["pss0"]) * MIB / n / 1024
    body = "\n".join(
        [
            f"## Router memory with {n:,} watch streams (`bench/router_streams.py`)",
            "",
            f"`python bench/router_streams.py --streams {n} --sessions {args.sessions} "
            f"--hold {args.hold:g}{' --tls' if args.tls else ''}`. Machine: {machine()}. "
            "Sandbox, one node and one router as processes on loopback; the clients in the "
            f"bench's process on one connection, {n} WatchSession streams over "
            f"{args.sessions} sessions (showing QR codes), each counted open at its first "
            f"event, then held {args.hold:g} s. Memory is the router process's alone "
            "(/proc/PID/smaps_rollup), after 10 warm-up streams; per stream = (while held "
            f"minus before) / streams. Load average {load_before:.1f} at the start, "
            f"{load_after:.1f} at the end.",
            "",
            "| streams | opened in | ended while opening | ended while held | "
            "router RSS before | while held | peak | after closing | per stream (RSS) | "
            "router PSS before | while held | per stream (PSS) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            f"| {n} | {r['opened_s']:.1f} s | {r['failed_open']:.0f} | {r['ended']:.0f} | "
            f"{r['rss0']:.0f} MiB | {r['rss1']:.0f} MiB | {r['peak_rss']:.0f} MiB | "
            f"{r['rss2']:.0f} MiB | {per_rss:.1f} KiB | {r['pss0']:.0f} MiB | "
            f"{r['pss1']:.0f} MiB | {per_pss:.1f} KiB |",
        ]
    )
    print(body)
    write_section("router-streams", body)


if __name__ == "__main__":
    main()
