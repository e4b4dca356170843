#!/usr/bin/env bash
# php-cli and php-curl from Debian's packages, for the README's PHP quickstart test
# (tests/gateway/test_php_quickstart.py). Exits 0 when PHP with curl is there; 1 when it
# cannot be installed (not root, no apt-get, or the install failed).
set -eu
if command -v php >/dev/null 2>&1 && php -m 2>/dev/null | grep -qix curl; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-php: php-cli and php-curl are missing, and installing them needs root and apt-get" >&2
  exit 1
fi
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends php-cli php-curl >/dev/null
php -m | grep -qix curl
