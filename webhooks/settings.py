"""Webhook settings, read once from the environment by routers, nodes and `python -m webhooks`."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from node.crypto import ENV_NAME as SNAPSHOT_KEY_ENV
from node.crypto import SnapshotKeys
from sessionmesh.config import ConfigError, env_bool, env_float, env_int, env_str
from sessionmesh.retry import RetryPolicy as Backoff

KEY_ENV = "MESH_WEBHOOK_KEY"
RETRY_AFTER_CAP = 3600.0  # a receiver's Retry-After is honoured up to an hour

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: `first` s after the first failure, doubling up to `cap`,
    each delay scaled by a random factor in [1 - jitter, 1 + jitter]; `tries` in all."""

    tries: int = 10
    first: float = 5.0
    cap: float = 300.0
    jitter: float = 0.2

    def delay(self, failures: int, retry_after: float | None = None) -> float | None:
        """Seconds until the next try after `failures` failed ones; None when out of tries.
        A receiver's Retry-After wins when it asks for longer (up to an hour)."""
        if failures >= self.tries:
            return None
        backoff = Backoff(first=self.first, cap=self.cap, multiplier=2.0, jitter=self.jitter)
        wait = backoff.delay(failures)
        if retry_after is not None:
            wait = max(wait, min(retry_after, RETRY_AFTER_CAP))
        return max(0.0, float(wait))


@dataclass(frozen=True)
class Allowlist:
    """Private, loopback, link-local and reserved targets these name are allowed after all:
    networks (CIDR) and host names (`*.example.internal` matches any subdomain)."""

    networks: tuple[Network, ...] = ()
    hosts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: str, name: str = "MESH_WEBHOOK_ALLOW") -> Allowlist:
        networks: list[Network] = []
        hosts: list[str] = []
        for item in (x.strip() for x in raw.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            host = item.lower().rstrip(".")
            label = host[2:] if host.startswith("*.") else host
            if not label or not all(
                part and all(c.isalnum() or c == "-" for c in part) for part in label.split(".")
            ):
                raise ConfigError(f"{name} entries must be CIDRs or host names, got {item!r}")
            hosts.append(host)
        return cls(tuple(networks), tuple(hosts))

    def allows_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for entry in self.hosts:
            if entry == host or (entry.startswith("*.") and host.endswith(entry[1:])):
                return True
        return False

    def allows_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in net for net in self.networks if net.version == address.version)


LOOPBACK = Allowlist.parse("127.0.0.0/8,::1/128")


@dataclass(frozen=True)
class WebhookSettings:
    """Where webhooks live and how they are delivered.

    The store is Redis when the process has Redis configured (REDIS_URL, ...), else the SQLite
    file `db_path` (MESH_WEBHOOK_DB); with neither, webhooks are off. `keys` (MESH_WEBHOOK_KEY,
    else MESH_SNAPSHOT_KEY) seal secrets and queued bodies; routers and nodes must share it."""

    db_path: Path | None = None  # MESH_WEBHOOK_DB
    keys: SnapshotKeys | None = field(default=None, repr=False, compare=False)
    allow: Allowlist = field(default_factory=Allowlist)  # MESH_WEBHOOK_ALLOW
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # MESH_WEBHOOK_RETRY_*
    timeout: float = 10.0  # MESH_WEBHOOK_TIMEOUT: s for one request
    concurrency: int = 64  # MESH_WEBHOOK_CONCURRENCY: (webhook, session) lanes delivered at once
    retention: float = 3600.0  # MESH_WEBHOOK_RETENTION: s a delivered delivery is kept
    dead_ttl: float = 7 * 86400.0  # MESH_WEBHOOK_DEAD_TTL: s a dead letter is kept
    dispatch: bool = True  # MESH_WEBHOOK_DISPATCH: nodes deliver (false: only publish)
    poll_interval: float = 0.1  # MESH_WEBHOOK_POLL: s between looks at the SQLite queue

    @property
    def claim_ttl(self) -> float:
        """How long a dispatcher owns a (webhook, session) lane before another may take it."""
        return max(15.0, 3 * self.timeout)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebhookSettings:
        raw_db = env.get("MESH_WEBHOOK_DB", "").strip()
        keys: SnapshotKeys | None = None
        if env.get(KEY_ENV, "").strip():
            keys = SnapshotKeys.parse(env[KEY_ENV], name=KEY_ENV)
        elif env.get(SNAPSHOT_KEY_ENV, "").strip():
            keys = SnapshotKeys.parse(env[SNAPSHOT_KEY_ENV])
        retry = RetryPolicy(
            tries=env_int(env, "MESH_WEBHOOK_RETRY_TRIES", RetryPolicy.tries, minimum=1),
            first=env_float(env, "MESH_WEBHOOK_RETRY_FIRST", RetryPolicy.first, minimum=0.01),
            cap=env_float(env, "MESH_WEBHOOK_RETRY_MAX", RetryPolicy.cap, minimum=0.01),
            jitter=env_float(env, "MESH_WEBHOOK_RETRY_JITTER", RetryPolicy.jitter),
        )
        if retry.jitter >= 1:
            raise ConfigError(f"MESH_WEBHOOK_RETRY_JITTER must be below 1, got {retry.jitter}")
        if retry.cap < retry.first:
            raise ConfigError(
                f"MESH_WEBHOOK_RETRY_MAX ({retry.cap}) must be at least "
                f"MESH_WEBHOOK_RETRY_FIRST ({retry.first})"
            )
        concurrency = env_int(env, "MESH_WEBHOOK_CONCURRENCY", cls.concurrency, minimum=1)
        if concurrency > 1024:
            raise ConfigError(f"MESH_WEBHOOK_CONCURRENCY must be at most 1024, got {concurrency}")
        return cls(
            db_path=Path(raw_db) if raw_db else None,
            keys=keys,
            allow=Allowlist.parse(env_str(env, "MESH_WEBHOOK_ALLOW", "")),
            retry=retry,
            timeout=env_float(env, "MESH_WEBHOOK_TIMEOUT", cls.timeout, minimum=0.1),
            concurrency=concurrency,
            retention=env_float(env, "MESH_WEBHOOK_RETENTION", cls.retention, minimum=60.0),
            dead_ttl=env_float(env, "MESH_WEBHOOK_DEAD_TTL", cls.dead_ttl, minimum=60.0),
            dispatch=env_bool(env, "MESH_WEBHOOK_DISPATCH", cls.dispatch),
            poll_interval=env_float(env, "MESH_WEBHOOK_POLL", cls.poll_interval, minimum=0.01),
        )
