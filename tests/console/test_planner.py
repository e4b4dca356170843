"""The tier planner: the seed's tiers and thresholds, sized by per-session figures."""

from __future__ import annotations

import math

import pytest

from console import planner as p

SEED_LIKE = p.Figures(p.DEFAULT_SESSION_MEMORY, p.DEFAULT_SESSION_CPU, "test", "test")


def figures(memory_mib: float = 140, cpu: float = 0.07) -> p.Figures:
    return p.Figures(memory_mib * p.MIB, cpu, "test", "test")


def env_dict(text: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return {k: v for k, v in pairs}


def test_defaults_reproduce_the_seeds_50_sessions_on_its_vps_without_headroom() -> None:
    cap = p.capacity(4, 8, SEED_LIKE, headroom=0)
    assert 48 <= cap.sessions <= 52
    assert p.capacity(4, 8, SEED_LIKE, headroom=0.2).sessions < cap.sessions


def test_capacity_is_bound_by_the_scarcer_resource() -> None:
    mem_bound = p.capacity(16, 8, figures(memory_mib=200, cpu=0.05), headroom=0.2)
    assert mem_bound.bound == "memory" and mem_bound.sessions == mem_bound.by_memory
    # (1 - headroom) of the machine's memory, less the base with no session
    assert mem_bound.by_memory == int((8 * p.GIB * 0.8 - p.RESERVE_MEMORY) // (200 * p.MIB))
    cpu_bound = p.capacity(2, 64, figures(memory_mib=100, cpu=0.25), headroom=0.2)
    assert cpu_bound.bound == "CPU" and cpu_bound.sessions == int((2 * 0.8 - 0.5) / 0.25)


def test_a_tiny_machine_still_holds_one_session_and_says_it_is_too_small() -> None:
    plan = p.plan(10, 0.1, 1, 1, figures=figures(memory_mib=2000))
    assert plan.capacity.sessions == 1
    assert any("too small" in n for n in plan.notes)


@pytest.mark.parametrize(
    ("users", "share", "tier"),
    [
        (100, 0.10, p.SINGLE),  # §5 Phase 1
        (400, 0.10, p.SINGLE),
        (500, 0.05, p.SINGLE_REDIS),  # §7: Redis pays at 500+ users
        (1000, 0.05, p.SINGLE_REDIS),  # §2.2 Scenario A with 50 active accounts
        (2000, 0.05, p.CLUSTER),  # §8: 1500+ users
        (3000, 0.10, p.CLUSTER),  # §2.2 Scenario B
        (5000, 0.05, p.KUBERNETES),  # §9: 5000+ users
    ],
)
def test_tiers_follow_the_seeds_decision_matrix_on_a_big_machine(
    users: int, share: float, tier: p.Tier
) -> None:
    plan = p.plan(users, share, 16, 64, figures=SEED_LIKE)
    assert plan.tier is tier


def test_more_active_accounts_than_one_node_holds_means_a_remoteauth_cluster_with_a_spare() -> None:
    plan = p.plan(1000, 0.10, 4, 8, figures=SEED_LIKE)  # 100 active, ~40 a node
    assert plan.nodes_needed == 3
    assert plan.tier is p.CLUSTER and plan.auth == p.REMOTE
    assert plan.nodes == 4  # three needed and one spare
    assert plan.seed.tier is p.SINGLE_REDIS  # the seed's 100-session server would hold them
    assert plan.seed.sessions_per_server == 100 and plan.seed.active == (50, 100)


def test_clusters_have_at_least_three_nodes_and_many_nodes_mean_kubernetes() -> None:
    assert p.plan(1600, 0.05, 16, 64, figures=SEED_LIKE).nodes == p.CLUSTER_MIN_NODES
    big = p.plan(1200, 0.4, 4, 8, figures=SEED_LIKE)  # 480 active on 40-session nodes
    assert big.tier is p.KUBERNETES and big.nodes > big.nodes_needed


def test_measured_memory_changes_the_node_count() -> None:
    light = p.plan(3000, 0.1, 8, 16, figures=figures(memory_mib=100, cpu=0.02))
    heavy = p.plan(3000, 0.1, 8, 16, figures=figures(memory_mib=400, cpu=0.02))
    assert light.capacity.sessions > heavy.capacity.sessions
    assert light.nodes < heavy.nodes


def test_environment_snippets_speak_the_seeds_names() -> None:
    single = p.plan(100, 0.1, 4, 8, figures=SEED_LIKE)
    mesh = env_dict(single.mesh_env)
    assert mesh["AUTH_STRATEGY"] == "localauth"
    assert mesh["MAX_CONCURRENT_SESSIONS"] == str(single.capacity.sessions)
    assert mesh["SESSION_STORAGE_PATH"] == "./sessions"
    assert "REDIS_HOST" not in mesh
    assert env_dict(single.laravel_env) == {
        "CACHE_DRIVER": "file",
        "QUEUE_CONNECTION": "database",
        "SESSION_DRIVER": "file",
    }
    assert single.cost == (50, 100)

    redis = p.plan(800, 0.05, 8, 16, figures=SEED_LIKE)
    assert redis.tier is p.SINGLE_REDIS
    assert env_dict(redis.mesh_env)["SESSION_BACKUP_ENABLED"] == "true"
    laravel = env_dict(redis.laravel_env)
    assert (laravel["CACHE_DRIVER"], laravel["QUEUE_CONNECTION"], laravel["SESSION_DRIVER"]) == (
        "redis",
        "redis",
        "file",
    )

    cluster = p.plan(3000, 0.1, 8, 16, figures=SEED_LIKE)
    mesh = env_dict(cluster.mesh_env)
    assert mesh["AUTH_STRATEGY"] == "remoteauth"
    assert mesh["REDIS_SESSION_PREFIX"] == "whatsapp:session:"
    assert mesh["REDIS_SESSION_TTL"] == "604800"
    assert mesh["REDIS_CLUSTER"] == "true"
    router = env_dict(cluster.router_env)
    assert len(router["MESH_NODES"].split(",")) == cluster.nodes
    laravel = env_dict(cluster.laravel_env)
    assert laravel["SESSION_DRIVER"] == "redis" and laravel["REDIS_CLUSTER"] == "true"
    assert "Redis Cluster" in cluster.redis


def test_forcing_a_strategy_against_the_tier_is_allowed_and_explained() -> None:
    local = p.plan(3000, 0.1, 8, 16, p.LOCAL, SEED_LIKE)
    assert local.auth == p.LOCAL and env_dict(local.mesh_env)["AUTH_STRATEGY"] == "localauth"
    assert any("cannot fail over" in n for n in local.notes)
    assert "the seed says remoteauth here" in local.mesh_env
    remote = p.plan(100, 0.1, 4, 8, p.REMOTE, SEED_LIKE)
    assert remote.tier is p.SINGLE and remote.auth == p.REMOTE
    assert "REDIS_HOST" in env_dict(remote.mesh_env)
    assert any("13-18 s" in n for n in remote.notes)
    assert remote.seed.qr_seconds == (13, 18)
    assert remote.cost[0] > p.plan(100, 0.1, 4, 8, p.LOCAL, SEED_LIKE).cost[0]


def test_cost_scales_with_nodes_and_machine_size_and_adds_redis() -> None:
    assert p.cost(p.SINGLE, 1, 4, 8, p.LOCAL) == (50, 100)
    assert p.cost(p.SINGLE_REDIS, 1, 4, 8, p.LOCAL) == (70, 150)
    assert p.cost(p.CLUSTER, 5, 8, 16, p.REMOTE) == (5 * 100 + 60, 5 * 200 + 150)


def test_seed_view_uses_the_seeds_own_numbers() -> None:
    view = p.seed_view(3000, p.AUTO)
    assert view.active == (150, 300)
    assert view.sessions_per_server == 50 and view.servers == 6
    assert view.tier is p.CLUSTER and view.qr_seconds == (13, 18)
    assert p.seed_view(1000, p.AUTO).qr_seconds == (8, 10)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="users"):
        p.plan(0, 0.1, 4, 8)
    with pytest.raises(ValueError, match="active share"):
        p.plan(10, 0, 4, 8)
    with pytest.raises(ValueError, match="strategy"):
        p.plan(10, 0.1, 4, 8, "redis")
    with pytest.raises(ValueError, match="cores"):
        p.plan(10, 0.1, 0, 8)
    with pytest.raises(ValueError, match="headroom"):
        p.plan(10, 0.1, 4, 8, headroom=1.0)


@pytest.mark.parametrize(
    ("text", "memory", "cpu"),
    [
        ("Per-session memory: 180 MiB\nper-session CPU: 0.06 cores\n", 180 * p.MIB, 0.06),
        ("| per-session PSS | 0.25 GiB |\n| per session CPU | 60 millicores |", 0.25 * p.GIB, 0.06),
        ("per session RSS (median) 190 MB, per-session CPU 7 %", 190e6, 0.07),
        ("# Benchmarks\nQR p50 8.1 s\n", None, None),
    ],
)
def test_benchmarks_figures_are_read_from_prose_or_tables(
    text: str, memory: float | None, cpu: float | None
) -> None:
    got_memory, got_cpu = p.parse_benchmarks(text)
    assert got_memory == pytest.approx(memory) if memory else got_memory is None
    assert got_cpu == pytest.approx(cpu) if cpu else got_cpu is None


def test_figures_come_from_benchmarks_then_live_then_defaults_and_say_so() -> None:
    both = p.resolve_figures((200 * p.MIB, 0.05), 300 * p.MIB, p.LIVE_TRUSTED_SESSIONS - 1)
    assert both.memory_bytes == 200 * p.MIB
    assert both.memory_source == "docs/benchmarks.md, sandbox page"
    assert both.cpu_source == "docs/benchmarks.md"
    live = p.resolve_figures((None, None), 300 * p.MIB, 3)
    assert live.memory_bytes == 300 * p.MIB
    assert live.memory_source == "live nodes: memory / 3 sessions held"
    assert live.cpu_source.startswith("documented default")
    none = p.resolve_figures(None, None)
    assert none.memory_bytes == p.DEFAULT_SESSION_MEMORY
    assert none.memory_source.startswith("documented default")


def test_enough_live_sessions_outweigh_the_sandbox_benchmark() -> None:
    """A mesh hosting real pages plans with their memory, not the sandbox page's."""
    got = p.resolve_figures((24 * p.MIB, 0.001), 350 * p.MIB, p.LIVE_TRUSTED_SESSIONS)
    assert got.memory_bytes == 350 * p.MIB
    assert got.memory_source == f"live nodes: memory / {p.LIVE_TRUSTED_SESSIONS} sessions held"
    assert got.cpu_source == "docs/benchmarks.md"


def test_the_plan_carries_its_kubernetes_pod_and_replicas() -> None:
    figs = p.Figures(200 * p.MIB, 0.02, "test", "test", memory_base=400 * p.MIB, cpu_base=0.3)
    plan = p.plan(3000, 0.1, 4, 8, figures=figs)
    n = plan.capacity.sessions
    assert plan.pod.max_sessions == n
    assert plan.pod.memory_request == 400 + 200 * n  # MiB: the model at MAX
    assert plan.pod.cpu_request == math.ceil((0.3 + 0.02 * n) * 100) * 10
    assert plan.pod.sessions_target == int(n * 0.8)
    low, high = plan.replicas
    assert low == plan.nodes and high > low
    single = p.plan(100, 0.1, 4, 8, figures=figs)
    assert single.replicas == (1, 1)
