"""What every command of ours does the same way at its edge: print help to a reader
that may stop reading early (``chat-server --help | head -1``) without a traceback."""

from __future__ import annotations

import os
import sys
from typing import NoReturn


def print_help(text: str) -> NoReturn:
    """Print ``text`` to standard output and exit 0. A reader that closed the pipe
    after the lines it wanted ends the output quietly, as ``cat`` would."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        reader_left()
    raise SystemExit(0)


def reader_left() -> NoReturn:
    """Standard output's reader is gone: exit 0 without a word (Python would report
    the pipe again when it flushes standard output at exit)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(0)
