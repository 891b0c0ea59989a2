"""Signal plumbing: SIGTERM/SIGINT ask for a graceful stop, a second one for an immediate one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator

logger = logging.getLogger("pgqueue.worker")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def on_stop(graceful: Callable[[], None], immediate: Callable[[], None]) -> Iterator[None]:
    """While inside, the first stop signal calls `graceful`, any later one `immediate`."""
    loop = asyncio.get_running_loop()
    received = 0

    def handle(signum: int) -> None:
        nonlocal received
        received += 1
        name = signal.Signals(signum).name
        if received == 1:
            logger.info("%s received: stopping gracefully", name, extra={"action": "signal"})
            graceful()
        else:
            logger.warning("%s received again: stopping now", name, extra={"action": "signal"})
            immediate()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, handle, signum)
    try:
        yield
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
