"""Console settings from the environment: the router's address and the API token."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from console.errors import ConfigError

DEFAULT_ROUTER = "127.0.0.1:50051"


@dataclass(frozen=True)
class ConsoleSettings:
    router: str = DEFAULT_ROUTER  # MESH_ROUTER
    token: str = field(default="", repr=False)  # MESH_TOKEN, required
    timeout: float = 10.0  # MESH_CONSOLE_TIMEOUT: seconds per unary call

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsoleSettings:
        env = os.environ if env is None else env
        token = env.get("MESH_TOKEN", "").strip()
        if not token:
            raise ConfigError("MESH_TOKEN is required: the router API token of one tenant")
        router = env.get("MESH_ROUTER", "").strip() or DEFAULT_ROUTER
        host, sep, port = router.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ConfigError(f"MESH_ROUTER must be host:port, got {router!r}")
        raw = env.get("MESH_CONSOLE_TIMEOUT", "").strip() or str(cls.timeout)
        try:
            timeout = float(raw)
        except ValueError:
            raise ConfigError(f"MESH_CONSOLE_TIMEOUT must be a number, got {raw!r}") from None
        if timeout <= 0:
            raise ConfigError(f"MESH_CONSOLE_TIMEOUT must be above 0, got {raw!r}")
        return cls(router=router, token=token, timeout=timeout)
