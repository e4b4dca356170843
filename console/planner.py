"""The tier planner: from users and machine size to the seed's tiers, sized by measured figures.

Pure: the page passes in what it measured (docs/benchmarks.md, live node memory) and gets a
`Plan` back. The tiers, thresholds and prices are the seed's
(`seed/redis-scalability-analysis.md`); sessions per node come from per-session memory and CPU
with headroom, the seed's "~50 per server" is shown beside them.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field

MIB = 2**20
GIB = 2**30

# Documented defaults, used when nothing was measured: the seed's ~50 sessions on a 4-core,
# 8 GB server (§2.1), after the reserve below is set aside for the OS and the node process.
DEFAULT_SESSION_MEMORY = 140 * MIB
DEFAULT_SESSION_CPU = 0.07  # cores
RESERVE_MEMORY = 1 * GIB
RESERVE_CPU = 0.5  # cores
# The node process beside Chromium: mesh-node (Python, 63.6 MB PSS) and Playwright's driver
# (Node.js, 123.7 MB PSS) with no session, measured on the bench machine (2026-11-30, /proc
# smaps_rollup of a mesh-node started alone). With docs/benchmarks.md's Chromium base it is the
# memory of a node with no session; a load test measures that base itself.
NODE_PROCESS_MEMORY = 184 * MIB
# From this many sessions held, the nodes' own memory per session is the figure to plan with.
LIVE_TRUSTED_SESSIONS = 20
DEFAULT_HEADROOM = 0.2  # the console warns at 80% of capacity: plan to stay below it
QR_P95_LIMIT = 1.5  # seconds: first-QR p95 past this is a node over its capacity

SEED_SESSIONS_PER_SERVER = 50  # MAX_CONCURRENT_SESSIONS=50 (§2.1, §3.3 "per node")
SEED_SESSIONS_UPGRADED = 100  # the upgraded single server of §2.2 A / §3.2
SEED_QR_SECONDS = {"localauth": (8, 10), "remoteauth": (13, 18)}  # §4.1
SEED_ACTIVE_SHARE = (0.05, 0.10)  # 1000 users -> 50-100 active accounts (§2.1)
SEED_VPS = (4, 8)  # cores, GB of the seed's $50-100/month VPS (§2.2 A)
SEED_VPS_COST = (50, 100)
SEED_REDIS_COST = (20, 50)  # §7: managed Redis; §5 Phase 2 says +$20/month

# Tier thresholds, from the seed's decision matrix (§8) and conclusion (§9).
REDIS_FROM_USERS = 500  # §7: Redis pays for itself at 500+ users; §8: 500-1500 users
REDIS_FROM_ACTIVE = 50  # §8: 50-150 active accounts
CLUSTER_FROM_USERS = 1500  # §8: enterprise setup for 1500-5000+ users
CLUSTER_FROM_ACTIVE = 150  # §8: 150-500+ active accounts
KUBERNETES_FROM_USERS = 5000  # §9: 5000+ users need the full enterprise architecture
KUBERNETES_FROM_ACTIVE = 500
KUBERNETES_FROM_NODES = 10  # past this many nodes, hand-run clusters stop being sensible
CLUSTER_MIN_NODES = 3  # §5 Phase 3: 3-5 nodes

LOCAL = "localauth"
REMOTE = "remoteauth"
AUTO = "auto"


@dataclass(frozen=True)
class Tier:
    key: str
    name: str
    seed: str  # where the seed describes it
    auth: str
    redis: str  # Redis topology
    seed_cost: tuple[int, int | None]  # USD a month; None: open-ended
    seed_scale: str


SINGLE = Tier(
    "single",
    "Single server with LocalAuth",
    "§3.1 Development, §5 Phase 1, §8 Current setup",
    LOCAL,
    "none: files for cache and sessions, the database for the queue",
    (50, 100),
    "< 1000 users, < 100 active accounts (§8); < 500 users before Redis pays (§7)",
)
SINGLE_REDIS = Tier(
    "single-redis",
    "LocalAuth with Redis cache and queue",
    "§3.2 Production Small-Medium, §5 Phase 2, §8 Recommended setup",
    LOCAL,
    "one Redis beside the app (cache and queue)",
    (70, 120),
    "500-1500 users, 50-150 active accounts (§8)",
)
CLUSTER = Tier(
    "cluster",
    "RemoteAuth cluster",
    "§2.2 Scenario B, §3.3 Production Enterprise, §5 Phase 3, §8 Enterprise setup",
    REMOTE,
    "Redis Cluster, 3 nodes (sessions, cache, queue, Laravel sessions)",
    (500, 1000),
    "1500-5000+ users, 150-500+ active accounts (§8)",
)
KUBERNETES = Tier(
    "kubernetes",
    "Kubernetes",
    "§5 Phase 4 Enterprise, §9 5000+ users",
    REMOTE,
    "managed Redis (Redis Enterprise / ElastiCache), cluster mode",
    (1000, None),
    "3000+ users (§5 Phase 4); 5000+ users (§9)",
)
TIERS = (SINGLE, SINGLE_REDIS, CLUSTER, KUBERNETES)


@dataclass(frozen=True)
class QrCurve:
    """First-QR p95 (s) against the node's CPU use as a share of the machine's cores.

    Piecewise linear through measured points, made non-decreasing (more load never makes QR
    faster); past the last point it follows the least-squares slope of the last three.
    """

    points: tuple[tuple[float, float], ...]  # (CPU share, p95 s), ascending by share

    def at(self, share: float) -> float:
        pts = self.points
        if share <= pts[0][0]:
            return pts[0][1]
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            if share <= x1:
                return y0 if x1 == x0 else y0 + (y1 - y0) * (share - x0) / (x1 - x0)
        x, y = pts[-1]
        return y + self.tail_slope * (share - x)

    @property
    def tail_slope(self) -> float:
        tail = self.points[-3:]
        if len(tail) < 2:
            return 0.0
        return max(0.0, fit_line([p[0] for p in tail], [p[1] for p in tail])[1])

    def reaches(self, limit: float) -> float | None:
        """The smallest CPU share at which p95 exceeds `limit`; None if it never does."""
        pts = self.points
        if pts[0][1] > limit:
            return pts[0][0]
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            if y1 > limit:
                return x0 + (x1 - x0) * (limit - y0) / (y1 - y0)
        slope = self.tail_slope
        if slope <= 0:
            return None
        x, y = pts[-1]
        return x + (limit - y) / slope


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through the points (two distinct xs at least)."""
    n = len(xs)
    if n != len(ys) or n < 2:
        raise ValueError("a line needs two points or more")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("a line needs two distinct x values")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - slope * mx, slope


