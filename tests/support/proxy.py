"""A TCP proxy on loopback that a test can freeze: the network between a client and Postgres
stops carrying bytes (as a cut-off link does) without closing anything."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from tests.support.ports import LOOPBACK

CHUNK = 65536


class FreezableProxy:
    """Forwards connections from `port` to `target_host:target_port` until `freeze()`.

    Frozen, it still accepts connections and reads what clients send, but forwards nothing
    either way, so a client sees a peer that went silent; `thaw()` lets bytes through again
    (those read meanwhile are dropped, as a real cut would lose them).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    def freeze(self) -> None:
        """Stop carrying bytes."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Carry bytes again."""
        self._flowing.set()

    async def start(self, host: str = LOOPBACK) -> None:
        """Listen on a free port (`self.port`) of `host` (default loopback; another address of
        this machine, e.g. a veth's, serves clients in another network namespace)."""
        self._server = await asyncio.start_server(self._accept, host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, target_writer), (target_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(CHUNK):
                if self._flowing.is_set():
                    sink.write(data)
                    await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sink.close()


@contextlib.asynccontextmanager
async def freezable_proxy(
    target_host: str, target_port: int, *, listen_host: str = LOOPBACK
) -> AsyncIterator[FreezableProxy]:
    """A started proxy listening on `listen_host`, closed at the end."""
    proxy = FreezableProxy(target_host, target_port)
    await proxy.start(listen_host)
    try:
        yield proxy
    finally:
        await proxy.close()
