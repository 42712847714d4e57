#!/usr/bin/env bash
# The cluster tests start a redis-server of their own (never the system's, never on its
# port): install the program when it is missing. As root through the system's package
# manager; otherwise say what to install, and fail.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "installing redis-server (apt-get)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null; }
    elif command -v dnf >/dev/null 2>&1; then
        dnf install -y -q redis
    elif command -v apk >/dev/null 2>&1; then
        apk add --quiet redis
    fi
fi
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
    echo "redis-server is needed by the cluster tests and is not installed." >&2
    echo "Install it (Debian/Ubuntu: sudo apt-get install redis-server; Fedora: sudo dnf install redis;" >&2
    echo "macOS: brew install redis) and run this again." >&2
    exit 1
fi