@dataclass(frozen=True)
class Figures:
    """The per-node model: memory and CPU = base + per session x sessions, and where each came
    from; with a load test, also first-QR p95 against CPU share and the limits it was run to."""

    memory_bytes: float  # per session
    cpu_cores: float  # per session
    memory_source: str
    cpu_source: str
    memory_base: float = RESERVE_MEMORY  # bytes with no session (OS and node process)
    cpu_base: float = RESERVE_CPU  # cores with no session
    qr: QrCurve | None = None
    qr_limit: float = QR_P95_LIMIT
    cpu_saturation: float | None = None  # share of the cores; None: 1 - headroom

    def memory_at(self, sessions: float) -> float:
        return self.memory_base + self.memory_bytes * sessions

    def cpu_at(self, sessions: float) -> float:
        return self.cpu_base + self.cpu_cores * sessions


def parse_benchmarks(text: str) -> tuple[float | None, float | None]:
    """Per-session memory (bytes) and CPU (cores) from docs/benchmarks.md, where it states them.

    Looks for lines such as `per-session memory: 180 MiB` or a table row
    `| per-session PSS | 180 MiB |`, and `per-session CPU: 0.06 cores` (also `60 millicores`,
    `6 %` of a core).
    """
    memory = cpu = None
    units = {"kib": 2**10, "kb": 1e3, "mib": MIB, "mb": 1e6, "gib": GIB, "gb": 1e9}
    m = re.search(
        r"per[- ]session[^\n\d]*?(?:memory|rss|pss)[^\n\d]*?([\d.]+)\s*(GiB|GB|MiB|MB|KiB|kB)\b",
        text,
        re.IGNORECASE,
    )
    if m:
        memory = float(m.group(1)) * units[m.group(2).lower()]
    m = re.search(
        r"per[- ]session[^\n\d]*?cpu[^\n\d]*?([\d.]+)\s*(millicores|m\b|%|cores?\b)",
        text,
        re.IGNORECASE,
    )
    if m:
        value, unit = float(m.group(1)), m.group(2).lower()
        cpu = value / 1000 if unit in ("millicores", "m") else value / 100 if unit == "%" else value
    return (memory if memory and memory > 0 else None, cpu if cpu and cpu > 0 else None)


