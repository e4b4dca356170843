"""Finding and launching Chromium: Playwright's own build where installed, else the system's."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Chromium's own calls home fail by the dozen on a closed network; these stop them.
QUIET_ARGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)
# The headless shell first: it is what Playwright itself runs headless, and it starts a session's
# page on about a third of the CPU the full browser's headless mode needs (docs/benchmarks.md).
HEADLESS_SHELLS = ("/usr/lib/chromium/chromium-headless-shell", "/usr/bin/chromium-headless-shell")
SYSTEM_CANDIDATES = (
    *HEADLESS_SHELLS,
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
)


def launch_args() -> list[str]:
    args = list(QUIET_ARGS)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")
    return args


def executable_path(explicit: str | None = None) -> str | None:
    """The Chromium to launch: `explicit` (CHROMIUM_PATH), None for Playwright's own, else the
    system's (Debian's headless shell, else its full Chromium).

    None means Playwright's bundled build exists and should be used.
    """
    if explicit:
        if not Path(explicit).exists():
            raise FileNotFoundError(f"CHROMIUM_PATH {explicit!r} does not exist")
        return explicit
    if _playwright_chromium_installed():
        return None
    for candidate in SYSTEM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    found = shutil.which("chromium")
    if found:
        return found
    raise FileNotFoundError(
        "no Chromium found: run `make setup` (Playwright's download, else Debian's chromium) "
        "or set CHROMIUM_PATH"
    )


def _playwright_chromium_installed() -> bool:
    root = Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or Path.home() / ".cache/ms-playwright")
    if not root.is_dir():
        return False
    return any(
        (d / "chrome-linux" / "chrome").exists() or (d / "chrome-linux64" / "chrome").exists()
        for d in root.glob("chromium-*")
    )
