"""A real headless Chromium loads the running console; each page is screenshotted under docs/."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import pytest

from sessionmesh import chromium
from tests.console.conftest import ConsoleMesh
from tests.helpers import DEADLINE, free_port

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
# The README's screenshots are remade on request only (MESH_SCREENSHOTS=1), so a test run
# leaves the checkout as it found it; otherwise they go to the test's own folder.
DOCS_SHOTS = ROOT / "docs" / "screenshots"

# url path, what the page must show once loaded, a chart to wait for
PAGES = [
    ("overview", "", "Sessions by state", True),
    ("latency", "latency", "By phase", True),
    ("sessions", "sessions?session=beta", "Event history", False),
    ("planner", "planner", "All tiers", False),
]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _start(port: int, mesh: ConsoleMesh, log: IO[str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "console" / "app.py")]
    command += ["--server.headless", "true", "--server.port", str(port)]
    command += ["--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    env = {**os.environ, "MESH_ROUTER": mesh.router, "MESH_TOKEN": mesh.token}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _read(path: str) -> str:
    return Path(path).read_text(errors="replace")


@pytest.fixture
async def console_url(console_mesh: ConsoleMesh) -> AsyncIterator[str]:
    """`streamlit run console/app.py` against the mesh; its output is printed if a test fails."""
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="console-", suffix=".log", delete=False)
    proc = _start(port, console_mesh, log)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + DEADLINE
        while not await asyncio.to_thread(_healthy, f"{url}_stcore/health"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the console did not start:\n{_read(log.name)}")
            await asyncio.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        print(_read(log.name))
        log.close()
        os.unlink(log.name)


async def log_in(page: Any, token: str, timeout_ms: float) -> None:
    """Each page load is a new console session: log in with the API token."""
    field = page.locator('input[type="password"]')
    await field.wait_for(timeout=timeout_ms)
    await field.fill(token)
    await page.get_by_role("button", name="Log in").click()


async def test_each_page_renders_in_chromium_and_is_screenshotted(
    console_url: str, console_mesh: ConsoleMesh, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    shots = DOCS_SHOTS if os.environ.get("MESH_SCREENSHOTS") == "1" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    timeout_ms = DEADLINE * 1000
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium.executable_path(), args=chromium.launch_args()
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 2000})
            for name, path, marker, chart in PAGES:
                print(name, "start", time.monotonic())
                await page.goto(console_url + path, timeout=timeout_ms)
                await log_in(page, console_mesh.token, timeout_ms)
                await page.get_by_text(marker, exact=False).first.wait_for(timeout=timeout_ms)
                if chart:
                    await page.locator(
                        '[data-testid="stVegaLiteChart"] canvas, '
                        '[data-testid="stVegaLiteChart"] svg'
                    ).first.wait_for(timeout=timeout_ms)
                if name in ("planner", "sessions"):
                    await page.locator('[data-testid="stTable"] td').first.wait_for(
                        timeout=timeout_ms
                    )
                if name == "sessions":
                    await page.locator('[data-testid="stImage"] img').first.wait_for(
                        timeout=timeout_ms
                    )
                # The script has finished once the "running" status widget is gone.
                await page.wait_for_function(
                    "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                    timeout=timeout_ms,
                )
                print(name, "loaded", time.monotonic())
                await page.screenshot(path=shots / f"console-{name}.png", full_page=True)
                heading = await page.locator("h1").first.inner_text()
                assert heading.strip(), f"{name}: no heading"
                assert await page.locator('[data-testid="stException"]').count() == 0, name
                assert await page.locator('[data-testid="stAlertContentError"]').count() == 0, name
                body = await page.locator('[data-testid="stMain"]').inner_text()
                assert len(body.strip()) > 100, f"{name}: the page is nearly blank"
        finally:
            await browser.close()
