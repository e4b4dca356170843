"""Memory, start time and CPU per session on the calibrated sandbox page, by browser model.

Each model links `--sessions` sessions to READY on the same sandbox page (its default,
calibrated weight) and reads the PSS of every Chromium process it started:

- the node's model: one Chromium (the headless shell, or the full browser in its new headless
  mode) with one browser context per session, through the node's own page code;
- the seed's model (whatsapp-web.js, WAHA, wppconnect): one Chromium per session with a
  persistent profile folder, both as whatsapp-web.js launches it by default (Puppeteer's
  `headless: true`, which since Puppeteer 22 is the full browser in its new headless mode) and
  with the lighter headless shell;
- the node's model with what a host can cut from the page: media and fonts not loaded, and
  V8's optimize-for-size mode;
- a cause check: the node's model on the page with its IndexedDB data left out.

Each model's PSS is split into the pages' renderers and the browser's own processes (browser,
GPU, utilities, zygotes): the latter, per Chromium, is the per-process share that one Chromium
per session pays again for every session.

Start time is from opening the session (a context, or a browser launch) to its first QR; CPU
is the Chromium processes' user + system time from before the first open until all are READY.
Prints the figures and writes them to docs/benchmarks.md.

    python bench/browser_models.py [--sessions 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from playwright.async_api import BrowserContext, Page, Playwright, Route, async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.linking import EXPIRED
from bench.report import machine, percentile, write_section
from node import whatsapp as wa
from node.keyring import KeyRing, RealmHooks
from node.memory import descendants, pss_bytes
from sandbox.app import Sandbox, SandboxSettings
from sessionmesh import chromium

SHELL = "/usr/lib/chromium/chromium-headless-shell"
FULL = "/usr/bin/chromium"
CUT_TYPES = frozenset({"image", "media", "font"})
IDB_CHECK_MB = 0.25  # the cause check's IndexedDB data (the calibrated page stores 30 MB)


def chromium_pids() -> list[int]:
    out = []
    for pid in descendants(os.getpid()):
        try:
            first = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            continue
        if b"chrom" in first.lower():
            out.append(pid)
    return out


def chromium_pss() -> int:
    return sum(pss_bytes(p) for p in chromium_pids())


def renderer_pss() -> int:
    """PSS of the Chromium processes that run pages (`--type=renderer`)."""
    total = 0
    for pid in chromium_pids():
        try:
            # Chromium rewrites its children's titles: one string with spaces, not NUL-separated.
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b" --type=renderer" in cmdline:
            total += pss_bytes(pid)
    return total


def chromium_cpu() -> float:
    total = 0
    for pid in chromium_pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    model: str
    sessions: int
    pss: int  # all Chromium processes with every session READY
    base: int  # before any session (a shared browser's own share), 0 for one-per-session
    renderers: int = 0  # of `pss`, the pages' renderer processes
    browsers: int = 1  # Chromium instances
    starts: list[float] = field(default_factory=list)  # open -> first QR, seconds
    cpu: float = 0.0  # Chromium CPU seconds, first open -> all READY

    @property
    def per_session(self) -> float:
        return self.pss / self.sessions

    @property
    def own_per_browser(self) -> float:
        """The browser's own processes (all but renderers), per Chromium instance."""
        return (self.pss - self.renderers) / self.browsers


class Linker:
    """Drives one page to READY: hook it, open WhatsApp Web, scan the QR with the phone."""

    def __init__(self, sandbox: str, http: aiohttp.ClientSession) -> None:
        self.sandbox = sandbox
        self.http = http
        self.numbers = iter(range(10**6))

    async def link(self, context: BrowserContext, page: Page, opened: float) -> float:
        queue: asyncio.Queue[wa.PageEvent] = asyncio.Queue()
        await RealmHooks(page, KeyRing()).install(context)
        driver = wa.WhatsAppPage(page, queue.put_nowait)
        await driver.open(self.sandbox, navigation_timeout=120, timeout=120)
        first_qr = 0.0
        scanned = False
        while True:
            event = await asyncio.wait_for(queue.get(), 300)
            if event.kind == "qr" and not scanned:
                first_qr = first_qr or time.perf_counter() - opened
                code = await driver.qr_payload(event.value["ref"], event.value.get("code"))
                phone = f"62899{next(self.numbers):08d}"
                async with self.http.post(
                    f"{self.sandbox}phone/scan", json={"code": code, "phone": phone}
                ) as resp:
                    # 410: the QR expired before the scan; the page shows the next one.
                    if resp.status not in (200, EXPIRED):
                        raise RuntimeError(f"scan answered {resp.status}: {await resp.text()}")
                    scanned = resp.status == 200
            if event.kind == "synced" and event.value:
                return first_qr
            if event.kind == "state" and event.value in wa.END_STATES:
                raise RuntimeError(f"page ended in {event.value}")


