"""The connection keep-alive ping (run by the worker's listener, not by store/)."""

from __future__ import annotations

# -- ping: is this connection still alive?
PING = """
SELECT 1
"""
