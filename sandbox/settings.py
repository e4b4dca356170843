"""The sandbox's timing knobs, from the environment or set at runtime."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from sessionmesh.config import ConfigError, env_float, env_int

# knob: (environment variable, lowest, highest)
FLOAT_KNOBS: dict[str, tuple[str, float, float]] = {
    "first_qr_ttl": ("SANDBOX_FIRST_QR_TTL", 0.1, 86_400.0),
    "qr_ttl": ("SANDBOX_QR_TTL", 0.1, 86_400.0),
    "load_delay": ("SANDBOX_LOAD_DELAY", 0.0, 3_600.0),
    "qr_delay": ("SANDBOX_QR_DELAY", 0.0, 3_600.0),
    "sync_delay": ("SANDBOX_SYNC_DELAY", 0.0, 3_600.0),
    "ws_heartbeat": ("SANDBOX_WS_HEARTBEAT", 0.1, 3_600.0),
}
QR_COUNT_ENV = "SANDBOX_QR_COUNT"
QR_COUNT_RANGE = (1, 1_000)
KNOBS = (*FLOAT_KNOBS, "qr_count", "version")


def knob_problem(name: str, value: Any) -> str | None:
    """Why `value` is not acceptable for knob `name`, or None if it is."""
    if name in FLOAT_KNOBS:
        _, low, high = FLOAT_KNOBS[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number of seconds"
        if not math.isfinite(value) or not low <= value <= high:
            return f"must be between {low:g} and {high:g} seconds, got {value!r}"
        return None
    if name == "qr_count":
        low_n, high_n = QR_COUNT_RANGE
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be a whole number"
        if not low_n <= value <= high_n:
            return f"must be between {low_n} and {high_n}, got {value!r}"
        return None
    if name == "version":
        if not isinstance(value, str) or not 0 < len(value) <= 64:
            return "must be a string of 1-64 characters"
        return None
    return "is not a sandbox setting"


@dataclass(frozen=True)
class SandboxSettings:
    """Timings in seconds. `Sandbox.configure()` swaps in a changed copy at runtime."""

    first_qr_ttl: float = 60.0
    qr_ttl: float = 20.0
    qr_count: int = 6
    load_delay: float = 0.0
    qr_delay: float = 0.0
    sync_delay: float = 0.0
    # A page's WebSocket is pinged this often and closed when no pong came back within half
    # of it, as a real server's keepalive closes a frozen browser's connection.
    ws_heartbeat: float = 10.0
    version: str = "2.3000.1019000000"

    def __post_init__(self) -> None:
        for f in fields(self):
            problem = knob_problem(f.name, getattr(self, f.name))
            if problem is not None:
                raise ConfigError(f"{f.name} {problem}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SandboxSettings:
        """Read SANDBOX_FIRST_QR_TTL, SANDBOX_QR_TTL, SANDBOX_QR_COUNT, SANDBOX_LOAD_DELAY,
        SANDBOX_QR_DELAY, SANDBOX_SYNC_DELAY and SANDBOX_WS_HEARTBEAT; a bad value raises
        ConfigError naming it."""
        defaults = cls()
        values: dict[str, Any] = {}
        for name, (var, low, high) in FLOAT_KNOBS.items():
            value = env_float(env, var, getattr(defaults, name), minimum=low)
            if not value <= high:
                raise ConfigError(f"{var} must be at most {high:g}, got {value!r}")
            values[name] = value
        count = env_int(env, QR_COUNT_ENV, defaults.qr_count, minimum=QR_COUNT_RANGE[0])
        if count > QR_COUNT_RANGE[1]:
            raise ConfigError(f"{QR_COUNT_ENV} must be at most {QR_COUNT_RANGE[1]}, got {count}")
        values["qr_count"] = count
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
