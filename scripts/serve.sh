#!/usr/bin/env bash
# Set up (a venv in .venv with the project installed) and start the chat server in the
# foreground with ./credentials.txt: scripts/serve.sh [PORT [BLOCK_DURATION [TIMEOUT]]].
# The install runs only when the project changed since the last one (a fingerprint of
# its sources and packaging is kept in .venv), so a restart takes a moment, not 13 s.
set -euo pipefail
cd "$(dirname "$0")/.."
fingerprint=$(python3 - <<'PY'
import hashlib, pathlib
digest = hashlib.sha256()
files = [pathlib.Path("setup.cfg"), pathlib.Path("pyproject.toml")]
for top in ("twisted_chat", "twisted"):
    files += sorted(pathlib.Path(top).rglob("*.py"))
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
exec .venv/bin/twistd -n --pidfile= chatserver --port "${1:-5000}" \
  --block-duration "${2:-60}" --timeout "${3:-120}" --credentials credentials.txt
