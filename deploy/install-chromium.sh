#!/usr/bin/env bash
# Chromium for the nodes: Playwright's own download where it works, else the system's: Debian's
# headless shell (`chromium-headless-shell`, what Playwright itself runs headless), else Debian's
# `chromium`; installed here when running as root.
set -u
venv=${1:-.venv}
shell=/usr/lib/chromium/chromium-headless-shell
if "$venv/bin/playwright" install chromium >/tmp/session-mesh-playwright-install.log 2>&1; then
  echo "chromium: Playwright's build"
  exit 0
fi
echo "chromium: Playwright's download failed (see /tmp/session-mesh-playwright-install.log); using the system's"
install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
  if [ -z "${updated:-}" ]; then apt-get update -qq || return 1; updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}
if [ -x "$shell" ] || install chromium-headless-shell; then
  echo "chromium: $shell"
  exit 0
fi
if [ -x /usr/bin/chromium ] || install chromium; then
  echo "chromium: /usr/bin/chromium (Debian's chromium-headless-shell starts pages on less CPU)"
  exit 0
fi
echo "chromium: none found; install Debian's 'chromium-headless-shell' or 'chromium', or set CHROMIUM_PATH" >&2
exit 1
