"""Router settings, read once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sessionmesh.auth import TokenTable, parse_tokens
from sessionmesh.config import ConfigError, env_float, env_int, env_str, environ
from sessionmesh.telemetry import TelemetrySettings

DEFAULT_LISTEN = "127.0.0.1:50051"


def parse_address(value: str, var: str, *, allow_port_zero: bool = False) -> str:
    """Check `host:port` (IPv6 as `[::1]:port`); raise ConfigError naming `var`."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{var} must be host:port, got {value!r}")
    number = int(port)
    if number > 65535 or (number == 0 and not allow_port_zero):
        raise ConfigError(f"{var} has an invalid port in {value!r}")
    return f"{host}:{number}"


def parse_nodes(raw: str | None, var: str = "MESH_NODES") -> tuple[str, ...]:
    if raw is None or raw.strip() == "":
        raise ConfigError(f"{var} is required: comma-separated node addresses (host:port,...)")
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

    nodes: tuple[str, ...]  # MESH_NODES; node ids are learned from GetNodeStatus
    tokens: TokenTable = field(repr=False)  # MESH_API_TOKENS
    listen: str = DEFAULT_LISTEN  # MESH_ROUTER_LISTEN; port 0 picks a free port
    load_factor: float = 1.25  # MESH_LOAD_FACTOR: bounded-load cap over the mean
    node_poll_interval: float = 1.0  # MESH_NODE_POLL_INTERVAL (s)
    affinity_refresh_interval: float = 15.0  # MESH_AFFINITY_REFRESH_INTERVAL (s)
    node_timeout: float = 10.0  # MESH_NODE_TIMEOUT (s): deadline of one unary call to a node
    keepalive_time: float = 20.0  # MESH_KEEPALIVE_TIME (s) between pings on idle streams
    keepalive_timeout: float = 10.0  # MESH_KEEPALIVE_TIMEOUT (s) to wait for a ping's answer
    max_message_bytes: int = 1 << 20  # MESH_MAX_MESSAGE_BYTES: larger requests are refused
    grace: float = 5.0  # MESH_ROUTER_GRACE (s) given to calls in flight on stop
    # MESH_METRICS_PORT (Prometheus endpoint; 0 or unset: none), MESH_METRICS_HOST
    # (default 127.0.0.1), MESH_OTEL_CONSOLE; OTLP export follows OTEL_EXPORTER_OTLP_ENDPOINT.
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ConfigError("MESH_NODES holds no node address")
        if self.load_factor < 1.0:
            raise ConfigError(f"MESH_LOAD_FACTOR must be at least 1.0, got {self.load_factor}")
        if len(self.tokens) == 0:
            raise ConfigError("MESH_API_TOKENS holds no tenant:token pair")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RouterSettings:
        env = environ() if env is None else env
        return cls(
            nodes=parse_nodes(env.get("MESH_NODES")),
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
            keepalive_time=_positive(env, "MESH_KEEPALIVE_TIME", 20.0),
            keepalive_timeout=_positive(env, "MESH_KEEPALIVE_TIMEOUT", 10.0),
            max_message_bytes=env_int(env, "MESH_MAX_MESSAGE_BYTES", 1 << 20, minimum=4096),
            grace=env_float(env, "MESH_ROUTER_GRACE", 5.0),
            telemetry=TelemetrySettings.from_env(env),
        )


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = env_float(env, name, default)
    if value <= 0:
        raise ConfigError(f"{name} must be greater than 0, got {value}")
    return value
