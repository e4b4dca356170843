"""`mesh-node`: run one session node until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from node.server import NodeServer
from node.settings import NodeSettings
from sessionmesh.config import ConfigError


async def serve(settings: NodeSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with NodeServer(settings) as server:
        print(f"mesh-node {server.node_id} listening on {server.address}", flush=True)
        await stop.wait()


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = NodeSettings.from_env(os.environ)
    except ConfigError as e:
        sys.exit(f"mesh-node: {e}")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
