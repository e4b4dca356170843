"""Router settings, read once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sessionmesh.auth import TENANT_RE, TokenTable, parse_tokens
from sessionmesh.config import ConfigError, env_float, env_int, env_str, environ, parse_address
from sessionmesh.redis_conn import RedisSettings, redis_configured
from sessionmesh.telemetry import TelemetrySettings
from sessionmesh.tls import TransportSecurity
from webhooks.settings import WebhookSettings

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_MESH_PREFIX = "mesh:"
MAX_PARALLELISM = 32


def parse_nodes(
    raw: str | None, var: str = "MESH_NODES", *, required: bool = True
) -> tuple[str, ...]:
    if raw is None or raw.strip() == "":
        if not required:
            return ()
        raise ConfigError(
            f"{var} is required without Redis: comma-separated node addresses (host:port,...)"
        )
    nodes: list[str] = []
    for item in raw.split(","):
        if item.strip():
            address = parse_address(item, var)
            if address in nodes:
                raise ConfigError(f"{var} lists {address} twice")
            nodes.append(address)
    if not nodes:
        raise ConfigError(f"{var} holds no node address")
    return tuple(nodes)


@dataclass(frozen=True)
class RouterSettings:
    """Everything the router needs; `from_env()` names the variable of any bad value."""

    # MESH_NODES; node ids are learned from GetNodeStatus. Optional with Redis: members of
    # `{mesh_prefix}{nodes}` with a live heartbeat key are added to these.
    nodes: tuple[str, ...]
    tokens: TokenTable = field(repr=False)  # MESH_API_TOKENS
    listen: str = DEFAULT_LISTEN  # MESH_ROUTER_LISTEN; port 0 picks a free port
    load_factor: float = 1.25  # MESH_LOAD_FACTOR: bounded-load cap over the mean
    node_poll_interval: float = 1.0  # MESH_NODE_POLL_INTERVAL (s)
    affinity_refresh_interval: float = 15.0  # MESH_AFFINITY_REFRESH_INTERVAL (s)
    node_timeout: float = 10.0  # MESH_NODE_TIMEOUT (s): deadline of one unary call to a node
    # MESH_TAKEOVER_TIMEOUT (s): deadline of a takeover start or hand-off (waits out a lease)
    takeover_timeout: float = 60.0
    keepalive_time: float = 20.0  # MESH_KEEPALIVE_TIME (s) between pings on idle streams
    keepalive_timeout: float = 10.0  # MESH_KEEPALIVE_TIMEOUT (s) to wait for a ping's answer
    max_message_bytes: int = 1 << 20  # MESH_MAX_MESSAGE_BYTES: larger requests are refused
    grace: float = 5.0  # MESH_ROUTER_GRACE (s) given to calls in flight on stop
    # MESH_METRICS_PORT (Prometheus endpoint; 0 or unset: none), MESH_METRICS_HOST
    # (default 127.0.0.1), MESH_OTEL_CONSOLE; OTLP export follows OTEL_EXPORTER_OTLP_ENDPOINT.
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    # REDIS_URL, REDIS_HOST/REDIS_PORT, REDIS_SENTINELS, REDIS_CLUSTER, REDIS_SESSION_PREFIX...;
    # None: no Redis (static MESH_NODES, in-memory affinity, no failover).
    redis: RedisSettings | None = None
    mesh_prefix: str = DEFAULT_MESH_PREFIX  # MESH_REDIS_PREFIX
    dead_after: float = 3.0  # MESH_DEAD_AFTER (s): heartbeat gone and health lost this long
    failover_parallelism: int = 4  # MESH_FAILOVER_PARALLELISM: takeovers at once
    admin_tenants: frozenset[str] = frozenset()  # MESH_ADMIN_TENANTS: may call DrainNode
    member_poll_interval: float = 1.0  # MESH_MEMBER_POLL_INTERVAL (s): reads of the members
    # MESH_TLS_CERT/KEY (public API), MESH_MTLS_CERT/KEY/CA and MESH_MTLS_NODE_NAME (toward
    # nodes: required off loopback), MESH_ALLOW_INSECURE (the public API only),
    # MESH_NODE_SECRET (loopback development), MESH_HEALTH_LISTEN (sessionmesh/tls.py)
    security: TransportSecurity = field(default_factory=TransportSecurity)
    # MESH_MAX_CONCURRENT_RPCS: calls (watch streams included) in flight at once
    max_concurrent_rpcs: int = 20_000
    # MESH_TENANT_MAX_SESSIONS: live sessions one tenant may hold (0: no cap)
    tenant_max_sessions: int = 500
    # MESH_TENANT_MAX_STREAMS: WatchSession streams one tenant may hold open on this router
    tenant_max_streams: int = 2000
    # MESH_LIST_CACHE_TTL (s): ListSessions and GetClusterStatus answer from a view of the
    # nodes at most this old (one fan-out per period, not per call)
    list_cache_ttl: float = 1.0
    # MESH_WEBHOOK_*: where webhooks live (Redis, else MESH_WEBHOOK_DB), the key sealing their
    # secrets (MESH_WEBHOOK_KEY), the allow-list of private targets (MESH_WEBHOOK_ALLOW).
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)

    def __post_init__(self) -> None:
        self.security.check_public_listen(self.listen)
        for address in self.nodes:
            self.security.check_node_address(address)
        if not self.nodes and self.redis is None:
            raise ConfigError(
                "MESH_NODES is required without Redis: comma-separated node addresses"
            )
        if not 1 <= self.failover_parallelism <= MAX_PARALLELISM:
            raise ConfigError(
                f"MESH_FAILOVER_PARALLELISM must be 1-{MAX_PARALLELISM}, "
                f"got {self.failover_parallelism}"
            )
        if self.load_factor < 1.0:
            raise ConfigError(f"MESH_LOAD_FACTOR must be at least 1.0, got {self.load_factor}")
        if len(self.tokens) == 0:
            raise ConfigError("MESH_API_TOKENS holds no tenant:token pair")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RouterSettings:
        env = environ() if env is None else env
        redis = RedisSettings.from_env(env) if redis_configured(env) else None
        return cls(
            nodes=parse_nodes(env.get("MESH_NODES"), required=redis is None),
            tokens=parse_tokens(env.get("MESH_API_TOKENS")),
            listen=parse_address(
                env_str(env, "MESH_ROUTER_LISTEN", DEFAULT_LISTEN),
                "MESH_ROUTER_LISTEN",
                allow_port_zero=True,
            ),
            load_factor=env_float(env, "MESH_LOAD_FACTOR", 1.25, minimum=1.0),
            node_poll_interval=_positive(env, "MESH_NODE_POLL_INTERVAL", 1.0),
            affinity_refresh_interval=_positive(env, "MESH_AFFINITY_REFRESH_INTERVAL", 15.0),
            node_timeout=_positive(env, "MESH_NODE_TIMEOUT", 10.0),
            takeover_timeout=_positive(env, "MESH_TAKEOVER_TIMEOUT", 60.0),
            keepalive_time=_positive(env, "MESH_KEEPALIVE_TIME", 20.0),
            keepalive_timeout=_positive(env, "MESH_KEEPALIVE_TIMEOUT", 10.0),
            max_message_bytes=env_int(env, "MESH_MAX_MESSAGE_BYTES", 1 << 20, minimum=4096),
            grace=env_float(env, "MESH_ROUTER_GRACE", 5.0),
            telemetry=TelemetrySettings.from_env(env),
            redis=redis,
            mesh_prefix=_mesh_prefix(env),
            dead_after=_positive(env, "MESH_DEAD_AFTER", cls.dead_after),
            failover_parallelism=env_int(env, "MESH_FAILOVER_PARALLELISM", 4, minimum=1),
            admin_tenants=parse_tenants(env.get("MESH_ADMIN_TENANTS")),
            member_poll_interval=_positive(env, "MESH_MEMBER_POLL_INTERVAL", 1.0),
            security=TransportSecurity.from_env(env),
            max_concurrent_rpcs=env_int(env, "MESH_MAX_CONCURRENT_RPCS", 20_000, minimum=1),
            tenant_max_sessions=env_int(env, "MESH_TENANT_MAX_SESSIONS", 500, minimum=0),
            tenant_max_streams=env_int(env, "MESH_TENANT_MAX_STREAMS", 2000, minimum=0),
            list_cache_ttl=env_float(env, "MESH_LIST_CACHE_TTL", 1.0),
            webhooks=WebhookSettings.from_env(env),
        )


def parse_tenants(raw: str | None, var: str = "MESH_ADMIN_TENANTS") -> frozenset[str]:
    """Comma-separated tenant names; each must look like a tenant of MESH_API_TOKENS."""
    tenants: set[str] = set()
    for item in (raw or "").split(","):
        name = item.strip()
        if not name:
            continue
        if not TENANT_RE.fullmatch(name):
            raise ConfigError(f"{var} holds a bad tenant name {name!r}")
        tenants.add(name)
    return frozenset(tenants)


def _mesh_prefix(env: Mapping[str, str]) -> str:
    prefix = env_str(env, "MESH_REDIS_PREFIX", DEFAULT_MESH_PREFIX)
    if any(c in prefix for c in "{}"):
        raise ConfigError(f"MESH_REDIS_PREFIX may not contain '{{' or '}}', got {prefix!r}")
    return prefix


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = env_float(env, name, default)
    if value <= 0:
        raise ConfigError(f"{name} must be greater than 0, got {value}")
    return value
