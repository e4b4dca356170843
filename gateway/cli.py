"""`mesh-gateway`: serve the HTTP API with settings from the environment until SIGINT or
SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
import sys

from gateway.server import GatewayServer
from gateway.settings import GatewaySettings
from sessionmesh.config import ConfigError, setup_logging


def raise_open_files_limit() -> None:
    """Each event stream holds a socket: allow as many as the hard limit lets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def run(settings: GatewaySettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with GatewayServer(settings) as server:
        gc.freeze()  # what start-up made lives as long as the process: keep it out of collections
        print(f"mesh-gateway listening on {server.url} (router {settings.router})", flush=True)
        stopped = asyncio.ensure_future(server.wait_closed())
        waiting = asyncio.ensure_future(stop.wait())
        await asyncio.wait({stopped, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        logging.getLogger(__name__).info("stopping")


def main() -> None:
    try:
        setup_logging(os.environ)
        settings = GatewaySettings.from_env(os.environ)
    except ConfigError as e:
        print(f"mesh-gateway: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    raise_open_files_limit()
    try:
        asyncio.run(run(settings))
    except OSError as e:
        print(f"mesh-gateway: {e}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
