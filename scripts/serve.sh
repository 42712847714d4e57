#!/usr/bin/env bash
# Set up (a venv in .venv with the project installed) and start the chat server in the
# foreground with ./credentials.txt: scripts/serve.sh [PORT [BLOCK_DURATION [TIMEOUT]]].
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check .
exec .venv/bin/twistd -n --pidfile= chatserver --port "${1:-5000}" \
  --block-duration "${2:-60}" --timeout "${3:-120}" --credentials credentials.txt
