"""Redis with a password and over TLS (rediss://, REDIS_TLS_CA), as `make cluster` and a
deployment run it."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionmesh.certs import Authority
from sessionmesh.config import ConfigError
from sessionmesh.redis_conn import RedisSettings, create_redis, ping
from tests.redis_server import command, free_port

pytestmark = pytest.mark.redis
PASSWORD = "a-redis-password-0123"


def _answers(port: int) -> bool:
    try:
        return command(port, "PING", timeout=1.0).startswith(("+PONG", "-NOAUTH"))
    except OSError:
        return False


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Authority]]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    ca = Authority(tmp_path / "ca")
    issued = ca.issue("redis")
    port = free_port()
    plain = free_port()
    log = (tmp_path / "redis.log").open("wb")
    proc = subprocess.Popen(
        [binary, "--port", str(plain), "--bind", "127.0.0.1", "--tls-port", str(port),
         "--tls-cert-file", str(issued.cert), "--tls-key-file", str(issued.key),
         "--tls-ca-cert-file", str(ca.ca), "--tls-auth-clients", "no",
         "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not _answers(plain) and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail((tmp_path / "redis.log").read_text())
            time.sleep(0.05)
        yield port, ca
    finally:
        proc.kill()
        proc.wait()
        log.close()


async def check(env: dict[str, str]) -> bool:
    quick = {"REDIS_SOCKET_TIMEOUT": "1", "REDIS_RETRIES": "0"}
    client = create_redis(RedisSettings.from_env({**env, **quick}))
    try:
        return await ping(client, within=5)
    finally:
        await client.aclose()


async def test_rediss_with_a_password_and_a_private_ca(tls_redis: tuple[int, Authority]) -> None:
    port, ca = tls_redis
    url = f"rediss://127.0.0.1:{port}/0"
    assert await check({"REDIS_URL": url, "REDIS_PASSWORD": PASSWORD, "REDIS_TLS_CA": str(ca.ca)})
    with_password = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"
    assert await check({"REDIS_URL": with_password, "REDIS_TLS_CA": str(ca.ca)})
    assert not await check(
        {"REDIS_URL": url, "REDIS_PASSWORD": "wrong", "REDIS_TLS_CA": str(ca.ca)}
    )
    assert not await check({"REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{port}/0"})


def test_tls_settings_are_checked_and_secrets_hidden(tmp_path: Path) -> None:
    ca = Authority(tmp_path / "ca")
    with pytest.raises(ConfigError, match="REDIS_TLS_CA"):
        RedisSettings.from_env({"REDIS_URL": "redis://h:1/0", "REDIS_TLS_CA": str(ca.ca)})
    with pytest.raises(ConfigError, match="REDIS_TLS_CA"):
        RedisSettings.from_env({"REDIS_URL": "rediss://h:1/0", "REDIS_TLS_CA": "/nonexistent"})
    settings = RedisSettings.from_env({"REDIS_URL": f"rediss://:{PASSWORD}@h:1/0"})
    assert settings.tls and PASSWORD not in repr(settings)
