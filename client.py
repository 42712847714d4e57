"""The handout's launcher: ``python client.py PORT [--host HOST] [--tls]``."""

try:
    from twisted_chat.client.main import run
except ImportError as missing:  # run with a Python that has not got the project
    raise SystemExit(
        f"client.py: {missing.name or 'a dependency'} is not installed; run "
        "'bash scripts/test.sh' once (it makes .venv), then '.venv/bin/python client.py PORT'"
    ) from None

if __name__ == "__main__":
    run(program="client.py")
