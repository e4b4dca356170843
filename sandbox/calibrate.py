"""`python -m sandbox.calibrate`: measure what a linked sandbox page costs in a real Chromium.

Starts a sandbox with the given page weight, links `--pages` pages (one browser context each, as
a node hosts sessions) with a desktop Chrome identity, lets them settle, and reports per page:
the renderer's proportional set size (PSS, from /proc/<pid>/smaps_rollup), its JS heap, and the
bytes its origin keeps in IndexedDB on disk. docs/sandbox.md has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import BrowserContext, Page, async_playwright

from sandbox.app import Sandbox
from sandbox.settings import WEIGHT_PRESETS, SandboxSettings
from sessionmesh import chromium

UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{major}.0.0.0 Safari/537.36"
)
QR = """async () => {
  const names = ['WAWebConnModel', 'WAWebSignalStoreApi', 'WAWebUserPrefsInfoStore', 'WABase64',
                 'WAWebUserPrefsMultiDevice', 'WAWebCompanionRegClientUtils'];
  try { names.forEach((n) => window.require(n)); } catch (e) { return null; }
  const ref = window.require('WAWebConnModel').Conn.ref;
  if (!ref) return null;
  const reg = await window.require('WAWebSignalStoreApi').waSignalStore.getRegistrationInfo();
  const noise = await window.require('WAWebUserPrefsInfoStore').waNoiseInfo.get();
  const B = window.require('WABase64');
  return [ref, B.encodeB64(noise.staticKeyPair.pubKey), B.encodeB64(reg.identityKeyPair.pubKey),
          await window.require('WAWebUserPrefsMultiDevice').getADVSecretKey(),
          window.require('WAWebCompanionRegClientUtils').DEVICE_PLATFORM].join(',');
}"""
QR_READY = """() => {
  try {
    ['WAWebSignalStoreApi', 'WAWebUserPrefsInfoStore', 'WABase64', 'WAWebUserPrefsMultiDevice',
     'WAWebCompanionRegClientUtils'].forEach((n) => window.require(n));
    return !!window.require('WAWebConnModel').Conn.ref;
  } catch (e) { return false; }
}"""
SYNCED = "() => { try { return window.require('WAWebSocketModel').Socket.hasSynced; } catch (e) { return false; } }"


@dataclass
class Figures:
    renderer_pss_mb: list[float]
    js_heap_mb: list[float]
    idb_disk_mb: list[float]
    browser_pss_mb: float
    tree_pss_mb: float
    qr_seconds: list[float]
    link_seconds: list[float]


def pss_kb(pid: int) -> int:
    """A process's PSS in kB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def processes() -> dict[int, tuple[int, str]]:
    """pid: (parent pid, command line) of every process."""
    out: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out[int(entry.name)] = (ppid, cmdline)
    return out


def browser_tree(user_data_dir: Path) -> tuple[int, list[int]]:
    """The browser process using `user_data_dir` and all its descendants."""
    procs = processes()
    roots = [
        pid
        for pid, (_, cmd) in procs.items()
        if f"--user-data-dir={user_data_dir}" in cmd and "--type=" not in cmd
    ]
    if not roots:
        raise RuntimeError("cannot find the browser process")
    tree, todo = [], [roots[0]]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(p for p, (ppid, _) in procs.items() if ppid == pid)
    return roots[0], tree


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


async def open_linked(ctx: BrowserContext, url: str, phone: str, major: str) -> tuple[float, float]:
    """Load and link one page; returns seconds to its first QR and to synced."""
    page = await ctx.new_page()
    cdp = await ctx.new_cdp_session(page)
    brands = [
        {"brand": "Chromium", "version": major},
        {"brand": "Google Chrome", "version": major},
        {"brand": "Not-A.Brand", "version": "99"},
    ]
    await cdp.send(
        "Emulation.setUserAgentOverride",
        {
            "userAgent": UA.format(major=major),
            "userAgentMetadata": {
                "brands": brands,
                "fullVersion": f"{major}.0.0.0",
                "platform": "Linux",
                "platformVersion": "",
                "architecture": "x86",
                "model": "",
                "mobile": False,
            },
        },
    )
    started = time.monotonic()
    await page.goto(url)
    await page.wait_for_function(QR_READY, timeout=600_000, polling=10)
    qr_at = time.monotonic() - started
    code = await page.evaluate(QR)
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "phone/scan", json={"code": code, "phone": phone}) as resp,
    ):
        if resp.status != 200:
            raise RuntimeError(f"scan failed: {resp.status} {await resp.text()}")
    await page.wait_for_function(SYNCED, timeout=600_000)
    return qr_at, time.monotonic() - started


