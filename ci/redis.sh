#!/usr/bin/env bash
# Installs Debian's `redis-server` when it is missing, for coalescer-redis's tests and bench.
# It starts no server: each test starts its own on a Unix socket in a temp dir and stops it.
#
#   ci/redis.sh        install redis-server if `redis-server` is not on PATH (needs root or sudo)
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
    echo "==> redis: $(redis-server --version)"
    exit 0
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
echo "==> redis: redis-server is missing; installing Debian's package"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y redis-server
# The package's service is not wanted (the tests start their own servers); on machines with an
# init system it may have started one: stop it, without failing where there is none.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    "${sudo[@]}" systemctl stop redis-server || true
    "${sudo[@]}" systemctl disable redis-server >/dev/null 2>&1 || true
elif [[ -s /run/redis/redis-server.pid ]] && command -v service >/dev/null 2>&1; then
    "${sudo[@]}" service redis-server stop || true
fi
echo "==> redis: $(redis-server --version)"
