"""A free TCP port on loopback, for a server that must be told its port before it starts."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on right now.

    The port is released before it is returned, so another process could take it first; the
    caller starts its server at once, which in practice always wins that race on a test machine.

    Args:
        host: the address to probe.
    """
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