def parse_browser_base(text: str) -> float | None:
    """Chromium's memory with no session (bytes), from docs/benchmarks.md: a `browser base: N
    MiB` line, else the `with no session` column's row with the most READY sessions."""
    units = {"kib": 2**10, "kb": 1e3, "mib": MIB, "mb": 1e6, "gib": GIB, "gb": 1e9}
    m = re.search(r"browser base[^\n\d]*?([\d.]+)\s*(KiB|MiB|GiB|MB|GB)\b", text, re.IGNORECASE)
    if m:
        return float(m.group(1)) * units[m.group(2).lower()]
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not (line.startswith("|") and "with no session" in line.lower()):
            continue
        header = [c.strip().lower() for c in line.strip().strip("|").split("|")]
        column = header.index("with no session")
        best: tuple[float, float] | None = None
        for row in lines[i + 2 :]:
            if not row.startswith("|"):
                break
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            first = re.match(r"([\d.]+)", cells[0])
            cell = re.match(r"([\d.]+)\s*(KiB|MiB|GiB|MB|GB)\b", cells[column], re.IGNORECASE)
            if first and cell and (best is None or float(first.group(1)) >= best[0]):
                best = (float(first.group(1)), float(cell.group(1)) * units[cell.group(2).lower()])
        return best[1] if best else None
    return None


def benchmark_figures(
    text: str | None, live_memory: float | None = None, live_sessions: int = 0
) -> Figures:
    """The model without a load test: per-session figures from docs/benchmarks.md (or live
    nodes, or the defaults, as `resolve_figures` picks), on the node's measured base memory
    (node process + Chromium with no session) where the file states Chromium's."""
    bench = parse_benchmarks(text) if text is not None else None
    browser = parse_browser_base(text) if text is not None else None
    base = NODE_PROCESS_MEMORY + browser if browser else RESERVE_MEMORY
    return resolve_figures(bench, live_memory, live_sessions, memory_base=base)


def resolve_figures(
    benchmarks: tuple[float | None, float | None] | None,
    live_memory: float | None,
    live_sessions: int = 0,
    *,
    memory_base: float = RESERVE_MEMORY,
) -> Figures:
    """Each figure from where it is best measured, and say where it came from.

    Memory: the live nodes once they hold `LIVE_TRUSTED_SESSIONS` sessions (this deployment's
    own pages, with the browsers' base memory spread thin), else docs/benchmarks.md (measured on
    the sandbox's page, far lighter than WhatsApp Web's), else the live nodes however few, else
    the documented default. CPU: docs/benchmarks.md, else the documented default.
    """
    bench_mem, bench_cpu = benchmarks or (None, None)
    live_source = f"live nodes: memory / {live_sessions} sessions held"
    if live_memory and live_sessions >= LIVE_TRUSTED_SESSIONS:
        memory, memory_source = live_memory, live_source
    elif bench_mem:
        memory, memory_source = bench_mem, "docs/benchmarks.md, sandbox page"
    elif live_memory:
        memory, memory_source = live_memory, live_source
    else:
        memory, memory_source = DEFAULT_SESSION_MEMORY, "documented default (seed §2.1)"
    if bench_cpu:
        cpu, cpu_source = bench_cpu, "docs/benchmarks.md"
    else:
        cpu, cpu_source = DEFAULT_SESSION_CPU, "documented default (seed §2.1)"
    return Figures(memory, cpu, memory_source, cpu_source, memory_base=memory_base)


MEMORY = "memory"
CPU = "CPU"
FIRST_QR = "first-QR p95"


@dataclass(frozen=True)
class Capacity:
    by_memory: int
    by_cpu: int
    sessions: int  # per node, with headroom: MAX_CONCURRENT_SESSIONS
    bound: str  # MEMORY, CPU or FIRST_QR: the limit reached first
    by_qr: int | None = None  # None: no QR model, or QR never passes its limit


