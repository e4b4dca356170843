"""Webhook figures: outbox throughput to one receiver, and publish-to-received latency.

For each backend (SQLite file; Redis, the system's redis-server on a free port) the receiver
(`bench/webhook_receiver.py`) and one dispatcher (`mesh-webhooks`) run as their own processes
on loopback; this process plays the nodes' publisher, through `webhooks.publisher.Publisher`.

Throughput: `--deliveries` events of `--sessions` sessions are queued first, then the
dispatcher starts; deliveries per second between the first and the last arrival.
Latency: with the dispatcher running and the receiver healthy, one event every
1/`--rate` s; the time from the event (as its envelope says) to its arrival at the receiver.

`measure_latency(publish)` takes any coroutine that publishes one event and returns its
session id, so the end-to-end "inbound message to webhook" figure can reuse it once the node
publishes real messages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine, percentile, write_section
from node.crypto import SnapshotKeys, new_key_spec
from sessionmesh.cluster import start_redis
from sessionmesh.procs import ProcessGroup
from sessionmesh.redis_conn import RedisSettings, create_redis
from sessionmesh.v1 import common_pb2 as pb
from webhooks.model import Endpoint, new_webhook_id
from webhooks.publisher import Publisher
from webhooks.redis_store import RedisStore
from webhooks.registry import new_secret
from webhooks.sealing import Sealer
from webhooks.sqlite_store import SqliteStore
from webhooks.store import WebhookStore

HOST = "127.0.0.1"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def get_stats(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/stats", timeout=10) as r:
        return dict(json.loads(r.read()))


def reset(port: int) -> None:
    urllib.request.urlopen(
        urllib.request.Request(f"http://{HOST}:{port}/reset", method="POST"), timeout=10
    ).read()


def wait_receiver(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            get_stats(port)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Events:
    def __init__(self) -> None:
        self.seqs: dict[str, int] = {}

    def message(self, session_id: str) -> pb.SessionEvent:
        self.seqs[session_id] = self.seqs.get(session_id, 0) + 1
        e = pb.SessionEvent(session_id=session_id, seq=self.seqs[session_id])
        e.time.GetCurrentTime()
        e.message.CopyFrom(
            pb.Message(
                id=f"{session_id}-{e.seq}",
                direction=pb.INBOUND,
                chat_id="6281234567890@c.us",
                type=pb.TEXT,
                text="a message of an ordinary length, about sixty characters",
            )
        )
        return e


async def queue(publisher: Publisher, total: int, sessions: int) -> None:
    """Queue `total` message events spread over `sessions` sessions, 500 a batch."""
    events = Events()
    batch: list[tuple[str, pb.SessionEvent]] = []
    for i in range(total):
        batch.append(("bench", events.message(f"s{i % sessions}")))
        if len(batch) == 500:
            await publisher.publish(batch)
            batch = []
    if batch:
        await publisher.publish(batch)


async def drained(port: int, total: int) -> tuple[float, float]:
    """Wait for `total` distinct deliveries; (deliveries/s first to last arrival, span s)."""
    deadline = time.monotonic() + 600
    while True:
        stats = get_stats(port)
        if int(stats["unique"]) >= total:  # type: ignore[call-overload]
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {stats['unique']} of {total} delivered")
        await asyncio.sleep(0.2)
    span = float(stats["last"]) - float(stats["first"])  # type: ignore[arg-type]
    return total / span, span


async def measure_latency(
    publish: Callable[[int], Awaitable[object]], port: int, count: int, rate: float
) -> list[float]:
    """Publish `count` events at `rate` per second; the receiver's lags once all arrived."""
    reset(port)
    started = time.monotonic()
    for n in range(count):
        await publish(n)
        pause = started + (n + 1) / rate - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
    deadline = time.monotonic() + 120
    while True:
        stats = get_stats(port)
        if int(stats["unique"]) >= count:  # type: ignore[call-overload]
            return [float(x) for x in stats["lags"]]  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {stats['unique']} of {count} arrived")
        await asyncio.sleep(0.1)


