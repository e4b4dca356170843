"""`mesh-router`: run the router with settings from the environment until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from router.server import RouterServer
from router.settings import RouterSettings
from sessionmesh.config import ConfigError, setup_logging
from sessionmesh.telemetry import setup_telemetry


async def run(settings: RouterSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with RouterServer(settings) as server:
        print(f"mesh-router listening on {server.address}", flush=True)
        await stop.wait()
        logging.getLogger(__name__).info("stopping")


def main() -> None:
    try:
        setup_logging(os.environ)
        settings = RouterSettings.from_env(os.environ)
    except ConfigError as e:
        print(f"mesh-router: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    t = settings.telemetry
    try:
        telemetry = setup_telemetry(
            "mesh-router",
            prometheus_port=t.metrics_port,
            prometheus_host=t.metrics_host,
            console=t.console,
        )
    except OSError as e:
        print(
            f"mesh-router: cannot serve metrics on {t.metrics_host}:{t.metrics_port} "
            f"(MESH_METRICS_PORT): {e}",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    try:
        asyncio.run(run(settings))
    except OSError as e:
        print(f"mesh-router: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        telemetry.shutdown()  # flush last, after the router has stopped


if __name__ == "__main__":
    main()
