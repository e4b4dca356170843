"""`mesh-node`: run one session node until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from node.server import NodeServer
from node.settings import NodeSettings
from sessionmesh.config import ConfigError, setup_logging
from sessionmesh.telemetry import setup_telemetry


async def serve(settings: NodeSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with NodeServer(settings) as server:
        print(f"mesh-node {server.node_id} listening on {server.address}", flush=True)
        await stop.wait()


def main() -> None:
    try:
        setup_logging(os.environ)
        settings = NodeSettings.from_env(os.environ)
    except ConfigError as e:
        sys.exit(f"mesh-node: {e}")
    t = settings.telemetry
    try:
        telemetry = setup_telemetry(
            "mesh-node",
            prometheus_port=t.metrics_port,
            prometheus_host=t.metrics_host,
            console=t.console,
            instance_id=settings.node_id,
        )
    except OSError as e:
        sys.exit(
            f"mesh-node: cannot serve metrics on {t.metrics_host}:{t.metrics_port} "
            f"(MESH_METRICS_PORT): {e}"
        )
    try:
        asyncio.run(serve(settings))
    finally:
        telemetry.shutdown()  # flush last, after the node has stopped


if __name__ == "__main__":
    main()
