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
    """A listener failed after the start: stop the reactor, so that the services stop
    in order through ``stopService`` (listeners, then sessions, then stores) and
    twistd cleans up as after any stop; then the process ends with status 1.

    twistd has no way to say how its process should end (it ends with 0, or with the
    signal that stopped it), and an exit handler cannot change the status. So one
    handler, registered now and therefore run first (they run last-in first-out), runs
    every other exit handler itself, then ends the process with 1: none is skipped."""
    atexit.register(_exit_status_1)
    reactor.stop()


def _exit_status_1() -> None:
    atexit.unregister(_exit_status_1)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
