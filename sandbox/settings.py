"""The sandbox's knobs, from the environment or set at runtime.

The defaults model the real WhatsApp Web page. A knob that makes the page easier than the real
one says so in its help text and is off by default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from sessionmesh.config import ConfigError, env_bool, env_float, env_int, env_str

# knob: (environment variable, lowest, highest)
FLOAT_KNOBS: dict[str, tuple[str, float, float]] = {
    "first_qr_ttl": ("SANDBOX_FIRST_QR_TTL", 0.1, 86_400.0),
    "qr_ttl": ("SANDBOX_QR_TTL", 0.1, 86_400.0),
    "load_delay": ("SANDBOX_LOAD_DELAY", 0.0, 3_600.0),
    "qr_delay": ("SANDBOX_QR_DELAY", 0.0, 3_600.0),
    "sync_delay": ("SANDBOX_SYNC_DELAY", 0.0, 3_600.0),
    "ws_heartbeat": ("SANDBOX_WS_HEARTBEAT", 0.1, 3_600.0),
    "ack_delay": ("SANDBOX_ACK_DELAY", 0.0, 3_600.0),
}
INT_KNOBS: dict[str, tuple[str, int, int]] = {
    "qr_count": ("SANDBOX_QR_COUNT", 1, 1_000),
}
BOOL_KNOBS: dict[str, str] = {
    "refuse_webdriver": "SANDBOX_REFUSE_WEBDRIVER",
    "legacy_qr_dom": "SANDBOX_LEGACY_QR_DOM",
    "passkey": "SANDBOX_PASSKEY",
}
# Page weight: a preset, and optional overrides of its components (-1: the preset's value).
WEIGHT_KNOBS: dict[str, tuple[str, float]] = {
    "heap_mb": ("SANDBOX_HEAP_MB", 4_096.0),
    "script_mb": ("SANDBOX_SCRIPT_MB", 256.0),
    "idb_mb": ("SANDBOX_IDB_MB", 4_096.0),
}
QR_COUNT_ENV = INT_KNOBS["qr_count"][0]
INITIAL_STATE_ENV = "SANDBOX_INITIAL_STATE"
PAGE_WEIGHT_ENV = "SANDBOX_PAGE_WEIGHT"
VERSION_ENV = "SANDBOX_VERSION"

# Socket states that end a session. The first three happen before any login (the page gets
# them as it opens); the TOS ones belong to an account (`POST /phone/state`).
END_STATES = ("DEPRECATED_VERSION", "PROXYBLOCK", "UNLAUNCHED", "TOS_BLOCK", "SMB_TOS_BLOCK")


@dataclass(frozen=True)
class Weight:
    """What a page holds: JS heap in retained objects, script parsed, IndexedDB rows written."""

    heap_mb: float
    script_mb: float
    idb_mb: float


# `calibrated` matches the public figures for a real tab (150-300 MB of renderer memory, tens of
# MB in IndexedDB); docs/sandbox.md has the measurement. `light` keeps every code path, for
# tests that ask for it by name.
WEIGHT_PRESETS: dict[str, Weight] = {
    "calibrated": Weight(heap_mb=100.0, script_mb=12.0, idb_mb=30.0),
    "light": Weight(heap_mb=4.0, script_mb=0.25, idb_mb=0.25),
}

KNOBS = (
    *FLOAT_KNOBS,
    *INT_KNOBS,
    *BOOL_KNOBS,
    *WEIGHT_KNOBS,
    "page_weight",
    "initial_state",
    "version",
)


def knob_problem(name: str, value: Any) -> str | None:
    """Why `value` is not acceptable for knob `name`, or None if it is."""
    if name in FLOAT_KNOBS:
        _, low, high = FLOAT_KNOBS[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number of seconds"
        if not math.isfinite(value) or not low <= value <= high:
            return f"must be between {low:g} and {high:g} seconds, got {value!r}"
        return None
    if name in INT_KNOBS:
        _, low_n, high_n = INT_KNOBS[name]
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be a whole number"
        if not low_n <= value <= high_n:
            return f"must be between {low_n} and {high_n}, got {value!r}"
        return None
    if name in BOOL_KNOBS:
        return None if isinstance(value, bool) else "must be true or false"
    if name in WEIGHT_KNOBS:
        _, high = WEIGHT_KNOBS[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number of megabytes (-1: the preset's)"
        if not math.isfinite(value) or not (value == -1 or 0 <= value <= high):
            return f"must be -1 or between 0 and {high:g} MB, got {value!r}"
        return None
    if name == "page_weight":
        if value not in WEIGHT_PRESETS:
            return f"must be one of {', '.join(WEIGHT_PRESETS)}, got {value!r}"
        return None
    if name == "initial_state":
        if value != "" and value not in END_STATES:
            return f"must be empty or one of {', '.join(END_STATES)}, got {value!r}"
        return None
    if name == "version":
        if not isinstance(value, str) or not 0 < len(value) <= 64:
            return "must be a string of 1-64 characters"
        return None
    return "is not a sandbox setting"


@dataclass(frozen=True)
class SandboxSettings:
    """Timings in seconds, page behaviour and weight. `Sandbox.configure()` swaps in a changed
    copy at runtime; pages opened after that see it."""

    first_qr_ttl: float = 60.0
    qr_ttl: float = 20.0
    qr_count: int = 6
    load_delay: float = 0.0
    qr_delay: float = 0.0
    sync_delay: float = 0.0
    # A page's WebSocket is pinged this often and closed when no pong came back within half
    # of it, as a real server's keepalive closes a frozen browser's connection.
    ws_heartbeat: float = 10.0
    # Seconds between the acks of a message a session sends: server, then device, then read.
    ack_delay: float = 0.5
    # Also refuse a browser that reports navigator.webdriver (harder than the real page is known
    # to be; off by default).
    refuse_webdriver: bool = False
    # Put the QR payload in div[data-ref] as the page did before 2024 (easier; off by default).
    legacy_qr_dom: bool = False
    # Ask for a passkey (navigator.credentials.get, rpId whatsapp.com) after a scan.
    passkey: bool = False
    # The end state every newly opened page gets instead of a QR or a login ("" for none).
    initial_state: str = ""
    page_weight: str = "calibrated"
    heap_mb: float = -1.0
    script_mb: float = -1.0
    idb_mb: float = -1.0
    version: str = "2.3000.1031980585"

    def __post_init__(self) -> None:
        for f in fields(self):
            problem = knob_problem(f.name, getattr(self, f.name))
            if problem is not None:
                raise ConfigError(f"{f.name} {problem}")

    @property
    def weight(self) -> Weight:
        """The page weight: the preset with any component overridden."""
        preset = WEIGHT_PRESETS[self.page_weight]
        return Weight(
            heap_mb=preset.heap_mb if self.heap_mb < 0 else self.heap_mb,
            script_mb=preset.script_mb if self.script_mb < 0 else self.script_mb,
            idb_mb=preset.idb_mb if self.idb_mb < 0 else self.idb_mb,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SandboxSettings:
        """Read every SANDBOX_* knob; a bad value raises ConfigError naming its variable."""
        defaults = cls()
        values: dict[str, Any] = {}
        for name, (var, low, high) in FLOAT_KNOBS.items():
            value = env_float(env, var, getattr(defaults, name), minimum=low)
            if not value <= high:
                raise ConfigError(f"{var} must be at most {high:g}, got {value!r}")
            values[name] = value
        for name, (var, low_n, high_n) in INT_KNOBS.items():
            count = env_int(env, var, getattr(defaults, name), minimum=low_n)
            if count > high_n:
                raise ConfigError(f"{var} must be at most {high_n}, got {count}")
            values[name] = count
        for name, var in BOOL_KNOBS.items():
            values[name] = env_bool(env, var, getattr(defaults, name))
        for name, (var, high) in WEIGHT_KNOBS.items():
            mb = env_float(env, var, getattr(defaults, name), minimum=-1.0)
            if not (mb == -1 or 0 <= mb <= high):
                raise ConfigError(f"{var} must be -1 or between 0 and {high:g}, got {mb!r}")
            values[name] = mb
        for name, var in (
            ("page_weight", PAGE_WEIGHT_ENV),
            ("initial_state", INITIAL_STATE_ENV),
            ("version", VERSION_ENV),
        ):
            text = env_str(env, var, getattr(defaults, name))
            problem = knob_problem(name, text)
            if problem is not None:
                raise ConfigError(f"{var} {problem}")
            values[name] = text
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def coerce(name: str, value: Any) -> Any:
    """A knob value from JSON in the type the settings hold (whole seconds become floats)."""
    if (name in FLOAT_KNOBS or name in WEIGHT_KNOBS) and not isinstance(value, bool):
        return float(value)
    return value
