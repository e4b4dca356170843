"""Reading settings from the environment: a bad value fails at start-up, naming its variable."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name)
    return default if value is None or value == "" else value


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


# The one rule for booleans, in every process: these words, any case; anything else is an error.
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def environ() -> Mapping[str, str]:
    return os.environ


def split_address(value: str, var: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:port`) -> (host, port); ConfigError naming `var` when bad.

    The one `host:port` parser: settings, clients and the launchers all use it."""
    text = value.strip()
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"{var} must be host:port (IPv6 as [addr]:port), got {value!r}")
    if not sep or not host or not port.isdigit() or any(c.isspace() for c in host):
        raise ConfigError(f"{var} must be host:port, got {value!r}")
    number = int(port)
    if number > 65535 or (number == 0 and not allow_port_zero):
        raise ConfigError(f"{var} has an invalid port in {value!r}")
    return host, number


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(value: str, var: str, *, allow_port_zero: bool = False) -> str:
    """`host:port` checked and normalised (see `split_address`)."""
    return join_address(*split_address(value, var, allow_port_zero=allow_port_zero))


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback IPs: reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


LOG_LEVEL_VAR = "LOG_LEVEL"
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(env: Mapping[str, str]) -> str:
    """LOG_LEVEL for every process (default INFO)."""
    level = env_str(env, LOG_LEVEL_VAR, "INFO").strip().upper()
    if level not in _LEVELS:
        raise ConfigError(f"{LOG_LEVEL_VAR} must be one of {', '.join(_LEVELS)}, got {level!r}")
    return level


def setup_logging(env: Mapping[str, str]) -> None:
    logging.basicConfig(
        level=log_level(env), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