def capacity(cores: float, ram_gb: float, figures: Figures, headroom: float) -> Capacity:
    """Sessions one machine holds before its first limit; at least 1.

    Memory: the model's memory stays within (1 - headroom) of the machine's. CPU: within the
    load test's saturation share of the cores, else (1 - headroom). First QR (with a load-test
    model): its p95 stays within the limit at the CPU share that many sessions take.
    """
    if cores <= 0 or ram_gb <= 0:
        raise ValueError("cores and RAM must be above 0")
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must be within 0-0.9, got {headroom}")
    f = figures
    by_memory = math.floor(max(0.0, ram_gb * GIB * (1 - headroom) - f.memory_base) / f.memory_bytes)
    saturation = f.cpu_saturation if f.cpu_saturation is not None else 1 - headroom
    by_cpu = math.floor(max(0.0, cores * saturation - f.cpu_base) / f.cpu_cores)
    by_qr = None
    if f.qr is not None:
        share = f.qr.reaches(f.qr_limit)
        if share is not None:
            by_qr = math.floor(max(0.0, cores * share - f.cpu_base) / f.cpu_cores)
    limits = [(by_memory, MEMORY), (by_cpu, CPU)]
    if by_qr is not None:
        limits.append((by_qr, FIRST_QR))
    sessions, bound = min(limits, key=lambda lb: lb[0])
    return Capacity(by_memory, by_cpu, max(1, sessions), bound, by_qr)


@dataclass(frozen=True)
class SeedView:
    """What the seed alone would say, with its own figures."""

    tier: Tier
    active: tuple[int, int]  # at the seed's 5-10% active share
    sessions_per_server: int
    servers: int
    qr_seconds: tuple[int, int]


# Chromium runs with --disable-dev-shm-usage (sessionmesh/chromium.py) and keeps its shared
# memory in /tmp, so /dev/shm stays small; a memory-backed emptyDir counts toward the limit.
SHM_SIZE = 128 * MIB
AUTOSCALE_GROWTH = 2  # the autoscaler's ceiling: room for twice the planned active accounts


@dataclass(frozen=True)
class PodSize:
    """A node pod for MAX_CONCURRENT_SESSIONS sessions, from the model at that many."""

    max_sessions: int
    memory_request: int  # MiB: base + memory per session x MAX
    memory_limit: int  # MiB: the request with the headroom kept free, plus /dev/shm
    cpu_request: int  # millicores: base + CPU per session x MAX (no CPU limit)
    sessions_target: int  # the autoscaler's sessions per node: MAX with the headroom free
    headroom: float


def pod_size(figures: Figures, max_sessions: int, headroom: float = DEFAULT_HEADROOM) -> PodSize:
    request = math.ceil(figures.memory_at(max_sessions) / MIB)
    return PodSize(
        max_sessions=max_sessions,
        memory_request=request,
        memory_limit=math.ceil(request / (1 - headroom)) + SHM_SIZE // MIB,
        cpu_request=math.ceil(figures.cpu_at(max_sessions) * 100) * 10,
        sessions_target=max(1, math.floor(max_sessions * (1 - headroom))),
        headroom=headroom,
    )


@dataclass(frozen=True)
class Plan:
    users: int
    active: int
    auth: str
    tier: Tier
    capacity: Capacity
    figures: Figures
    nodes_needed: int  # to hold the active accounts
    nodes: int  # to deploy: with a spare where failover needs one
    redis: str
    cost: tuple[int, int]  # our estimate for the mesh nodes and Redis, USD a month
    seed: SeedView
    mesh_env: str
    router_env: str
    laravel_env: str
    pod: PodSize  # the node pod on Kubernetes, as deploy/k8s/render.py renders it
    replicas: tuple[int, int]  # nodes: (floor, ceiling); equal for a fixed count
    notes: list[str] = field(default_factory=list)


def pick_tier(users: int, active: int, nodes_needed: int) -> Tier:
    """The seed's tier for this scale; more than one node always means a cluster."""
    if (
        users >= KUBERNETES_FROM_USERS
        or active >= KUBERNETES_FROM_ACTIVE
        or nodes_needed >= KUBERNETES_FROM_NODES
    ):
        return KUBERNETES
    if nodes_needed > 1 or users > CLUSTER_FROM_USERS or active > CLUSTER_FROM_ACTIVE:
        return CLUSTER
    if users >= REDIS_FROM_USERS or active > REDIS_FROM_ACTIVE:
        return SINGLE_REDIS
    return SINGLE


