"""``twistd chatserver``: twistd's two names, ``Options`` and ``makeService``. The
options are ``options``'s and the building is ``wiring``'s; this module is what the
plugin (``twisted/plugins/twisted_chat_plugin.py``) names."""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any

from twisted.python import usage

from twisted_chat.server.options import Options
from twisted_chat.server.service import ChatService
from twisted_chat.server.wiring import build_service

__all__ = ["Options", "makeService"]


def makeService(options: usage.Options, reactor: Any = None) -> ChatService:
    """twistd's entry point: the server's service, which ends twistd with one line and
    a non-zero status if it cannot listen, at start or later."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    try:
        chat_service = build_service(options, reactor)
    except usage.UsageError as e:
        # twistd prints a traceback for anything else makeService raises.
        raise SystemExit(f"chatserver: {e}") from None
    chat_service.failed.addErrback(lambda _: _stop_twistd_with_status_1(reactor))
    return chat_service


def _stop_twistd_with_status_1(reactor: Any) -> None:
    """twistd has no way to set its exit status: once it has stopped the reactor (our
    services stopping in order) and cleaned up, the process ends with status 1."""
    atexit.register(_exit_status_1)
    reactor.stop()


def _exit_status_1() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
