#!/usr/bin/env bash
# Set up (a venv in .venv with the project installed) and start the chat server in the
# foreground with ./credentials.txt:
#   scripts/serve.sh [PORT [BLOCK_DURATION [TIMEOUT [WEB_PORT]]]]
# With WEB_PORT, the web page is served too, at http://127.0.0.1:WEB_PORT/ (this machine
# only: README.md says how to serve it to others, over HTTPS).
# The install runs only when the project changed since the last one (a fingerprint of
# its sources and packaging is kept in .venv), so a restart takes a moment, not 13 s.
set -euo pipefail
cd "$(dirname "$0")/.."
fingerprint=$(python3 - <<'PY'
import hashlib, pathlib
digest = hashlib.sha256()
files = [pathlib.Path("setup.cfg"), pathlib.Path("pyproject.toml")]
for top in ("twisted_chat", "twisted"):
    files += sorted(p for p in pathlib.Path(top).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
for path in files:
    digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
print(digest.hexdigest())
PY
)
stamp=.venv/.serve-installed
if [ ! -x .venv/bin/twistd ] || [ "$(cat "$stamp" 2>/dev/null)" != "$fingerprint" ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check .
  echo "$fingerprint" > "$stamp"
fi
web=()
if [ -n "${4:-}" ]; then
  web=(--web "tcp:$4:interface=127.0.0.1")
  echo "the web page: http://127.0.0.1:$4/" >&2
fi
exec .venv/bin/twistd -n --pidfile= chatserver --port "${1:-5000}" \
  --block-duration "${2:-60}" --timeout "${3:-120}" --credentials credentials.txt "${web[@]}"
