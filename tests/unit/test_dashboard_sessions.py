"""The dashboard's session sealing: HKDF-Expand as RFC 5869 defines it; a sealed credential
opens with its own key only."""

from __future__ import annotations

from pgqueue.dashboard import sessions


def test_the_keystream_is_rfc_5869_hkdf_expand() -> None:
    # RFC 5869, test case 1: its PRK and info, 42 bytes of output.
    prk = bytes.fromhex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
    okm = sessions._expand(prk, bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"), 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_a_sealed_credential_opens_with_its_key_only() -> None:
    key, other = b"k" * 32, b"o" * 32
    sealed = sessions._xor(b"sbt_admin_token", key)
    assert sealed != b"sbt_admin_token" and len(sealed) == len(b"sbt_admin_token")
    assert sessions._xor(sealed, key) == b"sbt_admin_token"
    assert sessions._xor(sealed, other) != b"sbt_admin_token"
    assert sessions._session_id(key) != sessions._session_id(other)


def test_only_well_formed_keys_are_read_from_cookies() -> None:
    assert sessions._key("A" * 43) == bytes(32)
    for bad in ("", "A" * 42, "A" * 44, "!" * 43, "sbt_" + "x" * 39 + "=="):
        assert sessions._key(bad) is None