async def bench_backend(
    kind: str, group: ProcessGroup, work: Path, args: argparse.Namespace
) -> dict[str, float]:
    key = new_key_spec("bench1")
    env = {
        "MESH_WEBHOOK_KEY": key,
        "MESH_WEBHOOK_ALLOW": "127.0.0.0/8",
        "MESH_WEBHOOK_CONCURRENCY": str(args.concurrency),
        "MESH_REDIS_PREFIX": f"bench{int(time.time())}:",
    }
    sealer = Sealer(SnapshotKeys.parse(key))
    store: WebhookStore
    if kind == "sqlite":
        path = work / "webhooks.db"
        env["MESH_WEBHOOK_DB"] = str(path)
        store = SqliteStore(path, sealer)
    else:
        url = os.environ.get("REDIS_URL") or start_redis(group, work)
        env["REDIS_URL"] = url
        store = RedisStore(
            create_redis(RedisSettings.from_env({"REDIS_URL": url})),
            sealer,
            prefix=env["MESH_REDIS_PREFIX"],
        )
    port = free_port()
    group.spawn(f"receiver-{kind}", ["python", "-m", "bench.webhook_receiver", str(port)])
    wait_receiver(port)
    hook = Endpoint(
        id=new_webhook_id(),
        tenant="bench",
        url=f"http://{HOST}:{port}/hook",
        events=("message",),
        secret=new_secret(),
        created_at=time.time() - 60,
    )
    await store.add_hook(hook)
    publisher = Publisher(store)
    results: dict[str, float] = {}
    try:
        # Throughput: a full outbox first, then the dispatcher starts and drains it.
        await queue(publisher, args.deliveries, args.sessions)
        group.spawn(f"dispatcher-{kind}", ["mesh-webhooks"], env)
        rate, span = await drained(port, args.deliveries)
        results["throughput"], results["span"] = rate, span
        # Latency with a healthy receiver and an idle outbox.
        events = Events()

        async def one(n: int) -> None:
            await publisher.publish([("bench", events.message(f"l{n % 10}"))])

        lags = await measure_latency(one, port, args.latency_events, args.rate)
        results["p50"], results["p95"] = percentile(lags, 50), percentile(lags, 95)
        results["max"] = max(lags)
    finally:
        await store.aclose()
    return results


async def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for kind in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix=f"mesh-bench-wh-{kind}-") as tmp:
            work = Path(tmp)
            with ProcessGroup(work / "logs") as group:
                out[kind] = await bench_backend(kind, group, work, args)
                print(kind, {k: round(v, 4) for k, v in out[kind].items()}, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--deliveries", type=int, default=10_000)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency-events", type=int, default=500)
    ap.add_argument("--rate", type=float, default=50.0, help="events per second (latency)")
    ap.add_argument("--backends", default="sqlite,redis")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    results = asyncio.run(run(args))
    names = {"sqlite": "SQLite file (make run)", "redis": "Redis Stream (make cluster)"}
    lines = [
        "## Webhooks: outbox throughput and delivery latency (`bench/webhooks.py`)",
        "",
        f"Machine: {machine()}.",
        "",
        f"Command: `make bench` (`python bench/webhooks.py --deliveries {args.deliveries} "
        f"--sessions {args.sessions} --latency-events {args.latency_events} "
        f"--rate {args.rate:g}`). A receiver (answers 200 at once) and one dispatcher "
        "(`mesh-webhooks`, MESH_WEBHOOK_CONCURRENCY="
        f"{args.concurrency}) run as their own processes on loopback; this process publishes "
        "as a node does. Each delivery is signed (Standard Webhooks and WAHA's HMAC-SHA512) "
        "and its body sealed in the outbox.",
        "",
        "| outbox | throughput to one receiver | p50 publish → received | p95 | max |",
        "|---|---|---|---|---|",
    ]
    for kind, r in results.items():
        lines.append(
            f"| {names.get(kind, kind)} | {r['throughput']:,.0f} deliveries/s "
            f"({args.deliveries} in {r['span']:.1f} s, {args.sessions} sessions) | "
            f"{r['p50'] * 1000:.1f} ms | {r['p95'] * 1000:.1f} ms | {r['max'] * 1000:.0f} ms |"
        )
    lines += [
        "",
        "Goals: at least 1,000 deliveries/s to one receiver; p95 at most 500 ms from an inbound "
        "message to its webhook with a healthy receiver (this figure is the outbox's part: the "
        "event's time to its arrival; the end-to-end one follows once nodes publish messages).",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("webhooks", body)


if __name__ == "__main__":
    main()
