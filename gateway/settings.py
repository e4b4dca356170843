"""Gateway settings, read once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sessionmesh.config import (
    ConfigError,
    env_bool,
    env_float,
    env_int,
    env_str,
    environ,
    is_loopback,
    parse_address,
    split_address,
)

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_ROUTER = "127.0.0.1:50051"


def _pem_path(env: Mapping[str, str], var: str) -> Path | None:
    raw = env.get(var, "").strip()
    if not raw:
        return None
    path = Path(raw)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{var}: cannot read {raw!r}: {e.strerror or e}") from None
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{var}: {raw!r} is not a PEM file")
    return path


@dataclass(frozen=True)
class GatewaySettings:
    """Everything `mesh-gateway` needs; `from_env()` names the variable of any bad value."""

    listen: str = DEFAULT_LISTEN  # MESH_GATEWAY_LISTEN; port 0 picks a free port
    router: str = DEFAULT_ROUTER  # MESH_ROUTER: the router's public gRPC address
    # MESH_TLS_CA: verify the router's TLS certificate with this CA (PEM); None: plaintext,
    # which is refused toward a router off loopback unless MESH_ALLOW_INSECURE.
    router_ca: bytes | None = field(default=None, repr=False)
    # MESH_GATEWAY_TLS_CERT / MESH_GATEWAY_TLS_KEY: serve HTTPS with these (PEM files)
    tls_cert: Path | None = None
    tls_key: Path | None = field(default=None, repr=False)
    allow_insecure: bool = False  # MESH_ALLOW_INSECURE: plaintext off loopback, both ways
    timeout: float = 30.0  # MESH_GATEWAY_TIMEOUT (s): deadline of one unary call to the router
    send_timeout: float = 300.0  # MESH_GATEWAY_SEND_TIMEOUT (s): a send may wait in its queue
    heartbeat: float = 15.0  # MESH_GATEWAY_HEARTBEAT (s): SSE comment lines on idle streams
    max_body_bytes: int = 4 << 20  # MESH_GATEWAY_MAX_BODY: larger request bodies get 413
    grace: float = 5.0  # MESH_GATEWAY_GRACE (s) for requests in flight at stop
    access_log: bool = True  # MESH_GATEWAY_ACCESS_LOG: one line per request
    docs: bool = True  # MESH_GATEWAY_DOCS: serve /docs (the OpenAPI document is always served)

    def __post_init__(self) -> None:
        host, _ = split_address(self.listen, "MESH_GATEWAY_LISTEN", allow_port_zero=True)
        if (self.tls_cert is None) != (self.tls_key is None):
            given, missing = ("MESH_GATEWAY_TLS_CERT", "MESH_GATEWAY_TLS_KEY")[
                :: 1 if self.tls_cert else -1
            ]
            raise ConfigError(f"{given} is set but {missing} is not: give both")
        if not (is_loopback(host) or self.tls_cert is not None or self.allow_insecure):
            raise ConfigError(
                f"MESH_GATEWAY_LISTEN {self.listen} is not a loopback address and the gateway "
                "has no TLS: set MESH_GATEWAY_TLS_CERT and MESH_GATEWAY_TLS_KEY "
                "(or MESH_ALLOW_INSECURE=true where something else secures the network)"
            )
        router_host, _ = split_address(self.router, "MESH_ROUTER")
        if not (is_loopback(router_host) or self.router_ca is not None or self.allow_insecure):
            raise ConfigError(
                f"MESH_ROUTER {self.router} is not a loopback address: set MESH_TLS_CA to the "
                "router's CA (or MESH_ALLOW_INSECURE=true to send tokens in clear)"
            )
        for name, value in (
            ("MESH_GATEWAY_TIMEOUT", self.timeout),
            ("MESH_GATEWAY_SEND_TIMEOUT", self.send_timeout),
            ("MESH_GATEWAY_HEARTBEAT", self.heartbeat),
        ):
            if value <= 0:
                raise ConfigError(f"{name} must be greater than 0, got {value}")

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        env = environ() if env is None else env
        ca_path = _pem_path(env, "MESH_TLS_CA")
        return cls(
            listen=parse_address(
                env_str(env, "MESH_GATEWAY_LISTEN", DEFAULT_LISTEN),
                "MESH_GATEWAY_LISTEN",
                allow_port_zero=True,
            ),
            router=parse_address(env_str(env, "MESH_ROUTER", DEFAULT_ROUTER), "MESH_ROUTER"),
            router_ca=ca_path.read_bytes() if ca_path is not None else None,
            tls_cert=_pem_path(env, "MESH_GATEWAY_TLS_CERT"),
            tls_key=_pem_path(env, "MESH_GATEWAY_TLS_KEY"),
            allow_insecure=env_bool(env, "MESH_ALLOW_INSECURE", False),
            timeout=env_float(env, "MESH_GATEWAY_TIMEOUT", 30.0),
            send_timeout=env_float(env, "MESH_GATEWAY_SEND_TIMEOUT", 300.0),
            heartbeat=env_float(env, "MESH_GATEWAY_HEARTBEAT", 15.0),
            max_body_bytes=env_int(env, "MESH_GATEWAY_MAX_BODY", 4 << 20, minimum=1024),
            grace=env_float(env, "MESH_GATEWAY_GRACE", 5.0),
            access_log=env_bool(env, "MESH_GATEWAY_ACCESS_LOG", True),
            docs=env_bool(env, "MESH_GATEWAY_DOCS", True),
        )