async def js_heap_mb(ctx: BrowserContext, page: Page) -> float:
    cdp = await ctx.new_cdp_session(page)
    await cdp.send("HeapProfiler.collectGarbage")
    usage: dict[str, Any] = await cdp.send("Runtime.getHeapUsage")
    await cdp.detach()
    return float(usage["usedSize"]) / 2**20


async def measure(
    settings: SandboxSettings, pages: int, settle: float, executable: str | None
) -> Figures:
    major = os.environ.get("CALIBRATE_CHROME_MAJOR", "156")
    with tempfile.TemporaryDirectory(prefix="sandbox-calibrate-") as tmp:
        async with Sandbox(settings) as sb, async_playwright() as pw:
            contexts = []
            links: list[tuple[float, float]] = []
            profiles = []
            for i in range(pages):
                profile = Path(tmp) / f"profile-{i}"
                ctx = await pw.chromium.launch_persistent_context(
                    str(profile),
                    executable_path=executable,
                    args=[*chromium.launch_args(), "--disable-blink-features=AutomationControlled"],
                    headless=True,
                )
                contexts.append(ctx)
                profiles.append(profile)
                links.append(await open_linked(ctx, sb.url, f"6281{i:09d}", major))
            await asyncio.sleep(settle)
            heaps = [await js_heap_mb(ctx, ctx.pages[-1]) for ctx in contexts]
            await asyncio.sleep(1.0)
            renderers, browsers, trees, idb = [], [], [], []
            for profile in profiles:
                root, tree = browser_tree(profile)
                procs = processes()
                rend = [p for p in tree if "--type=renderer" in procs.get(p, (0, ""))[1]]
                renderers.append(max(pss_kb(p) for p in rend) / 1024)
                browsers.append(pss_kb(root) / 1024)
                trees.append(sum(pss_kb(p) for p in tree) / 1024)
                idb.append(dir_bytes(profile / "Default" / "IndexedDB") / 2**20)
            for ctx in contexts:
                await ctx.close()
    return Figures(
        renderer_pss_mb=renderers,
        js_heap_mb=heaps,
        idb_disk_mb=idb,
        browser_pss_mb=statistics.mean(browsers),
        tree_pss_mb=statistics.mean(trees),
        qr_seconds=[q for q, _ in links],
        link_seconds=[s for _, s in links],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.calibrate", description=__doc__)
    parser.add_argument("--pages", type=int, default=3, help="pages to link (default %(default)s)")
    parser.add_argument("--page-weight", choices=tuple(WEIGHT_PRESETS), default="calibrated")
    parser.add_argument("--heap-mb", type=float, default=-1.0)
    parser.add_argument("--script-mb", type=float, default=-1.0)
    parser.add_argument("--idb-mb", type=float, default=-1.0)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument(
        "--chromium", default=os.environ.get("CHROMIUM_PATH"), help="the Chromium to run"
    )
    args = parser.parse_args(argv)
    settings = SandboxSettings(
        page_weight=args.page_weight,
        heap_mb=args.heap_mb,
        script_mb=args.script_mb,
        idb_mb=args.idb_mb,
    )
    executable = chromium.executable_path(args.chromium)
    figures = asyncio.run(measure(settings, args.pages, args.settle, executable))
    w = settings.weight

    def row(name: str, values: list[float]) -> str:
        return (
            f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |"
        )

    print(
        f"page weight {args.page_weight}: heap {w.heap_mb:g} MB, script {w.script_mb:g} MB, "
        f"IndexedDB {w.idb_mb:g} MB; {args.pages} pages, one browser each; "
        f"{executable or 'Playwright chromium'}"
    )
    print("| per page | median | min | max |")
    print("|---|---|---|---|")
    print(row("renderer PSS, MB", figures.renderer_pss_mb))
    print(row("JS heap used, MB", figures.js_heap_mb))
    print(row("IndexedDB on disk, MB", figures.idb_disk_mb))
    print(row("load to first QR (modules ready), s", figures.qr_seconds))
    print(row("load to synced (scan included), s", figures.link_seconds))
    print(
        f"browser process PSS {figures.browser_pss_mb:.0f} MB, whole browser tree "
        f"{figures.tree_pss_mb:.0f} MB (means per browser)"
    )


if __name__ == "__main__":
    main()