def cluster_nodes(needed: int, tier: Tier) -> int:
    """Nodes to deploy: one, or for a cluster the need plus a spare (20%, at least one)."""
    if tier in (SINGLE, SINGLE_REDIS):
        return 1
    return max(CLUSTER_MIN_NODES, needed + max(1, math.ceil(needed * 0.2)))


def seed_view(users: int, strategy: str) -> SeedView:
    lo = math.ceil(users * SEED_ACTIVE_SHARE[0])
    hi = math.ceil(users * SEED_ACTIVE_SHARE[1])
    per_server = (
        SEED_SESSIONS_UPGRADED if hi <= SEED_SESSIONS_UPGRADED else SEED_SESSIONS_PER_SERVER
    )
    servers = max(1, math.ceil(hi / per_server))
    tier = pick_tier(users, hi, servers)
    auth = tier.auth if strategy == AUTO else strategy
    return SeedView(tier, (lo, hi), per_server, servers, SEED_QR_SECONDS[auth])


def cost(tier: Tier, nodes: int, cores: float, ram_gb: float, auth: str) -> tuple[int, int]:
    """Mesh nodes priced as the seed's VPS scaled by size, plus Redis as the seed prices it."""
    scale = max(cores / SEED_VPS[0], ram_gb / SEED_VPS[1], 0.5)
    lo = nodes * SEED_VPS_COST[0] * scale
    hi = nodes * SEED_VPS_COST[1] * scale
    redis_nodes = {SINGLE.key: 1 if auth == REMOTE else 0, SINGLE_REDIS.key: 1}.get(tier.key, 3)
    lo += redis_nodes * SEED_REDIS_COST[0]
    hi += redis_nodes * SEED_REDIS_COST[1]
    return round(lo), round(hi)


def redis_topology(tier: Tier, auth: str) -> str:
    if tier is SINGLE and auth == REMOTE:
        return "one Redis (the logins; Laravel keeps files and the database)"
    if tier is SINGLE_REDIS and auth == REMOTE:
        return "one Redis beside the app (logins, cache and queue)"
    return tier.redis


def _env(lines: list[tuple[str, str | int, str]]) -> str:
    """KEY=value lines, each note on its own comment line above (safe for any .env reader)."""
    out: list[str] = []
    for key, value, note in lines:
        if note:
            out.append(f"# {note}")
        out.append(f"{key}={value}")
    return "\n".join(out)


def mesh_env(tier: Tier, auth: str, per_node: int, nodes: int) -> tuple[str, str]:
    """The node and router environment for this plan."""
    redis_host = "127.0.0.1" if tier in (SINGLE, SINGLE_REDIS) else "redis-cluster.internal"
    lines: list[tuple[str, str | int, str]] = [
        ("AUTH_STRATEGY", auth, "" if auth == tier.auth else f"the seed says {tier.auth} here"),
        ("MAX_CONCURRENT_SESSIONS", per_node, "per node, headroom included"),
        ("SESSION_STORAGE_PATH", "./sessions", ""),
    ]
    if tier is not SINGLE:
        lines.append(("SESSION_BACKUP_ENABLED", "true", "§3.2: enable backups"))
    if auth == REMOTE:
        lines += [
            ("REDIS_HOST", redis_host, ""),
            ("REDIS_PORT", 6379, ""),
            ("REDIS_SESSION_PREFIX", "whatsapp:session:", ""),
            ("REDIS_SESSION_TTL", 604800, "7 days"),
        ]
        if tier in (CLUSTER, KUBERNETES):
            lines.append(("REDIS_CLUSTER", "true", ""))
    addresses = ",".join(f"node-{i}.internal:50061" for i in range(1, nodes + 1))
    router = _env(
        [
            ("MESH_NODES", addresses, f"{nodes} node(s): your hosts here"),
            ("MESH_ROUTER_LISTEN", "0.0.0.0:50051", ""),
            ("MESH_API_TOKENS", "laravel:<a long random token>", "tenant:token[,tenant:token...]"),
        ]
    )
    return _env(lines), router


