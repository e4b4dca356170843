"""Router settings and API tokens: good values parse, bad ones name their variable."""

from __future__ import annotations

import pytest

from router.settings import RouterSettings
from sessionmesh.auth import TokenTable, bearer_token, parse_tokens
from sessionmesh.config import ConfigError

TOKEN_A = "a" * 16
TOKEN_B = "0123456789abcdef-XYZ"
BASE = {"MESH_NODES": "127.0.0.1:50061,127.0.0.1:50062", "MESH_API_TOKENS": f"acme:{TOKEN_A}"}


def test_tokens_parse_and_map_to_tenants() -> None:
    table = parse_tokens(f" acme:{TOKEN_A} , globex:{TOKEN_B},, acme:{TOKEN_A}2 ")
    assert len(table) == 3
    assert table.tenants == ("acme", "globex")
    assert table.tenant_for(TOKEN_A) == "acme"
    assert table.tenant_for(TOKEN_A + "2") == "acme"
    assert table.tenant_for(TOKEN_B) == "globex"
    assert table.tenant_for("nope" * 4) is None
    assert table.tenant_for("") is None


def test_token_table_repr_hides_tokens() -> None:
    table = parse_tokens(f"acme:{TOKEN_B}")
    assert TOKEN_B not in repr(table)
    assert "acme" in repr(table)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("", "is required"),
        (" , ", "holds no"),
        (f"acme{TOKEN_B}", "entry 1 is not of the form tenant:token"),
        (f"acme:{TOKEN_A},{TOKEN_B}", "entry 2 is not of the form"),
        (f":{TOKEN_B}", "entry 1: the tenant"),
        (f"ac me:{TOKEN_B}", "entry 1: the tenant"),
        ("acme:short-secret-1", "at least 16"),
        (f"acme:{TOKEN_B[:8]} {TOKEN_B[8:]}", "whitespace"),
        (
            f"acme:{TOKEN_B},globex:{TOKEN_B}",
            "entry 2: the token for tenant 'globex' is already used",
        ),
    ],
)
def test_bad_tokens_name_the_variable_but_never_the_token(raw: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_tokens(raw)
    message = str(info.value)
    assert "MESH_API_TOKENS" in message
    assert needle in message
    for secret in (TOKEN_B, TOKEN_B[:8], TOKEN_B[8:], "short-secret-1", "acme" + TOKEN_B):
        assert secret not in message


def test_bearer_token() -> None:
    assert bearer_token([("authorization", f"Bearer {TOKEN_A}")]) == TOKEN_A
    assert bearer_token([("x", "y"), ("Authorization", f"bearer  {TOKEN_A} ")]) == TOKEN_A
    assert bearer_token([("authorization", TOKEN_A)]) is None
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token([("authorization", "Bearer ")]) is None
    assert bearer_token([]) is None
    assert bearer_token(None) is None


def test_settings_from_env_defaults() -> None:
    s = RouterSettings.from_env(BASE)
    assert s.nodes == ("127.0.0.1:50061", "127.0.0.1:50062")
    assert s.listen == "127.0.0.1:50051"
    assert s.load_factor == 1.25
    assert s.node_poll_interval == 1.0
    assert s.max_message_bytes == 1 << 20
    assert isinstance(s.tokens, TokenTable)
    assert TOKEN_A not in repr(s)


def test_settings_from_env_overrides() -> None:
    s = RouterSettings.from_env(
        {
            **BASE,
            "MESH_ROUTER_LISTEN": "0.0.0.0:0",
            "MESH_ALLOW_INSECURE": "true",
            "MESH_LOAD_FACTOR": "1.5",
            "MESH_NODE_POLL_INTERVAL": "0.2",
            "MESH_KEEPALIVE_TIME": "30",
        }
    )
    assert (s.listen, s.load_factor, s.node_poll_interval, s.keepalive_time) == (
        "0.0.0.0:0",
        1.5,
        0.2,
        30.0,
    )


@pytest.mark.parametrize(
    ("override", "var"),
    [
        ({"MESH_NODES": ""}, "MESH_NODES"),
        ({"MESH_NODES": "localhost"}, "MESH_NODES"),
        ({"MESH_NODES": "a:1,a:1"}, "MESH_NODES"),
        ({"MESH_NODES": "a:0"}, "MESH_NODES"),
        ({"MESH_API_TOKENS": ""}, "MESH_API_TOKENS"),
        ({"MESH_ROUTER_LISTEN": "nope"}, "MESH_ROUTER_LISTEN"),
        ({"MESH_ROUTER_LISTEN": "h:70000"}, "MESH_ROUTER_LISTEN"),
        ({"MESH_LOAD_FACTOR": "0.9"}, "MESH_LOAD_FACTOR"),
        ({"MESH_LOAD_FACTOR": "x"}, "MESH_LOAD_FACTOR"),
        ({"MESH_NODE_POLL_INTERVAL": "0"}, "MESH_NODE_POLL_INTERVAL"),
        ({"MESH_KEEPALIVE_TIME": "-1"}, "MESH_KEEPALIVE_TIME"),
        ({"MESH_MAX_MESSAGE_BYTES": "10"}, "MESH_MAX_MESSAGE_BYTES"),
    ],
)
def test_bad_settings_name_their_variable(override: dict[str, str], var: str) -> None:
    env = {**BASE, **override}
    with pytest.raises(ConfigError, match=var):
        RouterSettings.from_env(env)
    if "MESH_NODES" in override and override["MESH_NODES"] == "":
        del env["MESH_NODES"]
        with pytest.raises(ConfigError, match=var):
            RouterSettings.from_env(env)


def test_redis_makes_mesh_nodes_optional_and_reads_the_failover_settings() -> None:
    env = {
        "MESH_API_TOKENS": f"acme:{TOKEN_A}",
        "REDIS_URL": "redis://127.0.0.1:6390/0",
        "MESH_DEAD_AFTER": "2.5",
        "MESH_FAILOVER_PARALLELISM": "8",
        "MESH_ADMIN_TENANTS": "ops, acme",
        "MESH_REDIS_PREFIX": "m1:",
    }
    settings = RouterSettings.from_env(env)
    assert settings.nodes == ()
    assert settings.redis is not None and settings.redis.url == "redis://127.0.0.1:6390/0"
    assert settings.dead_after == 2.5
    assert settings.failover_parallelism == 8
    assert settings.admin_tenants == frozenset({"ops", "acme"})
    assert settings.mesh_prefix == "m1:"
    defaults = RouterSettings.from_env(BASE)
    assert defaults.redis is None and defaults.dead_after == 3.0
    assert defaults.failover_parallelism == 4 and defaults.admin_tenants == frozenset()
    assert defaults.mesh_prefix == "mesh:"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"MESH_NODES": ""}, "MESH_NODES is required without Redis"),
        ({"MESH_DEAD_AFTER": "0"}, "MESH_DEAD_AFTER"),
        ({"MESH_FAILOVER_PARALLELISM": "0"}, "MESH_FAILOVER_PARALLELISM"),
        ({"MESH_FAILOVER_PARALLELISM": "33"}, "MESH_FAILOVER_PARALLELISM"),
        ({"MESH_ADMIN_TENANTS": "ops,b@d"}, "MESH_ADMIN_TENANTS"),
        ({"MESH_REDIS_PREFIX": "m{1}:"}, "MESH_REDIS_PREFIX"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
    ],
)
def test_bad_failover_settings_name_their_variable(override: dict[str, str], needle: str) -> None:
    env = {**BASE, **override}
    with pytest.raises(ConfigError, match=needle.replace("{", r"\{")):
        RouterSettings.from_env(env)


def test_redis_password_never_in_repr() -> None:
    env = {"MESH_API_TOKENS": f"acme:{TOKEN_A}", "REDIS_URL": "redis://u:s3cret-pw@h:6379/0"}
    assert "s3cret-pw" not in repr(RouterSettings.from_env(env))
