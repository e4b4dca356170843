#!/usr/bin/env bash
# The tests' Redis is the system's redis-server binary; install it when it is missing.
set -u
command -v redis-server >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
    && echo "redis-server: installed Debian's redis-server" && exit 0
fi
echo "redis-server: not found; install Debian's 'redis-server' package" >&2
exit 1
