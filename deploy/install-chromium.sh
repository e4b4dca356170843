#!/usr/bin/env bash
# Chromium for the nodes: Playwright's own download where it works, else the system's
# (Debian's `chromium`, installed here when running as root).
set -u
venv=${1:-.venv}
if "$venv/bin/playwright" install chromium >/tmp/session-mesh-playwright-install.log 2>&1; then
  echo "chromium: Playwright's build"
  exit 0
fi
echo "chromium: Playwright's download failed (see /tmp/session-mesh-playwright-install.log); using the system's"
if [ -x /usr/bin/chromium ]; then
  echo "chromium: /usr/bin/chromium"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    && echo "chromium: installed Debian's chromium" && exit 0
fi
echo "chromium: none found; install Debian's 'chromium' package or set CHROMIUM_PATH" >&2
exit 1
