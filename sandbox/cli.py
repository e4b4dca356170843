"""`mesh-sandbox`: serve the sandbox until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from sandbox.app import Sandbox
from sandbox.settings import FLOAT_KNOBS, QR_COUNT_ENV, SandboxSettings
from sessionmesh.config import ConfigError

HELP = {
    "first_qr_ttl": "seconds the first QR code lives",
    "qr_ttl": "seconds each next QR code lives",
    "load_delay": "seconds before the page's app is loaded (window.Debug.VERSION)",
    "qr_delay": "seconds from the page's connection to its first QR code",
    "sync_delay": "seconds from a scan or restore until the account has synced",
    "ws_heartbeat": "seconds between pings of a page's WebSocket; no pong in half: closed",
}


def parse_args(argv: list[str] | None, defaults: SandboxSettings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mesh-sandbox",
        description="An offline stand-in for WhatsApp Web's device linking, with a simulated phone.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8090, help="port to bind (default %(default)s)")
    for name, (var, _, _) in FLOAT_KNOBS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=float,
            default=getattr(defaults, name),
            help=f"{HELP[name]} (env {var}; default %(default)s)",
        )
    parser.add_argument(
        "--qr-count",
        type=int,
        default=defaults.qr_count,
        help=f"QR codes per attempt before the page idles (env {QR_COUNT_ENV}; default %(default)s)",
    )
    return parser.parse_args(argv)


async def serve(settings: SandboxSettings, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Sandbox(settings, host=host, port=port) as sb:
        print(f"mesh-sandbox: serving on {sb.url}", flush=True)
        await stop.wait()
        print("mesh-sandbox: stopping", flush=True)


def main(argv: list[str] | None = None) -> None:
    try:
        defaults = SandboxSettings.from_env(os.environ)
    except ConfigError as e:
        sys.exit(f"mesh-sandbox: {e}")
    args = parse_args(argv, defaults)
    knobs = {name: getattr(args, name) for name in (*FLOAT_KNOBS, "qr_count")}
    try:
        settings = SandboxSettings(**knobs, version=defaults.version)
    except ConfigError as e:
        sys.exit(f"mesh-sandbox: {e}")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(settings, args.host, args.port))
    except OSError as e:
        sys.exit(f"mesh-sandbox: cannot serve on {args.host}:{args.port}: {e}")


if __name__ == "__main__":
    main()
