"""One factory for redis-py asyncio clients (standalone, Sentinel, Cluster) and one retry policy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    ClusterError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sessionmesh.config import (
    ConfigError,
    env_bool,
    env_float,
    env_int,
    env_str,
    split_address,
)

log = logging.getLogger(__name__)

RedisClient: TypeAlias = "Redis | RedisCluster"
Mode = Literal["standalone", "sentinel", "cluster"]

DEFAULT_SESSION_PREFIX = "whatsapp:session:"
DEFAULT_SESSION_TTL = 604800

_URL_SCHEMES = {"redis", "rediss", "unix"}
# Any of these set (REDIS_CLUSTER: set to true) means "Redis is configured", for every process.
REDIS_VARS = ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_SENTINELS")

# The one Redis error map, for nodes and routers alike: transport and topology errors mean Redis
# is (for now) not there, and are worth waiting for. Any other RedisError (a script error, a
# wrong type, an auth failure) is a bug or a misconfiguration that waiting does not fix.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterError,
    RedisClusterException,
    TryAgainError,
    ReadOnlyError,
    OSError,
    TimeoutError,
)


def is_outage(exc: BaseException) -> bool:
    """True when `exc` means Redis is unreachable (see TRANSPORT_ERRORS)."""
    return isinstance(exc, TRANSPORT_ERRORS)


@contextlib.contextmanager
def redis_outages(what: str, raise_as: Callable[[str], Exception]) -> Iterator[None]:
    """Turn Redis transport errors into `raise_as(message)`; other errors pass unchanged."""
    try:
        yield
    except TRANSPORT_ERRORS as e:
        raise raise_as(f"Redis is unreachable ({what}): {type(e).__name__}: {e}") from e


def redis_configured(env: Mapping[str, str]) -> bool:
    """The one rule for "this process uses Redis", so REDIS_CLUSTER=false means the same to
    every process: off."""
    return any(env.get(name) for name in REDIS_VARS) or env_bool(env, "REDIS_CLUSTER", False)


def _redact_url(url: str) -> str:
    """The URL with any password replaced by `***`."""
    parts = urlsplit(url)
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def _parse_sentinels(raw: str) -> tuple[tuple[str, int], ...]:
    out: list[tuple[str, int]] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        out.append(split_address(item, "REDIS_SENTINELS"))
    if not out:
        raise ConfigError("REDIS_SENTINELS is set but names no host:port")
    return tuple(out)


@dataclass(frozen=True, repr=False)
class RedisSettings:
    """Where Redis is and how patiently to talk to it.

    Timeouts are short on purpose: an outage should be noticed in seconds, not minutes.
    """

    url: str | None = None
    host: str = "localhost"
    port: int = 6379
    username: str | None = None
    password: str | None = field(default=None, compare=False)
    db: int = 0
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"
    cluster: bool = False
    socket_timeout: float = 2.0
    connect_timeout: float = 2.0
    retries: int = 2
    backoff_base: float = 0.05
    backoff_cap: float = 1.0
    session_prefix: str = DEFAULT_SESSION_PREFIX
    session_ttl: int = DEFAULT_SESSION_TTL
    # REDIS_TLS_CA: the CA that signed Redis's certificate (with rediss://, or TLS to
    # REDIS_HOST); unset, rediss:// verifies with the system's roots.
    tls_ca: str | None = None

    @property
    def mode(self) -> Mode:
        if self.cluster:
            return "cluster"
        if self.sentinels:
            return "sentinel"
        return "standalone"

    def __repr__(self) -> str:
        where: str
        if self.mode == "sentinel":
            where = f"sentinels={self.sentinels!r}, master={self.sentinel_master!r}"
        elif self.url is not None:
            where = f"url={_redact_url(self.url)!r}"
        else:
            where = f"host={self.host!r}, port={self.port}"
        secret = ", password=***" if self.password else ""
        return (
            f"RedisSettings(mode={self.mode!r}, {where}, db={self.db}{secret}, "
            f"session_prefix={self.session_prefix!r}, session_ttl={self.session_ttl})"
        )

    __str__ = __repr__

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RedisSettings:
        """Read REDIS_* variables; a bad value raises ConfigError naming the variable."""
        url = env.get("REDIS_URL") or None
        if url is not None:
            scheme = urlsplit(url).scheme
            if scheme not in _URL_SCHEMES:
                raise ConfigError(
                    f"REDIS_URL must start with redis://, rediss:// or unix://, "
                    f"got {_redact_url(url)!r}"
                )
            try:
                urlsplit(url).port  # noqa: B018 - validates the port
            except ValueError:
                raise ConfigError(f"REDIS_URL has a bad port: {_redact_url(url)!r}") from None
        port = env_int(env, "REDIS_PORT", 6379, minimum=1)
        if port > 65535:
            raise ConfigError(f"REDIS_PORT must be at most 65535, got {port}")
        raw_sentinels = env.get("REDIS_SENTINELS", "").strip()
        sentinels = _parse_sentinels(raw_sentinels) if raw_sentinels else ()
        cluster = env_bool(env, "REDIS_CLUSTER", False)
        db = env_int(env, "REDIS_DB", 0, minimum=0)
        if cluster and sentinels:
            raise ConfigError("REDIS_CLUSTER and REDIS_SENTINELS cannot both be set")
        if cluster and db != 0:
            raise ConfigError(f"REDIS_DB must be 0 with REDIS_CLUSTER=true, got {db}")
        prefix = env_str(env, "REDIS_SESSION_PREFIX", DEFAULT_SESSION_PREFIX)
        if any(c in prefix for c in "{}"):
            raise ConfigError(f"REDIS_SESSION_PREFIX may not contain '{{' or '}}', got {prefix!r}")
        timeout = env_float(env, "REDIS_SOCKET_TIMEOUT", 2.0, minimum=0.05)
        if env.get("REDIS_TLS_CA") and url is not None and urlsplit(url).scheme != "rediss":
            raise ConfigError("REDIS_TLS_CA is set but REDIS_URL is not rediss://")
        return cls(
            url=url,
            host=env_str(env, "REDIS_HOST", "localhost"),
            port=port,
            username=env.get("REDIS_USERNAME") or None,
            password=env.get("REDIS_PASSWORD") or None,
            db=db,
            sentinels=sentinels,
            sentinel_master=env_str(env, "REDIS_SENTINEL_MASTER", "mymaster"),
            cluster=cluster,
            socket_timeout=timeout,
            connect_timeout=env_float(env, "REDIS_CONNECT_TIMEOUT", timeout, minimum=0.05),
            retries=env_int(env, "REDIS_RETRIES", 2, minimum=0),
            session_prefix=prefix,
            session_ttl=env_int(env, "REDIS_SESSION_TTL", DEFAULT_SESSION_TTL, minimum=1),
            tls_ca=_tls_ca(env),
        )

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None or (
            self.url is not None and urlsplit(self.url).scheme == "rediss"
        )

    def with_timeouts(self, seconds: float) -> RedisSettings:
        """A copy with both socket timeouts set to `seconds` (tests use short ones)."""
        return replace(self, socket_timeout=seconds, connect_timeout=seconds)


def _tls_ca(env: Mapping[str, str]) -> str | None:
    path = env.get("REDIS_TLS_CA", "").strip()
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            if b"-----BEGIN" not in f.read():
                raise ConfigError(f"REDIS_TLS_CA: {path!r} is not a PEM file")
    except OSError as e:
        raise ConfigError(f"REDIS_TLS_CA: cannot read {path!r}: {e.strerror}") from None
    return path


def retry_policy(settings: RedisSettings) -> Retry:
    """The one retry policy: only transport errors, exponential backoff with jitter."""
    return Retry(
        ExponentialWithJitterBackoff(base=settings.backoff_base, cap=settings.backoff_cap),
        settings.retries,
        supported_errors=(RedisConnectionError, RedisTimeoutError),
    )


def _common_kwargs(settings: RedisSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": retry_policy(settings),
        "decode_responses": False,
    }
    if settings.username is not None:
        kwargs["username"] = settings.username
    if settings.password is not None:
        kwargs["password"] = settings.password
    if settings.tls_ca is not None:
        kwargs["ssl_ca_certs"] = settings.tls_ca
        if settings.url is None:
            kwargs["ssl"] = True
    return kwargs


class _SentinelMasterRedis(Redis):
    """A master client that also closes the Sentinel connections it discovered the master with."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        if manager is not None:
            await manager.aclose()