def laravel_env(tier: Tier) -> str:
    if tier is SINGLE:
        return _env(
            [
                ("CACHE_DRIVER", "file", ""),
                ("QUEUE_CONNECTION", "database", ""),
                ("SESSION_DRIVER", "file", ""),
            ]
        )
    if tier is SINGLE_REDIS:
        return _env(
            [
                ("CACHE_DRIVER", "redis", "changed"),
                ("QUEUE_CONNECTION", "redis", "changed"),
                ("SESSION_DRIVER", "file", "OK for a single server"),
                ("REDIS_HOST", "127.0.0.1", ""),
                ("REDIS_PORT", 6379, ""),
            ]
        )
    return _env(
        [
            ("CACHE_DRIVER", "redis", ""),
            ("QUEUE_CONNECTION", "redis", ""),
            ("SESSION_DRIVER", "redis", "for distributed sessions"),
            ("REDIS_HOST", "redis-cluster.internal", ""),
            ("REDIS_PORT", 6379, ""),
            ("REDIS_CLUSTER", "true", "cluster mode"),
        ]
    )


def plan(
    users: int,
    active_share: float,
    cores: float,
    ram_gb: float,
    strategy: str = AUTO,
    figures: Figures | None = None,
    headroom: float = DEFAULT_HEADROOM,
) -> Plan:
    """Plan a deployment for `users` of whom `active_share` (0-1) keep a WhatsApp account linked."""
    if users < 1:
        raise ValueError(f"users must be at least 1, got {users}")
    if not 0 < active_share <= 1:
        raise ValueError(f"active share must be within (0, 1], got {active_share}")
    if strategy not in (AUTO, LOCAL, REMOTE):
        raise ValueError(f"strategy must be auto, localauth or remoteauth, got {strategy!r}")
    figures = figures or resolve_figures(None, None)
    active = max(1, math.ceil(users * active_share))
    cap = capacity(cores, ram_gb, figures, headroom)
    needed = math.ceil(active / cap.sessions)
    tier = pick_tier(users, active, needed)
    auth = tier.auth if strategy == AUTO else strategy
    nodes = cluster_nodes(needed, tier)
    notes: list[str] = []
    if auth == LOCAL and nodes > 1:
        notes.append(
            f"LocalAuth on {nodes} nodes: each login stays on its node's disk, so sessions cannot "
            "fail over and a lost node means new QR scans (§3.1 cons). The seed says RemoteAuth here."
        )
    if auth == REMOTE and tier.auth == LOCAL:
        notes.append(
            "RemoteAuth on one server: QR takes 13-18 s instead of 8-10 s (§4.1) for no "
            "failover gain; it prepares the move to a cluster."
        )
    if auth == REMOTE:
        notes.append("RemoteAuth restores a lost node's sessions on the others: keep a spare node.")
    if tier in (SINGLE, SINGLE_REDIS) and (users > 1000 or active > 100):
        notes.append(
            "Past 1000 users or 100 active accounts the seed (§4.2) says to plan the switch to "
            "RemoteAuth, although one server holds them."
        )
    if cap.sessions < active and tier in (SINGLE, SINGLE_REDIS):
        notes.append("One server cannot hold every active account: pick a bigger machine.")
    if cap.by_memory < 1 or cap.by_cpu < 1:
        notes.append(
            "This machine is too small for even one session with the reserve and headroom."
        )
    if tier is KUBERNETES:
        notes.append(
            "Kubernetes: the node count is the autoscaler's floor; a DevOps engineer is needed (§5 Phase 4)."
        )
    mesh, router = mesh_env(tier, auth, cap.sessions, nodes)
    replicas = (nodes, nodes)
    if nodes > 1:  # a cluster: its autoscaler may grow to the nodes for more active accounts
        grown = max(1, math.ceil(users * min(1.0, active_share * AUTOSCALE_GROWTH)))
        replicas = (nodes, max(nodes + 1, cluster_nodes(math.ceil(grown / cap.sessions), tier)))
    return Plan(
        users=users,
        active=active,
        auth=auth,
        tier=tier,
        capacity=cap,
        figures=figures,
        nodes_needed=needed,
        nodes=nodes,
        redis=redis_topology(tier, auth),
        cost=cost(tier, nodes, cores, ram_gb, auth),
        seed=seed_view(users, strategy),
        mesh_env=mesh,
        router_env=router,
        laravel_env=laravel_env(tier),
        pod=pod_size(figures, cap.sessions, headroom),
        replicas=replicas,
        notes=notes,
    )
