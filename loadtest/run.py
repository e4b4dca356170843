"""`make loadtest PROFILE=1000|3000|smoke`: the seed's tiers against a mesh this command starts.

Two phases, each on a fresh mesh: a private redis-server on a free port (never the system's),
the sandbox at its calibrated page weight, real `mesh-node` processes with Chromium, routers,
and Locust (headless, CSV stats) driving accounts through the routers' gRPC API.

1. Browser capacity: one browser-backed node; accounts are added in steps until first-QR p95
   passes 1.5 s, the machine's memory headroom drops under 20 %, the node saturates the CPU, or
   the time cap ends the ramp. Memory (PSS of the node and its Chromium) and CPU per step.
2. Control plane at the profile's users (active accounts: `--active-share` of them): two browser
   nodes hold as many sessions as the ramp found room for, simulated nodes (`loadtest.simnode`)
   the rest; two routers; messages, stops and restores, logouts; one browser node is killed
   (SIGKILL) mid-run and the failover of its sessions is timed; the console's pages are timed
   while the load runs.

Writes `<out>/loadtest.md`, `<out>/loadtest.json` and `<out>/loadtest/*.png|csv`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import redis

from loadtest import measure, report
from node.crypto import new_key_spec
from sessionmesh.cluster import start_redis
from sessionmesh.procs import ProcessGroup, free_port, wait_http, wait_serving
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2, mesh_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
CONSOLE_APP = ROOT / "console" / "app.py"
HOST = "127.0.0.1"
FIRST_QR_P95_LIMIT = 1.5
HEADROOM_LIMIT = 0.2
CPU_SATURATION = 0.9  # of the machine's cores, used by one node and its Chromium
# The CPU a step is judged by is read in a window after its links have settled: the cost of
# holding READY sessions (with their messages), not of linking them. Linking one account after
# another keeps a node near saturation at any count (1.6 cores at 5 sessions on 2 cores), which
# says nothing about how many it can hold; the first-QR limit is the one that judges linking.
STEADY_SETTLE = 5.0  # s after a step's last link before its CPU window


@dataclass(frozen=True)
class Profile:
    users: int
    ramp_step: int  # accounts added per ramp step
    ramp_max: int  # stop the ramp here even if no limit is hit
    ramp_cap: float  # s: the ramp's time cap
    browser_per_node: int  # at most this many browser sessions per node in phase 2
    sim_nodes: int
    run_time: float  # s of traffic in phase 2 after the accounts are linked
    page_weight: str = "calibrated"
    spawn_rate: float = 2.0  # accounts starting per second in phase 2
    past_limit: bool = True  # the ramp goes on past a latency or CPU limit, to its cap
    steady_window: float = 10.0  # s: each step's CPU window (see STEADY_SETTLE)


PROFILES = {
    # For tests only: light page, a handful of sessions; never written to docs/.
    "smoke": Profile(users=40, ramp_step=1, ramp_max=2, ramp_cap=90, browser_per_node=1,
                     sim_nodes=1, run_time=15, page_weight="light", spawn_rate=4.0,
                     steady_window=3.0),
    "1000": Profile(users=1000, ramp_step=5, ramp_max=120, ramp_cap=600, browser_per_node=12,
                    sim_nodes=2, run_time=180),
    "3000": Profile(users=3000, ramp_step=5, ramp_max=120, ramp_cap=600, browser_per_node=15,
                    sim_nodes=4, run_time=240),
}  # fmt: skip


def log(msg: str) -> None:
    print(f"[loadtest {dt.datetime.now(dt.UTC):%H:%M:%S}] {msg}", flush=True)


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return out


@dataclass
class Mesh:
    """One mesh started for a phase, with what the samplers need."""

    group: ProcessGroup
    workdir: Path
    redis_url: str
    sandbox: str
    token: str
    nodes: dict[str, str] = field(default_factory=dict)  # name -> address
    routers: dict[str, str] = field(default_factory=dict)
    key_spec: str = ""

    def pid(self, name: str) -> int:
        part = self.group.part(name)
        assert part is not None
        return part.proc.pid


def start_mesh(workdir: Path, page_weight: str, phase: str) -> Mesh:
    group = ProcessGroup(workdir / "logs" / phase)
    token = "lt-" + secrets.token_urlsafe(24)
    redis_url = start_redis(group, workdir / phase, secrets.token_urlsafe(16))
    sb_port = free_port()
    sandbox = f"http://{HOST}:{sb_port}/"
    sb = group.spawn(
        "sandbox", ["mesh-sandbox", "--port", str(sb_port), "--page-weight", page_weight]
    )
    wait_http(sandbox + "healthz", sb, "sandbox")
    return Mesh(group, workdir, redis_url, sandbox, token, key_spec=new_key_spec("loadtest1"))


def add_node(mesh: Mesh, name: str, capacity: int) -> None:
    address = f"{HOST}:{free_port()}"
    env = {
        "MESH_NODE_ID": name,
        "MESH_NODE_LISTEN": address,
        "WA_URL": mesh.sandbox,
        "AUTH_STRATEGY": "remoteauth",
        "REDIS_URL": mesh.redis_url,
        "MESH_SNAPSHOT_KEY": mesh.key_spec,
        "MAX_CONCURRENT_SESSIONS": str(capacity),
        "SESSION_STORAGE_PATH": str(mesh.workdir / "sessions" / name),
        "MESH_HEARTBEAT_INTERVAL": "1",
        "LOG_LEVEL": "WARNING",
    }
    proc = mesh.group.spawn(name, ["mesh-node"], env)
    mesh.nodes[name] = address
    wait_serving(address, proc, name, timeout=120)


def add_simnode(mesh: Mesh, name: str, capacity: int) -> None:
    port = free_port()
    argv = ["python", "-m", "loadtest.simnode", "--node-id", name, "--capacity", str(capacity),
            "--listen", f"{HOST}:{port}", "--redis-url", mesh.redis_url]  # fmt: skip
    proc = mesh.group.spawn(name, argv)
    mesh.nodes[name] = f"{HOST}:{port}"
    wait_serving(mesh.nodes[name], proc, name, timeout=60)


def add_router(mesh: Mesh, name: str) -> None:
    address = f"{HOST}:{free_port()}"
    env = {
        "MESH_ROUTER_LISTEN": address,
        "REDIS_URL": mesh.redis_url,
        "MESH_API_TOKENS": f"lt:{mesh.token}",
        "MESH_ADMIN_TENANTS": "lt",
        "LOG_LEVEL": "WARNING",
    }
    proc = mesh.group.spawn(name, ["mesh-router"], env)
    mesh.routers[name] = address
    wait_serving(address, proc, name, timeout=60)


def ready_on(mesh: Mesh, node_id: str) -> int:
    """READY sessions on `node_id` now, as the first router lists them."""
    md = (("authorization", f"Bearer {mesh.token}"),)
    count, token = 0, ""
    with grpc.insecure_channel(next(iter(mesh.routers.values()))) as channel:
        stub = mesh_pb2_grpc.SessionMeshStub(channel)
        while True:
            page = stub.ListSessions(
                mesh_pb2.ListSessionsRequest(page_size=500, page_token=token),
                metadata=md,
                timeout=30,
            )
            count += sum(1 for s in page.sessions if s.node_id == node_id and s.state == pb.READY)
            token = page.next_page_token
            if not token:
                return count


def lease_lapses(mesh: Mesh, node_id: str) -> int:
    """Sessions the node closed because their lease lapsed (it was starved or cut off)."""
    path = mesh.group.logs / f"{node_id}.log"
    try:
        return path.read_text(errors="replace").count("lease lapsed")
    except OSError:
        return 0


def cluster_sessions(mesh: Mesh) -> dict[str, int]:
    """Sessions per node as the first router reports them (GetClusterStatus)."""
    address = next(iter(mesh.routers.values()))
    with grpc.insecure_channel(address) as channel:
        stub = mesh_pb2_grpc.SessionMeshStub(channel)
        reply = stub.GetClusterStatus(
            mesh_pb2.GetClusterStatusRequest(),
            metadata=(("authorization", f"Bearer {mesh.token}"),),
            timeout=10,
        )
    return {n.node_id: n.sessions for n in reply.nodes}


class Locust:
    """A headless Locust run whose user count `run.py` sets through a control file."""

    def __init__(self, mesh: Mesh, name: str, csv_prefix: Path, env: dict[str, str]) -> None:
        self.control = mesh.workdir / f"{name}.control"
        self.events = mesh.workdir / f"{name}.events.jsonl"
        self.control.write_text("0 1")
        csv_prefix.parent.mkdir(parents=True, exist_ok=True)
        self.proc = mesh.group.spawn(
            f"locust-{name}",
            ["locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
             "--csv", str(csv_prefix), "--loglevel", "WARNING", "--stop-timeout", "5"],
            {
                "LOADTEST_ROUTERS": ",".join(mesh.routers.values()),
                "LOADTEST_TOKEN": mesh.token,
                "LOADTEST_SANDBOX": mesh.sandbox,
                "LOADTEST_EVENTS": str(self.events),
                "LOADTEST_CONTROL": str(self.control),
                "LOADTEST_PREFIX": name,
                **env,
            },
        )  # fmt: skip

    def users(self, n: int, rate: float) -> None:
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(f"{n} {rate}")
        tmp.replace(self.control)

    def read(self) -> list[dict[str, Any]]:
        return read_events(self.events)

    def stop(self) -> None:
        self.control.write_text("stop")
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Sampler(threading.Thread):
    """Every `every` s: sessions per node, each node's and router's PSS and CPU, Redis ops."""

    def __init__(self, mesh: Mesh, every: float = 3.0) -> None:
        super().__init__(daemon=True)
        self.mesh = mesh
        self.every = every
        self.rows: list[dict[str, Any]] = []
        self.halt = threading.Event()
        self.redis = redis.Redis.from_url(mesh.redis_url)
        self.t0 = time.time()

    def run(self) -> None:
        last_cpu: dict[str, float] = {}
        last_t = time.monotonic()
        while not self.halt.wait(self.every):
            now = time.monotonic()
            row: dict[str, Any] = {"t": round(time.time() - self.t0, 1), "procs": {}}
            for name in [*self.mesh.nodes, *self.mesh.routers]:
                part = self.mesh.group.part(name)
                if part is None or part.proc.poll() is not None:
                    continue
                cpu = measure.tree_cpu_seconds(part.proc.pid)
                cores = (cpu - last_cpu[name]) / (now - last_t) if name in last_cpu else None
                last_cpu[name] = cpu
                row["procs"][name] = {"pss": measure.tree_pss(part.proc.pid), "cores": cores}
            last_t = now
            try:
                stats = self.redis.info("stats")
                row["redis_commands"] = int(stats["total_commands_processed"])
                row["redis_ops"] = int(stats["instantaneous_ops_per_sec"])
            except redis.RedisError:
                pass
            try:
                row["sessions"] = cluster_sessions(self.mesh)
            except grpc.RpcError:
                row["sessions"] = {}
            row["headroom"] = measure.memory_headroom()
            row["load1"] = measure.load1()
            self.rows.append(row)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)


def percentiles(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": report.percentile(values, 50),
        "p95": report.percentile(values, 95),
        "p99": report.percentile(values, 99),
    }


def latencies(events: list[dict[str, Any]], kind: str, side: str) -> list[float]:
    """Seconds of every `kind` event on browser-backed or simulated (`sim-*`) nodes."""
    sim = side == "simulated"
    return [e["s"] for e in events if e["kind"] == kind and e["node"].startswith("sim-") == sim]


# -- phase 1 ------------------------------------------------------------------------------


def browser_ramp(prof: Profile, workdir: Path, out: Path) -> dict[str, Any]:
    mesh = start_mesh(workdir, prof.page_weight, "ramp")
    try:
        add_node(mesh, "node-1", capacity=1000)
        add_router(mesh, "router-1")
        node_pid = mesh.pid("node-1")
        cores = os.cpu_count() or 1
        time.sleep(2)  # the warm page settles before the baseline
        samples: list[dict[str, Any]] = [
            {"sessions": 0, "memory_bytes": measure.tree_pss(node_pid), "cpu_cores": 0.0,
             "first_qr_p95_s": None, "headroom": measure.memory_headroom(), "t": 0.0}
        ]  # fmt: skip
        locust = Locust(
            mesh,
            "ramp",
            out / "loadtest" / "locust-browser-ramp",
            {"LOADTEST_STOP_SHARE": "0", "LOADTEST_LOGOUT_SHARE": "0",
             "LOADTEST_SEND_INTERVAL": "60", "LOADTEST_INBOUND_SHARE": "0.3"},
        )  # fmt: skip
        limit = "ramp_end"
        held = 0
        start = time.monotonic()
        target = 0
        while target < prof.ramp_max:
            if time.monotonic() - start > prof.ramp_cap:
                log("ramp: time cap reached")
                break
            target += prof.ramp_step
            step_t0 = time.monotonic()
            step_wall = time.time()
            cpu0 = measure.tree_cpu_seconds(node_pid)
            # One arrival at a time, the next once the previous is READY (or failed): the
            # first QR is timed with the node holding its sessions, not in a link storm.
            done: list[dict[str, Any]] = []
            for n in range(target - prof.ramp_step + 1, target + 1):
                locust.users(n, rate=1.0)
                one_deadline = time.monotonic() + 240
                while time.monotonic() < one_deadline:
                    done = [e for e in locust.read() if e["kind"] in ("ready", "ready_failed")]
                    if len(done) >= n:
                        break
                    time.sleep(0.25)
            link_cpu = (measure.tree_cpu_seconds(node_pid) - cpu0) / (time.monotonic() - step_t0)
            time.sleep(STEADY_SETTLE)
            cpu1, window_t0 = measure.tree_cpu_seconds(node_pid), time.monotonic()
            time.sleep(prof.steady_window)
            cpu = (measure.tree_cpu_seconds(node_pid) - cpu1) / (time.monotonic() - window_t0)
            events = locust.read()
            linked = sum(1 for e in events if e["kind"] == "ready")
            ready = ready_on(mesh, "node-1")  # held now: a session can close after its link
            lapsed = lease_lapses(mesh, "node-1")
            qr_times = [e["s"] for e in events if e["kind"] == "first_qr" and e["t"] >= step_wall]
            p95 = report.percentile(qr_times, 95) if qr_times else None
            sample: dict[str, Any] = {
                "sessions": ready,
                "memory_bytes": measure.tree_pss(node_pid),
                "cpu_cores": round(cpu, 3),
                "link_cpu_cores": round(link_cpu, 3),
                "first_qr_p95_s": None if p95 is None else round(p95, 3),
                "headroom": round(measure.memory_headroom(), 3),
                "t": round(time.monotonic() - start, 1),
                "load1": measure.load1(),
                "linked": linked,
                "lease_lapses": lapsed,
            }
            samples.append(sample)
            log(f"ramp: {ready} READY (target {target}), first-QR p95 {p95}, "
                f"PSS {sample['memory_bytes'] / 2**20:.0f} MiB, {cpu:.2f} cores held "
                f"({link_cpu:.2f} linking), "
                f"headroom {sample['headroom']:.2f}")  # fmt: skip
            if ready < target:
                log(f"ramp: {ready} of {target} READY now ({linked} linked in all, "
                    f"{lapsed} sessions closed by a lapsed lease)")  # fmt: skip
            over = None
            if sample["headroom"] < HEADROOM_LIMIT:  # first: it is the one the ramp stops at
                over = "memory_headroom"
            elif p95 is not None and p95 > FIRST_QR_P95_LIMIT:
                over = "first_qr_p95"
            elif cpu >= CPU_SATURATION * cores:
                over = "cpu"
            sample["within_limits"] = over is None and limit == "ramp_end"
            if over is not None and limit == "ramp_end":
                limit = over
                log(f"ramp: limit hit: {limit}; held within the limits: {held}")
            if over is None and limit == "ramp_end":
                held = ready
            # Past a latency or CPU limit the ramp goes on to its cap, mapping memory and CPU
            # for the planner; memory is the one limit it stops at (the machine is shared).
            if over == "memory_headroom" or (limit != "ramp_end" and not prof.past_limit):
                break
        else:
            log("ramp: reached the profile's ramp maximum")
        locust.stop()
        events = locust.read()
        return {
            "limit": limit,
            "sessions_per_node": held,
            "thresholds": {
                "first_qr_p95_s": FIRST_QR_P95_LIMIT,
                "memory_headroom": HEADROOM_LIMIT,
                "cpu_saturation": CPU_SATURATION,
            },
            "samples": samples,
            "step": prof.ramp_step,
            "links_attempted": sum(1 for e in events if e["kind"] in ("ready", "ready_failed")),
            "links_ready": sum(1 for e in events if e["kind"] == "ready"),
            "lease_lapses": lease_lapses(mesh, "node-1"),
            "events": events,
        }
    finally:
        mesh.group.stop_all(timeout=30)


# -- phase 2 ------------------------------------------------------------------------------


def failover(mesh: Mesh, victim: str, timeout: float = 180) -> dict[str, Any]:
    """SIGKILL `victim`; seconds until each of its READY sessions is READY on another node.

    Every router is asked: the one that won the failover claim knows where each session went
    (a simulated node writes no directory entry the other could read)."""
    md = (("authorization", f"Bearer {mesh.token}"),)
    channels = [grpc.insecure_channel(a) for a in mesh.routers.values()]
    try:
        stubs = [mesh_pb2_grpc.SessionMeshStub(c) for c in channels]
        listed: list[Any] = []
        token = ""
        while True:
            page = stubs[0].ListSessions(
                mesh_pb2.ListSessionsRequest(page_size=500, page_token=token),
                metadata=md,
                timeout=30,
            )
            listed.extend(page.sessions)
            token = page.next_page_token
            if not token:
                break
        # Asked again one by one: what the victim holds READY right now.
        moving = set()
        for s in listed:
            if s.node_id != victim:
                continue
            try:
                now = stubs[0].GetSession(
                    mesh_pb2.GetSessionRequest(session_id=s.session_id), metadata=md, timeout=10
                )
            except grpc.RpcError:
                continue
            if now.node_id == victim and now.state == pb.READY:
                moving.add(s.session_id)
        part = mesh.group.part(victim)
        assert part is not None
        log(
            f"failover: kill -9 {victim} (pid {part.proc.pid}) holding {len(moving)} READY sessions"
        )
        t0 = time.monotonic()
        killed_at = time.time()
        os.kill(part.proc.pid, signal.SIGKILL)
        part.proc.wait()
        back: dict[str, float] = {}
        where: dict[str, str] = {}
        while moving - back.keys() and time.monotonic() - t0 < timeout:
            for sid in sorted(moving - back.keys()):
                for stub in stubs:
                    try:
                        s = stub.GetSession(
                            mesh_pb2.GetSessionRequest(session_id=sid), metadata=md, timeout=10
                        )
                    except grpc.RpcError:
                        continue
                    again = s.ready_at.seconds + s.ready_at.nanos / 1e9 >= killed_at - 1
                    if s.state == pb.READY and s.node_id != victim and again:
                        back[sid] = time.monotonic() - t0
                        where[sid] = s.node_id
                        break
            time.sleep(0.25)
    finally:
        for c in channels:
            c.close()
    done = len(back) == len(moving)
    log(f"failover: {len(back)}/{len(moving)} back READY, last after "
        f"{max(back.values(), default=0):.1f} s")  # fmt: skip
    return {
        "killed_at": dt.datetime.fromtimestamp(killed_at, dt.UTC).strftime("%H:%M:%S"),
        "victim": victim,
        "sessions": len(moving),
        "recovered": len(back),
        "failover_s": round(max(back.values()), 2) if done and back else None,
        "p50_s": report.percentile(list(back.values()), 50) if back else None,
        "to_nodes": sorted(set(where.values())),
    }


def control_plane(
    prof: Profile, workdir: Path, out: Path, per_node: int, active: int
) -> dict[str, Any]:
    mesh = start_mesh(workdir, prof.page_weight, "control")
    try:
        browser_nodes = ["node-1", "node-2"]
        for name in browser_nodes:
            add_node(mesh, name, capacity=per_node)
        sims = [f"sim-{i}" for i in range(1, prof.sim_nodes + 1)]
        for name in sims:
            add_simnode(mesh, name, capacity=active)
        add_router(mesh, "router-1")
        add_router(mesh, "router-2")
        console_port = free_port()
        console_url = f"http://{HOST}:{console_port}/"
        console = mesh.group.spawn(
            "console",
            ["streamlit", "run", str(CONSOLE_APP), "--server.headless", "true",
             "--server.address", HOST, "--server.port", str(console_port),
             "--browser.gatherUsageStats", "false"],
            {"MESH_ROUTER": mesh.routers["router-1"], "MESH_TOKEN": mesh.token},
        )  # fmt: skip
        wait_http(console_url + "_stcore/health", console, "console")
        sampler = Sampler(mesh)
        sampler.start()
        t_start = time.monotonic()
        locust = Locust(mesh, "control", out / "loadtest" / "locust-control-plane", {})
        locust.users(active, rate=prof.spawn_rate)
        deadline = time.monotonic() + max(300.0, active / prof.spawn_rate * 3)
        while time.monotonic() < deadline:
            firsts = {e["sid"] for e in locust.read() if e["kind"] in ("ready", "ready_failed")}
            if len(firsts) >= active:
                break
            time.sleep(1)
        linked_at = time.monotonic() - t_start
        log(f"control plane: {active} accounts started in {linked_at:.0f} s")
        run_until = time.monotonic() + prof.run_time
        time.sleep(min(10.0, prof.run_time / 3))
        log("control plane: timing the console's pages")
        timing = subprocess.run(
            [sys.executable, "-m", "loadtest.console_timing", "--url", console_url,
             "--token", mesh.token, "--shots", str(workdir),
             "--router", mesh.routers["router-1"]],
            capture_output=True, text=True, timeout=600, cwd=ROOT,
        )  # fmt: skip
        try:
            timed = json.loads(timing.stdout.strip().splitlines()[-1])
            console_pages, console_calls = timed["pages"], timed["calls"]
        except (ValueError, IndexError, KeyError, TypeError):
            log(f"console timing failed: {timing.stderr[-2000:]}")
            console_pages, console_calls = {}, {}
        log(f"console pages: {console_pages}; the calls they make: {console_calls}")
        # The browser node holding the most sessions is the one killed.
        held = cluster_sessions(mesh)
        victim = max(browser_nodes, key=lambda n: (held.get(n, 0), n))
        fo = failover(mesh, victim, timeout=90 if prof.page_weight == "light" else 180)
        kill_t = round(time.time() - sampler.t0 - (fo["failover_s"] or 0), 1)
        while time.monotonic() < run_until:
            time.sleep(1)
        locust.stop()
        sampler.stop()
        events = locust.read()
        rows = sampler.rows
        deaths = [
            f"{f.stem}: {line.strip()}"
            for f in sorted(mesh.group.logs.glob("router-*.log"))
            for line in f.read_text(errors="replace").splitlines()
            if "declared dead" in line or "RemoteAuth sessions;" in line
        ]
        router_pss = [r["procs"]["router-1"]["pss"] for r in rows if "router-1" in r["procs"]]
        router_cores = [
            r["procs"]["router-1"]["cores"]
            for r in rows
            if "router-1" in r["procs"] and r["procs"]["router-1"]["cores"] is not None
        ]
        cmds = [(r["t"], r["redis_commands"]) for r in rows if "redis_commands" in r]
        ops = (cmds[-1][1] - cmds[0][1]) / (cmds[-1][0] - cmds[0][0]) if len(cmds) > 1 else 0.0
        starts = [
            e for e in events if e["kind"] in ("ready", "ready_failed", "restore", "restore_failed")
        ]
        ok = [e for e in starts if not e["kind"].endswith("_failed")]
        browser_held = max(
            (sum(v for k, v in r["sessions"].items() if not k.startswith("sim-")) for r in rows),
            default=0,
        )
        sim_held = max(
            (sum(v for k, v in r["sessions"].items() if k.startswith("sim-")) for r in rows),
            default=0,
        )
        return {
            "users": prof.users,
            "active_accounts": active,
            "browser_sessions": browser_held,
            "simulated_sessions": sim_held,
            "success_rate": round(len(ok) / len(starts), 4) if starts else 0.0,
            "first_qr_s": percentiles([e["s"] for e in events if e["kind"] == "first_qr"]),
            "ready_s": percentiles([e["s"] for e in events if e["kind"] == "ready"]),
            "redis_ops_per_s": round(ops, 1),
            "failover_s": fo["failover_s"],
            "router_cpu_cores": round(sum(router_cores) / len(router_cores), 3)
            if router_cores
            else 0.0,
            "router_memory_bytes": max(router_pss, default=0),
            "console_pages": console_pages,
            "console_calls": console_calls,
            "failover": {**fo, "at_s": kill_t, "router_log": deaths},
            "rows": rows,
            "events": events,
            "browser_per_node_cap": per_node,
            "split": {
                side: {
                    kind: percentiles(latencies(events, kind, side))
                    for kind in ("first_qr", "ready")
                }
                for side in ("browser", "simulated")
            },
        }
    finally:
        mesh.group.stop_all(timeout=30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="loadtest", description=__doc__)
    parser.add_argument("--profile", choices=tuple(PROFILES), default="1000")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the report goes")
    parser.add_argument("--active-share", type=float, default=0.10,
                        help="active accounts per user (the seed: 0.05-0.10)")  # fmt: skip
    parser.add_argument("--ramp-cap", type=float, default=None, help="s; the profile's if unset")
    parser.add_argument("--run-time", type=float, default=None, help="s of traffic in phase 2")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the mesh's logs and data here (default: a temp dir)")  # fmt: skip
    parser.add_argument("--send-interval", type=float, default=None,
                        help="s between one account's messages (LOADTEST_SEND_INTERVAL)")  # fmt: skip
    args = parser.parse_args(argv)
    prof = PROFILES[args.profile]
    overrides: dict[str, Any] = {}
    if args.ramp_cap is not None:
        overrides["ramp_cap"] = args.ramp_cap
    if args.run_time is not None:
        overrides["run_time"] = args.run_time
    if overrides:
        prof = Profile(**{**prof.__dict__, **overrides})
    if args.send_interval is not None:
        os.environ["LOADTEST_SEND_INTERVAL"] = str(args.send_interval)
    if args.profile == "smoke" and args.out.resolve() == (ROOT / "docs").resolve():
        sys.exit("loadtest: the smoke profile (light page) is for tests: give --out DIR")
    if shutil.which("redis-server") is None and not os.environ.get("REDIS_SERVER_BIN"):
        sys.exit("loadtest: redis-server not found: run deploy/install-redis.sh")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loadtest").mkdir(exist_ok=True)
    extra = "".join(
        f" --{k.replace('_', '-')} {v}"
        for k, v in (("ramp_cap", args.ramp_cap), ("run_time", args.run_time))
        if v is not None
    )
    if args.profile == "smoke":
        command = f"python -m loadtest.run --profile smoke --out {args.out}"
    elif extra:
        command = f"python -m loadtest.run --profile {args.profile}{extra}"
    else:
        command = f"make loadtest PROFILE={args.profile}"
    started = dt.datetime.now(dt.UTC)
    machine = {
        "cores": os.cpu_count() or 1,
        "memory_bytes": measure.meminfo()["MemTotal"],
        "load_before": measure.load1(),
    }
    active = max(1, round(prof.users * args.active_share))
    log(f"profile {args.profile}: {prof.users} users, {active} active accounts, "
        f"page weight {prof.page_weight}, load average {machine['load_before']}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mesh-loadtest-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            ramp = browser_ramp(prof, workdir, args.out)
            per_node = max(1, min(ramp["sessions_per_node"], prof.browser_per_node))
            log(f"control plane: {active} accounts, {per_node} browser sessions per browser node")
            cp = control_plane(prof, workdir, args.out, per_node, active)
        except Exception:
            logs = workdir / "logs"
            for f in sorted(logs.rglob("*.log")):
                print(f"--- {f.relative_to(logs)} (tail)\n{f.read_text(errors='replace')[-3000:]}")
            raise
    result = {
        "generated": started.isoformat(timespec="seconds"),
        "command": command,
        "profile": args.profile if args.profile == "smoke" else int(args.profile),
        "machine": {**machine, "load_after": measure.load1()},
        "page_weight": prof.page_weight,
        "browser": ramp,
        "control_plane": cp,
        "console_pages_s": cp.pop("console_pages"),
        "console_calls_s": cp.pop("console_calls"),
        "duration_s": round((dt.datetime.now(dt.UTC) - started).total_seconds()),
    }
    result["_csv_dir"] = str(args.out / "loadtest")
    report.write(result, args.out)
    log(f"report written: {args.out / 'loadtest.md'}, {args.out / 'loadtest.json'}")


if __name__ == "__main__":
    main()
