"""The handout's launcher: ``python client.py PORT [--host HOST]``."""

from twisted_chat.client.main import run

if __name__ == "__main__":
    run(program="client.py")
