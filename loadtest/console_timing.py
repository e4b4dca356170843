"""Times each console page's render in headless Chromium, as an operator would open it.

Each page is opened by URL (a new console session), logged into with the API token, and timed
from the login click until the page's script has finished: a heading shows and Streamlit's
"running" widget is gone. Prints one JSON object: page -> seconds (null if it did not render
within the deadline).

    python -m loadtest.console_timing --url http://127.0.0.1:8501/ --token ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

from console.client import MeshClient
from console.errors import ApiError
from console.settings import ConsoleSettings
from sessionmesh import chromium

PAGES = {"overview": "", "latency": "latency", "sessions": "sessions", "planner": "planner",
         "webhooks": "webhooks"}  # fmt: skip
CALL_REPEATS = 5
DONE = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"


async def time_pages(
    url: str, token: str, deadline: float, shots: Path | None = None
) -> dict[str, float | None]:
    timeout_ms = deadline * 1000
    out: dict[str, float | None] = {}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium.executable_path(), args=chromium.launch_args()
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1600})
            for name, path in PAGES.items():
                await page.goto(url + path, timeout=timeout_ms)
                field = page.locator('input[type="password"]')
                await field.wait_for(timeout=timeout_ms)
                await field.fill(token)
                t0 = time.perf_counter()
                await page.get_by_role("button", name="Log in").click()
                try:
                    # Logged in: the form is gone and the sidebar's page links are shown.
                    await field.wait_for(state="detached", timeout=timeout_ms)
                    await page.locator('[data-testid="stSidebarNav"]').wait_for(timeout=timeout_ms)
                    await page.locator('[data-testid="stMain"] h1').first.wait_for(
                        timeout=timeout_ms
                    )
                    await page.wait_for_function(DONE, timeout=timeout_ms, polling=50)
                    out[name] = round(time.perf_counter() - t0, 3)
                    if shots is not None:
                        await page.screenshot(path=shots / f"console-{name}.png", full_page=True)
                except Exception:  # a page that did not render in time: no figure
                    out[name] = None
        finally:
            await browser.close()
    return out


def time_calls(router: str, token: str) -> dict[str, float | None]:
    """Median seconds of each router call the pages make; the session opened is the first
    listed, as the sessions page opens it."""
    api = MeshClient(ConsoleSettings(router=router, token=token, timeout=30.0))
    try:
        listed = api.sessions()
        first = listed[0] if listed else None
        calls: dict[str, Callable[[], Any]] = {
            "GetClusterStatus": api.cluster,
            "ListSessions (all pages)": api.sessions,
            "GetLatency": api.latency,
        }
        if first is not None:
            calls["GetSession"] = lambda: api.session(first.session_id)
            calls["WatchSession (history replay)"] = lambda: api.history(first)
        out: dict[str, float | None] = {}
        for name, call in calls.items():
            took = []
            try:
                for _ in range(CALL_REPEATS):
                    t0 = time.perf_counter()
                    call()
                    took.append(time.perf_counter() - t0)
                out[name] = round(statistics.median(took), 6)  # a call can take under 1 ms
            except ApiError:
                out[name] = None
        return out
    finally:
        api.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="loadtest.console_timing", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--shots", type=Path, default=None, help="save each page's screenshot here")
    parser.add_argument("--deadline", type=float, default=30.0, help="s per page at most")
    parser.add_argument("--router", default="", help="also time the router calls the pages make")
    args = parser.parse_args(argv)
    pages = asyncio.run(time_pages(args.url, args.token, args.deadline, args.shots))
    calls = time_calls(args.router, args.token) if args.router else {}
    print(json.dumps({"pages": pages, "calls": calls}))


if __name__ == "__main__":
    main()