def create_redis(settings: RedisSettings) -> RedisClient:
    """A client for the configured deployment; responses are bytes (snapshots are binary)."""
    kwargs = _common_kwargs(settings)
    if settings.mode == "cluster":
        if settings.url is not None:
            return RedisCluster.from_url(settings.url, **kwargs)
        return RedisCluster(host=settings.host, port=settings.port, **kwargs)
    if settings.mode == "sentinel":
        sentinel_kwargs = {
            "socket_timeout": settings.socket_timeout,
            "socket_connect_timeout": settings.connect_timeout,
        }
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(settings.sentinels), sentinel_kwargs=sentinel_kwargs, **kwargs
        )
        client: Redis = sentinel.master_for(
            settings.sentinel_master, redis_class=_SentinelMasterRedis, db=settings.db
        )
        return client
    if settings.url is not None:
        # The URL decides the database (its path), credentials and TLS.
        return Redis.from_url(settings.url, **kwargs)
    return Redis(host=settings.host, port=settings.port, db=settings.db, **kwargs)


async def ping(client: RedisClient, *, within: float = 2.0) -> bool:
    """True when Redis answers PING within `within` seconds; never raises for an outage."""
    try:
        async with asyncio.timeout(within):
            return bool(await client.ping())
    except TRANSPORT_ERRORS as e:
        log.debug("redis ping failed: %s", type(e).__name__)
        return False