async def settle() -> None:
    """Let Chromium finish what the last sync started before reading memory."""
    await asyncio.sleep(5)


async def block_cut(route: Route) -> None:
    if route.request.resource_type in CUT_TYPES:
        await route.abort()
    else:
        await route.fallback()


async def shared_model(
    pw: Playwright,
    linker: Linker,
    name: str,
    executable: str,
    n: int,
    *,
    extra_args: tuple[str, ...] = (),
    cut: bool = False,
) -> Result:
    browser = await pw.chromium.launch(
        executable_path=executable, args=[*chromium.launch_args(), *extra_args], headless=True
    )
    identity = chromium.desktop_identity(browser.version)
    try:
        await settle()
        base = chromium_pss()
        cpu0 = chromium_cpu()
        starts = []
        for _ in range(n):
            opened = time.perf_counter()
            context = await browser.new_context(user_agent=identity.user_agent)
            if cut:
                await context.route("**/*", block_cut)
            page = await context.new_page()
            cdp = await context.new_cdp_session(page)
            await cdp.send("Emulation.setUserAgentOverride", identity.override())
            starts.append(await linker.link(context, page, opened))
        cpu = chromium_cpu() - cpu0
        await settle()
        return Result(name, n, chromium_pss(), base, renderer_pss(), 1, starts, cpu)
    finally:
        await browser.close()


async def per_session_model(
    pw: Playwright, linker: Linker, name: str, executable: str, n: int, root: Path
) -> Result:
    contexts: list[BrowserContext] = []
    try:
        cpu0 = chromium_cpu()
        starts = []
        for i in range(n):
            opened = time.perf_counter()
            context = await pw.chromium.launch_persistent_context(
                str(root / f"profile-{i}"),
                executable_path=executable,
                args=chromium.launch_args(),
                headless=True,
            )
            contexts.append(context)
            page = context.pages[0] if context.pages else await context.new_page()
            version = context.browser.version if context.browser else "156.0.0.0"
            identity = chromium.desktop_identity(version)
            cdp = await context.new_cdp_session(page)
            await cdp.send("Emulation.setUserAgentOverride", identity.override())
            starts.append(await linker.link(context, page, opened))
        cpu = chromium_cpu() - cpu0
        await settle()
        return Result(name, n, chromium_pss(), 0, renderer_pss(), n, starts, cpu)
    finally:
        for context in contexts:
            await context.close()


@asynccontextmanager
async def sandbox_running(settings: SandboxSettings | None = None) -> AsyncIterator[str]:
    async with Sandbox(settings or SandboxSettings(), host="127.0.0.1", port=0) as sb:
        yield sb.url


async def without_idb(pw: Playwright, http: aiohttp.ClientSession, n: int) -> Result:
    """The shared shell on the calibrated page with its IndexedDB data left out: the cause check
    for what a shared browser's own processes gain per context."""
    async with sandbox_running(SandboxSettings(idb_mb=IDB_CHECK_MB)) as url:
        return await shared_model(pw, Linker(url, http), "shared, IndexedDB left out", SHELL, n)


async def run(n: int, root: Path, have_full: bool) -> list[Result]:
    results = []
    async with sandbox_running() as url, aiohttp.ClientSession() as http, async_playwright() as pw:
        linker = Linker(url, http)
        models: list[tuple[str, Callable[[], Awaitable[Result]]]] = [
            (
                "one Chromium, a context per session (headless shell)",
                lambda: shared_model(pw, linker, "shared, headless shell", SHELL, n),
            ),
            (
                "one Chromium, a context per session (full Chromium, new headless)",
                lambda: shared_model(pw, linker, "shared, full Chromium", FULL, n),
            ),
            (
                "one Chromium per session, persistent profile (the seed's model, headless shell)",
                lambda: per_session_model(pw, linker, "one per session", SHELL, n, root),
            ),
            (
                "one full Chromium per session, persistent profile (whatsapp-web.js's default)",
                lambda: per_session_model(
                    pw, linker, "one full Chromium per session", FULL, n, root / "full"
                ),
            ),
            (
                "shared headless shell, media and fonts not loaded",
                lambda: shared_model(pw, linker, "shared, no media", SHELL, n, cut=True),
            ),
            (
                "shared headless shell, V8 optimize-for-size",
                lambda: shared_model(
                    pw,
                    linker,
                    "shared, optimize-for-size",
                    SHELL,
                    n,
                    extra_args=("--js-flags=--optimize-for-size",),
                ),
            ),
            (
                "shared headless shell, the page's IndexedDB data left out (cause check)",
                lambda: without_idb(pw, http, n),
            ),
        ]
        for label, make in models:
            if "full" in label and not have_full:
                print(f"skipped: {label} ({FULL} is not installed)")
                continue
            print(f"measuring: {label} ...", flush=True)
            results.append(await make())
    return results


