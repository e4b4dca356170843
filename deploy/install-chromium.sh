#!/usr/bin/env bash
# Chromium for the nodes.
#   deploy/install-chromium.sh [VENV]   `make setup`: Playwright's own download where it works, else
#                                       the system's: Debian's headless shell
#                                       (`chromium-headless-shell`, what Playwright itself runs
#                                       headless), else Debian's `chromium`; installed here when
#                                       running as root.
#   deploy/install-chromium.sh --debian the node image (deploy/Dockerfile): Debian's headless shell
#                                       only, without recommended packages; needs root.
set -u
shell=/usr/lib/chromium/chromium-headless-shell
install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
  if [ -z "${updated:-}" ]; then apt-get update -qq || return 1; updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${no_recommends:+"$no_recommends"} "$1" >/dev/null
}
if [ "${1:-}" = "--debian" ]; then
  no_recommends=--no-install-recommends
  if install chromium-headless-shell && [ -x "$shell" ]; then
    echo "chromium: $shell ($(dpkg-query -W -f '${Version}' chromium-headless-shell))"
    exit 0
  fi
  echo "chromium: could not install Debian's 'chromium-headless-shell' (needs root and apt-get)" >&2
  exit 1
fi
venv=${1:-.venv}
if "$venv/bin/playwright" install chromium >/tmp/session-mesh-playwright-install.log 2>&1; then
  echo "chromium: Playwright's build"
  exit 0
fi
echo "chromium: Playwright's download failed (see /tmp/session-mesh-playwright-install.log); using the system's"
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
