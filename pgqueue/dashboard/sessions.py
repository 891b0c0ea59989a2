"""The dashboard's sessions: the browser holds a random key, never the credential it signed in with.

The host's `authorize(request, credential)` is called on every request with the credential,
so that a token the host revokes stops working at once, not when a session ends. The
credential therefore has to be at hand on every request, but neither in the cookie (a cookie
that leaks, through a proxy's log or a shared machine, would hand over an admin token that
works on the whole API and never expires) nor as it is in the database (the service stores
only its tokens' hashes). So a session is split between the two:

- the cookie holds a key: 32 random bytes, nothing else;
- the row (`pgqueue.dashboard_sessions`, schema v10) is found by a hash of the key and holds
  the credential XORed with a keystream derived from the key (HKDF-Expand, RFC 5869, over
  HMAC-SHA256). Each key seals one credential once, so this is a one-time pad: the row
  alone reveals nothing of the credential, and the cookie alone is a session, not a token.

The row also holds when the session ends: an expired key is refused whatever the browser
sends (its cookie's Max-Age only tidies the browser), and signing out deletes the row, so a
copy of the cookie kept elsewhere stops working too.

Why not a cookie signed with a server secret (HMAC over an expiry)? It could not carry the
credential without encrypting it, which needs a secret every replica shares (one more
setting to provision and rotate) and gives no way to end a session before it expires. The
database is already shared by every replica, and one indexed row per signed-in browser is
cheap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from pgqueue import store

KEY_BYTES = 32
DEFAULT_MAX_AGE_S = 8 * 3600.0  # a working day: an admin signs in again the next morning
MAX_SEALED_BYTES = 4096  # schema v10's limit on a sealed credential
_ID_INFO = b"pgqueue.dashboard.session-id"
_SEAL_INFO = b"pgqueue.dashboard.credential"


async def open_session(db: store.Executor, credential: str, max_age_s: float) -> str:
    """Store a session holding `credential` for `max_age_s` seconds; the cookie's value.

    Raises:
        ValueError: the credential is longer than a session holds.
    """
    plain = credential.encode()
    if not 1 <= len(plain) <= MAX_SEALED_BYTES:
        raise ValueError(f"a credential is 1-{MAX_SEALED_BYTES} bytes, got {len(plain)}")
    key = secrets.token_bytes(KEY_BYTES)
    await store.open_session(db, _session_id(key), _xor(plain, key), max_age_s)
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


async def credential_of(db: store.Executor, cookie: str) -> str | None:
    """The credential of the session `cookie` names, or None (unknown, ended, malformed)."""
    key = _key(cookie)
    if key is None:
        return None
    sealed = await store.read_session(db, _session_id(key))
    if sealed is None:
        return None
    try:
        return _xor(sealed, key).decode()
    except UnicodeDecodeError:  # a row written by something else: no credential of ours
        return None


async def close_session(db: store.Executor, cookie: str) -> None:
    """End the session `cookie` names, at once (nothing happens for an unknown one)."""
    key = _key(cookie)
    if key is not None:
        await store.close_session(db, _session_id(key))


def _key(cookie: str) -> bytes | None:
    """The key a cookie's value encodes, or None when it is not one of ours."""
    if len(cookie) != 43:  # 32 bytes in unpadded base64
        return None
    try:
        key = base64.urlsafe_b64decode(cookie + "=")
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == KEY_BYTES else None


def _session_id(key: bytes) -> bytes:
    """The row's id: derived from the key, so the database never holds the key itself."""
    return _expand(key, _ID_INFO, 32)


def _xor(data: bytes, key: bytes) -> bytes:
    """`data` sealed (or unsealed) with the key's keystream."""
    stream = _expand(key, _SEAL_INFO, len(data))
    return bytes(a ^ b for a, b in zip(data, stream, strict=True))


def _expand(key: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869) with HMAC-SHA256: `length` bytes of the key's stream for `info`
    (a random 32-byte key needs no HKDF-Extract step)."""
    blocks = b""
    block = b""
    counter = 1
    while len(blocks) < length:
        block = hmac.new(key, block + info + bytes([counter]), hashlib.sha256).digest()
        blocks += block
        counter += 1
    return blocks[:length]
