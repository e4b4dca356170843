"""A webhook receiver for the benchmarks: answers 200 at once, records each arrival.

`python -m bench.webhook_receiver PORT`; GET /stats gives the count, the distinct webhook-ids,
the first and last arrival, and each delivery's lag (arrival - the envelope's event time)."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time

from aiohttp import web

arrivals: list[float] = []
lags: list[float] = []
ids: set[str] = set()


async def hook(request: web.Request) -> web.Response:
    now = time.time()
    body = json.loads(await request.read())
    arrivals.append(now)
    ids.add(request.headers["webhook-id"])
    when = dt.datetime.fromisoformat(body["time"].replace("Z", "+00:00")).timestamp()
    lags.append(now - when)
    return web.Response(text="ok")


async def stats(_request: web.Request) -> web.Response:
    return web.json_response(
        {
            "count": len(arrivals),
            "unique": len(ids),
            "first": arrivals[0] if arrivals else 0,
            "last": arrivals[-1] if arrivals else 0,
            "lags": lags,
        }
    )


async def reset(_request: web.Request) -> web.Response:
    arrivals.clear()
    lags.clear()
    ids.clear()
    return web.Response(text="ok")


def main() -> None:
    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
