"""Console settings from the environment: the router's address and the API token."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from console.errors import ConfigError
from sessionmesh.config import ConfigError as SharedConfigError
from sessionmesh.config import parse_address
from sessionmesh.tls import TransportSecurity, client_channel_security

DEFAULT_ROUTER = "127.0.0.1:50051"


@dataclass(frozen=True)
class ConsoleSettings:
    router: str = DEFAULT_ROUTER  # MESH_ROUTER
    token: str = field(default="", repr=False)  # MESH_TOKEN, required
    timeout: float = 10.0  # MESH_CONSOLE_TIMEOUT: seconds per unary call
    tls_ca: bytes | None = field(default=None, repr=False)  # MESH_TLS_CA: verifies the router
    allow_insecure: bool = False  # MESH_ALLOW_INSECURE: plaintext to a router off loopback
    # MESH_CONSOLE_PASSWORD: a read-only login; the tenant token logs in as an operator
    password: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsoleSettings:
        env = os.environ if env is None else env
        token = env.get("MESH_TOKEN", "").strip()
        if not token:
            raise ConfigError("MESH_TOKEN is required: the router API token of one tenant")
        router = env.get("MESH_ROUTER", "").strip() or DEFAULT_ROUTER
        try:
            router = parse_address(router, "MESH_ROUTER")
        except SharedConfigError as e:
            raise ConfigError(str(e)) from None
        raw = env.get("MESH_CONSOLE_TIMEOUT", "").strip() or str(cls.timeout)
        try:
            timeout = float(raw)
        except ValueError:
            raise ConfigError(f"MESH_CONSOLE_TIMEOUT must be a number, got {raw!r}") from None
        if timeout <= 0:
            raise ConfigError(f"MESH_CONSOLE_TIMEOUT must be above 0, got {raw!r}")
        try:
            security = TransportSecurity.from_env(
                {k: v for k, v in env.items() if k in ("MESH_TLS_CA", "MESH_ALLOW_INSECURE")}
            )
            client_channel_security(
                router, ca=security.public_ca, allow_insecure=security.allow_insecure
            )
        except SharedConfigError as e:
            raise ConfigError(str(e)) from None
        return cls(
            router=router,
            token=token,
            timeout=timeout,
            tls_ca=security.public_ca,
            allow_insecure=security.allow_insecure,
            password=env.get("MESH_CONSOLE_PASSWORD", ""),
        )
