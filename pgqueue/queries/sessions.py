"""Statements of the dashboard's sessions (schema v10): open, read, close, purge."""

from __future__ import annotations

# -- open_session: a session whose key hashes to $1, holding the sealed credential $2, for $3
# -- seconds; the expired sessions go on the way (the table stays small without a worker too)
OPEN_SESSION = """
WITH expired AS (
    DELETE FROM pgqueue.dashboard_sessions WHERE expires_at < now()
)
INSERT INTO pgqueue.dashboard_sessions (key_hash, sealed, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
RETURNING expires_at
"""

# -- read_session: the sealed credential of the session whose key hashes to $1, unless it ended
READ_SESSION = """
SELECT sealed FROM pgqueue.dashboard_sessions WHERE key_hash = $1 AND expires_at > now()
"""

# -- close_session: the session whose key hashes to $1 ends now (sign-out)
CLOSE_SESSION = """
DELETE FROM pgqueue.dashboard_sessions WHERE key_hash = $1
"""

# -- purge_expired_sessions: delete the sessions that ended
PURGE_EXPIRED_SESSIONS = """
DELETE FROM pgqueue.dashboard_sessions WHERE expires_at < now()
"""
