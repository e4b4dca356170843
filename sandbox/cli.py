"""`mesh-sandbox`: serve the sandbox until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from sandbox.app import Sandbox
from sandbox.settings import (
    BOOL_KNOBS,
    END_STATES,
    FLOAT_KNOBS,
    INITIAL_STATE_ENV,
    INT_KNOBS,
    PAGE_WEIGHT_ENV,
    WEIGHT_KNOBS,
    WEIGHT_PRESETS,
    SandboxSettings,
)
from sessionmesh.config import ConfigError

STATE_ENV = "SANDBOX_STATE"

HELP = {
    "first_qr_ttl": "seconds the first QR code lives",
    "qr_ttl": "seconds each next QR code lives",
    "qr_count": "QR codes per attempt before the page idles",
    "load_delay": "seconds before the page's app is loaded (window.Debug.VERSION)",
    "qr_delay": "seconds from the page's connection to its first QR code",
    "sync_delay": "seconds from a scan or restore until the account has synced",
    "ws_heartbeat": "seconds between pings of a page's WebSocket; no pong in half: closed",
    "ack_delay": "seconds between a sent message's acks (server, device, read)",
    "refuse_webdriver": "also refuse browsers with navigator.webdriver (harder than known)",
    "legacy_qr_dom": "also put the QR payload in div[data-ref] (easier: the pre-2024 page)",
    "passkey": "ask for a passkey after a scan (a headless browser cannot give one)",
    "heap_mb": "JS heap a page holds, MB (-1: the preset's)",
    "script_mb": "script a page parses, MB (-1: the preset's)",
    "idb_mb": "IndexedDB rows a linked page writes, MB (-1: the preset's)",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_args(argv: list[str] | None, defaults: SandboxSettings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mesh-sandbox",
        description="An offline stand-in for WhatsApp Web, with a simulated phone.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8090, help="port to bind (default %(default)s)")
    parser.add_argument(
        "--state",
        type=Path,
        default=os.environ.get(STATE_ENV) or None,
        help=f"file where the simulated server keeps its linked devices (env {STATE_ENV}; "
        "default: memory only)",
    )
    for name, (var, _, _) in FLOAT_KNOBS.items():
        parser.add_argument(
            _flag(name),
            type=float,
            default=getattr(defaults, name),
            help=f"{HELP[name]} (env {var}; default %(default)s)",
        )
    for name, (var, _, _) in INT_KNOBS.items():
        parser.add_argument(
            _flag(name),
            type=int,
            default=getattr(defaults, name),
            help=f"{HELP[name]} (env {var}; default %(default)s)",
        )
    for name, var in BOOL_KNOBS.items():
        parser.add_argument(
            _flag(name),
            action=argparse.BooleanOptionalAction,
            default=getattr(defaults, name),
            help=f"{HELP[name]} (env {var}; default %(default)s)",
        )
    parser.add_argument(
        "--page-weight",
        choices=tuple(WEIGHT_PRESETS),
        default=defaults.page_weight,
        help=f"page weight preset (env {PAGE_WEIGHT_ENV}; default %(default)s)",
    )
    for name, (var, _) in WEIGHT_KNOBS.items():
        parser.add_argument(
            _flag(name),
            type=float,
            default=getattr(defaults, name),
            help=f"{HELP[name]} (env {var}; default %(default)s)",
        )
    parser.add_argument(
        "--initial-state",
        choices=("", *END_STATES),
        default=defaults.initial_state,
        help=f"end state every new page gets (env {INITIAL_STATE_ENV}; default: none)",
    )
    return parser.parse_args(argv)


async def serve(settings: SandboxSettings, host: str, port: int, state: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Sandbox(settings, host=host, port=port, state_path=state) as sb:
        print(f"mesh-sandbox: serving on {sb.url}", flush=True)
        await stop.wait()
        print("mesh-sandbox: stopping", flush=True)


def main(argv: list[str] | None = None) -> None:
    try:
        defaults = SandboxSettings.from_env(os.environ)
    except ConfigError as e:
        sys.exit(f"mesh-sandbox: {e}")
    args = parse_args(argv, defaults)
    names = (
        *FLOAT_KNOBS,
        *INT_KNOBS,
        *BOOL_KNOBS,
        *WEIGHT_KNOBS,
        "page_weight",
        "initial_state",
    )
    knobs = {name: getattr(args, name) for name in names}
    try:
        settings = SandboxSettings(**knobs, version=defaults.version)
    except ConfigError as e:
        sys.exit(f"mesh-sandbox: {e}")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(settings, args.host, args.port, args.state))
    except ValueError as e:  # a state file that is not ours
        sys.exit(f"mesh-sandbox: {e}")
    except OSError as e:
        sys.exit(f"mesh-sandbox: cannot serve on {args.host}:{args.port}: {e}")


if __name__ == "__main__":
    main()
