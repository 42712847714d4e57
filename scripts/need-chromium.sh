#!/usr/bin/env bash
# The web page's tests drive a real Chromium (headless, through Playwright), the one
# the system's package manager installs: Playwright's own download needs a network the
# tests may not have. Install it when it is missing, as root through the package
# manager; otherwise say what to install, and fail.
set -euo pipefail
found() {
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1
}
if found; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium (apt-get)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
    elif command -v dnf >/dev/null 2>&1; then
        dnf install -y -q chromium
    elif command -v apk >/dev/null 2>&1; then
        apk add --quiet chromium
    fi
fi
if ! found; then
    echo "chromium is needed by the web page's tests and is not installed." >&2
    echo "Install it (Debian: sudo apt-get install chromium; Ubuntu: a chromium package or" >&2
    echo "snap; Fedora: sudo dnf install chromium) and run this again." >&2
    exit 1
fi
