#!/usr/bin/env bash
# Set up (a venv in .venv, the project and its test tools, redis-server for the cluster
# tests and chromium for the web page's) and run every check: lint, format, types,
# then the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/need-redis.sh
bash scripts/need-chromium.sh
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check '.[test]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy twisted_chat tests
exec .venv/bin/python -m pytest "$@"
