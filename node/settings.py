"""The node's settings, read once from the environment (names kept from the original service)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from node.crypto import ENV_NAME as SNAPSHOT_KEY_ENV
from node.crypto import SnapshotKeys
from sessionmesh.config import (
    ConfigError,
    env_bool,
    env_float,
    env_int,
    env_str,
    split_address,
)
from sessionmesh.redis_conn import RedisSettings, redis_configured
from sessionmesh.telemetry import TelemetrySettings
from sessionmesh.tls import TransportSecurity
from webhooks.settings import WebhookSettings

AUTH_STRATEGIES = ("localauth", "remoteauth")


@dataclass(frozen=True)
class NodeSettings:
    """A node's settings. `telemetry` comes from MESH_METRICS_PORT (Prometheus endpoint; 0 or
    unset: none), MESH_METRICS_HOST (default 127.0.0.1) and MESH_OTEL_CONSOLE.

    `redis` is None unless REDIS_URL, REDIS_HOST/REDIS_PORT, REDIS_SENTINELS or REDIS_CLUSTER is
    set; then MESH_SNAPSHOT_KEY (`snapshot_keys`) is required, and the node keeps RemoteAuth
    logins, the session directory, event streams and its membership in Redis."""

    node_id: str = field(default_factory=lambda: f"node-{socket.gethostname()}")
    listen: str = "127.0.0.1:50061"
    wa_url: str = "https://web.whatsapp.com"
    auth_strategy: str = "localauth"
    max_sessions: int = 50
    storage_path: Path = Path("./sessions")
    backup_enabled: bool = False
    backup_count: int = 3
    snapshot_interval: float = 60.0
    auth_timeout: float = 30.0
    navigation_timeout: float = 30.0
    warm_page: bool = True  # MESH_WARM_PAGE: keep WhatsApp Web loaded for the next new session
    send_rate: float = 1.0  # messages a second per session
    send_burst: int = 3
    qr_max_retries: int = 0  # 0: as many as the page shows
    qr_first_timeout: float = 60.0
    qr_timeout: float = 20.0
    event_log_size: int = 1000
    chromium_path: str | None = None
    shutdown_grace: float = 10.0
    # MESH_MAX_CONCURRENT_RPCS: calls (streams included) in flight at once; past it,
    # RESOURCE_EXHAUSTED. Each client watch through a router holds one here.
    max_concurrent_rpcs: int = 20_000
    # MESH_FINISHED_TTL (s): a STOPPED, LOGGED_OUT or FAILED session is forgotten this long
    # after it finished (its login stays; starting it again continues its seq)
    finished_ttl: float = 3600.0
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    redis: RedisSettings | None = None
    snapshot_keys: SnapshotKeys | None = field(default=None, repr=False, compare=False)
    mesh_prefix: str = "mesh:"
    heartbeat_interval: float = 1.0
    heartbeat_ttl: float = 3.0
    lease_ttl: float = 6.0
    # MESH_MTLS_CERT/KEY/CA (required off loopback), MESH_NODE_SECRET (loopback only),
    # MESH_HEALTH_LISTEN (sessionmesh/tls.py)
    security: TransportSecurity = field(default_factory=TransportSecurity)
    # MESH_WEBHOOK_*: the outbox (Redis, else MESH_WEBHOOK_DB) this node publishes to and
    # delivers from; its key falls back to MESH_SNAPSHOT_KEY.
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)

    def __post_init__(self) -> None:
        self.security.check_node_listen(self.listen)
        if self.redis is not None and self.snapshot_keys is None:
            raise ConfigError(
                f"{SNAPSHOT_KEY_ENV} is required when Redis is configured (REDIS_URL): "
                "RemoteAuth snapshots are encrypted with it"
            )
        if self.heartbeat_ttl <= self.heartbeat_interval:
            raise ConfigError(
                f"MESH_HEARTBEAT_TTL ({self.heartbeat_ttl}) must be longer than "
                f"MESH_HEARTBEAT_INTERVAL ({self.heartbeat_interval})"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NodeSettings:
        listen = env_str(env, "MESH_NODE_LISTEN", cls.listen).strip()
        _host, port = split_address(listen, "MESH_NODE_LISTEN", allow_port_zero=True)
        strategy = env_str(env, "AUTH_STRATEGY", cls.auth_strategy).lower()
        if strategy not in AUTH_STRATEGIES:
            raise ConfigError(f"AUTH_STRATEGY must be localauth or remoteauth, got {strategy!r}")
        wa_url = env_str(env, "WA_URL", cls.wa_url)
        if not wa_url.startswith(("http://", "https://")):
            raise ConfigError(f"WA_URL must be an http(s) URL, got {wa_url!r}")
        redis: RedisSettings | None = None
        keys: SnapshotKeys | None = None
        if redis_configured(env):
            redis = RedisSettings.from_env(env)
            if not env.get(SNAPSHOT_KEY_ENV):
                raise ConfigError(
                    f"{SNAPSHOT_KEY_ENV} is required when Redis is configured; give it as "
                    "kid:base64key (a 32-byte key)"
                )
            keys = SnapshotKeys.from_env(env)
        mesh_prefix = env_str(env, "MESH_REDIS_PREFIX", cls.mesh_prefix)
        if any(c in mesh_prefix for c in "{}"):
            raise ConfigError(
                f"MESH_REDIS_PREFIX may not contain '{{' or '}}', got {mesh_prefix!r}"
            )
        return cls(
            node_id=env_str(env, "MESH_NODE_ID", f"node-{socket.gethostname()}-{port}"),
            listen=listen,
            wa_url=wa_url,
            auth_strategy=strategy,
            max_sessions=env_int(env, "MAX_CONCURRENT_SESSIONS", cls.max_sessions, minimum=1),
            storage_path=Path(env_str(env, "SESSION_STORAGE_PATH", str(cls.storage_path))),
            backup_enabled=env_bool(env, "SESSION_BACKUP_ENABLED", cls.backup_enabled),
            backup_count=env_int(env, "SESSION_BACKUP_COUNT", cls.backup_count, minimum=1),
            snapshot_interval=env_float(
                env, "SESSION_SNAPSHOT_INTERVAL", cls.snapshot_interval, minimum=1.0
            ),
            auth_timeout=env_float(env, "WA_AUTH_TIMEOUT", cls.auth_timeout, minimum=1.0),
            warm_page=env_bool(env, "MESH_WARM_PAGE", cls.warm_page),
            send_rate=env_float(env, "MESH_SEND_RATE", cls.send_rate, minimum=0.01),
            send_burst=env_int(env, "MESH_SEND_BURST", cls.send_burst, minimum=1),
            navigation_timeout=env_float(
                env, "WA_NAV_TIMEOUT", cls.navigation_timeout, minimum=1.0
            ),
            qr_max_retries=env_int(env, "QR_MAX_RETRIES", cls.qr_max_retries, minimum=0),
            qr_first_timeout=env_float(env, "QR_FIRST_TIMEOUT", cls.qr_first_timeout, minimum=0.1),
            qr_timeout=env_float(env, "QR_TIMEOUT", cls.qr_timeout, minimum=0.1),
            event_log_size=env_int(env, "EVENT_LOG_SIZE", cls.event_log_size, minimum=10),
            chromium_path=env.get("CHROMIUM_PATH") or None,
            shutdown_grace=env_float(env, "SHUTDOWN_GRACE", cls.shutdown_grace),
            finished_ttl=env_float(env, "MESH_FINISHED_TTL", cls.finished_ttl, minimum=0.1),
            max_concurrent_rpcs=env_int(
                env, "MESH_MAX_CONCURRENT_RPCS", cls.max_concurrent_rpcs, minimum=1
            ),
            telemetry=TelemetrySettings.from_env(env),
            redis=redis,
            snapshot_keys=keys,
            mesh_prefix=mesh_prefix,
            heartbeat_interval=env_float(
                env, "MESH_HEARTBEAT_INTERVAL", cls.heartbeat_interval, minimum=0.05
            ),
            heartbeat_ttl=env_float(env, "MESH_HEARTBEAT_TTL", cls.heartbeat_ttl, minimum=1.0),
            lease_ttl=env_float(env, "MESH_LEASE_TTL", cls.lease_ttl, minimum=1.0),
            security=TransportSecurity.from_env(env),
            webhooks=WebhookSettings.from_env(env),
        )
