"""A real ``redis-server`` of a test's own: 127.0.0.1, a free port, a temporary
directory, the AOF settings a chat requires (``launch.REDIS_SETTINGS``); ended by PID.
Never skipped: without ``redis-server`` the test fails saying how to install it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from twisted_chat import launch
from twisted_chat.errors import SharedStateUnavailable
from twisted_chat.launch import Process
from twisted_chat.server.cluster.address import RedisAddress
from twisted_chat.server.cluster.primitives import SOURCES, Primitives
from twisted_chat.server.cluster.redis import RedisClient

WAIT = 15.0


class RedisServer:
    """One ``redis-server`` process; :meth:`restart` starts it again on the same
    directory and port (what ``kill -9`` and a restart look like)."""

    def __init__(self, directory: Path, unix_socket: Path | None = None) -> None:
        self.directory = directory
        self.unix_socket = unix_socket
        self.port = 0
        self.process: Process | None = None

    async def start(self) -> RedisServer:
        self.process, self.port = await launch.start_redis(
            reactor, self.directory, self.port, wait=WAIT, unix_socket=self.unix_socket
        )
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def kill(self) -> None:
        """``kill -9``: nothing of Redis's own shutdown runs."""
        assert self.process is not None
        self.process.kill()
        await self.process.ended

    async def stop(self) -> None:
        if self.process is not None and not self.process.ended.called:
            self.process.kill()
            await self.process.ended

    async def client(self, timeout: float = 2.0, url: str | None = None) -> RedisClient:
        """A connected client (stop it with ``await client.stop()``)."""
        client = RedisClient(
            reactor, RedisAddress.parse(url or self.url), timeout=timeout, scripts=SOURCES
        )
        client.start()
        for _ in range(100):
            try:
                await client.call("PING")
            except SharedStateUnavailable:  # not connected yet
                await deferLater(reactor, 0.05, lambda: None)
            else:
                return client
        raise AssertionError(f"no connection to Redis on port {self.port}")


@pytest_twisted.async_yield_fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = await RedisServer(directory).start()
    try:
        yield server
    finally:
        await server.stop()


async def primitives_on(server: RedisServer) -> tuple[Primitives, RedisClient]:
    client = await server.client()
    return Primitives(client), client
