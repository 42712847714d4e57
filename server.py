"""The handout's launcher: ``python server.py PORT BLOCK_DURATION TIMEOUT [-d]``."""

from twisted_chat.server.main import run

if __name__ == "__main__":
    run(program="server.py")