def report(results: list[Result], n: int) -> str:
    by = {r.model: r for r in results}
    lines = ["## Browser models on the calibrated page (`bench/browser_models.py`)\n"]
    lines.append(f"Machine: {machine()}.\n")
    lines.append(
        f"Command: `python bench/browser_models.py --sessions {n}`. The sandbox page at its "
        "default (calibrated) weight; each model links the same number of sessions to READY "
        "with the node's own page code, then reads the PSS of all its Chromium processes "
        "(after 5 s of quiet). Start: opening the session (a context, or for one Chromium per "
        "session, the browser launch) to its first QR.\n"
    )
    lines.append(
        "| model | sessions | Chromium PSS | of it, renderers | browser's own, per Chromium | "
        "browser's own before any session | PSS per session | start p50 | start max | "
        "CPU to READY |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        lines.append(
            f"| {r.model} | {r.sessions} | {r.pss / 2**20:.0f} MiB | "
            f"{r.renderers / 2**20:.0f} MiB | {r.own_per_browser / 2**20:.0f} MiB | "
            f"{(f'{r.base / 2**20:.0f} MiB') if r.base else '-'} | {r.per_session / 2**20:.0f} MiB | "
            f"{percentile(r.starts, 50):.2f} s | {max(r.starts):.2f} s | {r.cpu:.1f} s |"
        )
    lines.append("")
    shared = by.get("shared, headless shell")
    for key, what in (
        ("one full Chromium per session", "as whatsapp-web.js launches it by default"),
        ("one per session", "with the headless shell"),
    ):
        seed = by.get(key)
        if not (shared and seed):
            continue
        saved = seed.per_session - shared.per_session
        share = seed.own_per_browser
        lines.append(
            f"The node's model against one Chromium per session {what}: "
            f"{shared.per_session / 2**20:.0f} against {seed.per_session / 2**20:.0f} MiB per "
            f"session, {seed.per_session / shared.per_session:.2f}x; {saved / 2**20:.0f} MiB "
            f"saved per session against that model's own per-process share of "
            f"{share / 2**20:.0f} MiB: goal {'met' if saved >= share else 'missed'}.\n"
        )
    check = by.get("shared, IndexedDB left out")
    if shared and check:
        grew = (shared.pss - shared.renderers - shared.base) / shared.sessions
        grew_check = (check.pss - check.renderers - check.base) / check.sessions
        lines.append(
            f"Why the shared browser saves less than its per-process share: its own processes "
            f"(browser, GPU, utilities) grew by {grew / 2**20:.0f} MiB per context on the "
            f"calibrated page, and by {grew_check / 2**20:.0f} MiB with the page's IndexedDB "
            f"data left out. A context made by `new_context()` is off the record: Chromium keeps "
            "its IndexedDB in memory, where a profile folder keeps it in files. What the page "
            "stores (tens of MB on the real page) is paid in memory per session.\n"
        )
    full = by.get("shared, full Chromium")
    if shared and full:
        lines.append(
            f"Headless shell against full Chromium (new headless), shared: "
            f"{shared.per_session / 2**20:.0f} against {full.per_session / 2**20:.0f} MiB per "
            f"session, start p50 {percentile(shared.starts, 50):.2f} against "
            f"{percentile(full.starts, 50):.2f} s, CPU {shared.cpu:.1f} against {full.cpu:.1f} s.\n"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sessions", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mesh-bench-models-") as tmp:
        results = asyncio.run(run(args.sessions, Path(tmp), Path(FULL).exists()))
    body = report(results, args.sessions)
    print(body)
    write_section("browser-models", body)


if __name__ == "__main__":
    main()
