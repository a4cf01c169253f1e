"""One chunk on its own, in both format versions (spec section 4)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from xfer.envelope import (
    TAG_SIZE,
    EnvelopeHeader,
    Suite,
    derive_keys,
    open_chunk,
    seal_chunk,
)
from xfer.envelope.format import FINAL_BIT, MAX_CHUNKS, WORD_SIZE
from xfer.errors import EnvelopeFormatError, IntegrityError, LocalProtocolError

KEY = bytes(range(32))
SALT = bytes(range(32, 64))
TID = bytes(range(64, 80))


def keys_for(version: int, chunk_size: int = 1024):
    return derive_keys(
        KEY,
        EnvelopeHeader(
            suite=Suite.AES256_CTR_HMAC_SHA512,
            chunk_size=chunk_size,
            salt=SALT,
            transfer_id=TID,
            version=version,
        ),
    )


def test_the_two_versions_never_share_keys():
    v1, v2 = keys_for(1), keys_for(2)
    assert v1.enc_key != v2.enc_key
    assert v1.mac_key != v2.mac_key
    assert v1.nonce != v2.nonce


@pytest.mark.parametrize(
    ("n", "final"), [(1, False), (100, False), (1024, False), (0, True), (1024, True)]
)
def test_a_version_2_chunk_is_word_ciphertext_tag(n, final):
    keys = keys_for(2)
    plaintext = bytes(range(256)) * 4
    sealed = seal_chunk(keys, 5, plaintext[:n], final=final)
    assert len(sealed) == WORD_SIZE + n + TAG_SIZE
    word = int.from_bytes(sealed[:WORD_SIZE], "big")
    assert word == n | (FINAL_BIT if final else 0)
    assert open_chunk(keys, 5, sealed, final=final) == plaintext[:n]


@pytest.mark.parametrize("chunk_size", [1024, 1500])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 700])
def test_a_short_chunk_uses_its_own_index_keystream_only(chunk_size, n):
    """Chunk i starts at block i * ceil(chunk_size / 16) however short it is,
    so a flushed chunk and the next one never share keystream."""
    keys = keys_for(2, chunk_size)
    blocks = -(-chunk_size // 16)
    plaintext = bytes(n)  # zeros: the ciphertext is the keystream itself
    index = 3
    sealed = seal_chunk(keys, index, plaintext, final=False)
    keystream = sealed[WORD_SIZE : WORD_SIZE + n]
    counter = keys.nonce + (index * blocks).to_bytes(8, "big")
    aes = Cipher(algorithms.AES(keys.enc_key), modes.CTR(counter)).encryptor()
    assert keystream == aes.update(plaintext)
    following = seal_chunk(keys, index + 1, bytes(16), final=False)
    counter = keys.nonce + ((index + 1) * blocks).to_bytes(8, "big")
    aes = Cipher(algorithms.AES(keys.enc_key), modes.CTR(counter)).encryptor()
    assert following[WORD_SIZE : WORD_SIZE + 16] == aes.update(bytes(16))


@pytest.mark.parametrize(
    ("n", "final"), [(0, False), (1025, False), (1025, True), (2000, True)]
)
def test_seal_chunk_checks_the_version_2_shape(n, final):
    with pytest.raises(LocalProtocolError):
        seal_chunk(keys_for(2), 0, bytes(n), final=final)


def test_the_last_index_is_kept_for_the_final_chunk():
    for version in (1, 2):
        keys = keys_for(version)
        with pytest.raises(LocalProtocolError, match="out of range"):
            seal_chunk(keys, MAX_CHUNKS - 1, bytes(1024), final=False)
        sealed = seal_chunk(keys, MAX_CHUNKS - 1, b"end", final=True)
        assert open_chunk(keys, MAX_CHUNKS - 1, sealed, final=True) == b"end"
        with pytest.raises(LocalProtocolError, match="out of range"):
            seal_chunk(keys, MAX_CHUNKS, b"", final=True)


def test_a_changed_word_fails():
    keys = keys_for(2)
    sealed = bytearray(seal_chunk(keys, 0, b"x" * 100, final=False))
    for at, mask in [(0, 0x80), (3, 0x01), (3, 0x04)]:
        bad = bytearray(sealed)
        bad[at] ^= mask
        with pytest.raises(IntegrityError):
            open_chunk(keys, 0, bad, final=bool(bad[0] & 0x80))


def test_open_chunk_wants_the_flag_and_length_its_word_says():
    keys = keys_for(2)
    flushed = seal_chunk(keys, 1, b"abc", final=False)
    with pytest.raises(IntegrityError):
        open_chunk(keys, 1, flushed, final=True)
    with pytest.raises(IntegrityError):
        open_chunk(keys, 1, flushed + b"\0", final=False)
    with pytest.raises(IntegrityError):
        open_chunk(keys, 1, flushed[:-1], final=False)
    with pytest.raises(IntegrityError):
        open_chunk(keys, 2, flushed, final=False)
    with pytest.raises(IntegrityError):
        open_chunk(keys, 1, flushed[:WORD_SIZE], final=False)


def test_open_chunk_rejects_a_bad_word_as_a_format_error():
    keys = keys_for(2)
    too_long = (1025).to_bytes(WORD_SIZE, "big") + bytes(1025 + TAG_SIZE)
    with pytest.raises(EnvelopeFormatError):
        open_chunk(keys, 0, too_long, final=False)
    empty = bytes(WORD_SIZE + TAG_SIZE)
    with pytest.raises(EnvelopeFormatError):
        open_chunk(keys, 0, empty, final=False)


def test_a_version_1_chunk_does_not_open_as_version_2_or_back():
    v1, v2 = keys_for(1), keys_for(2)
    one = seal_chunk(v1, 0, bytes(1024), final=False)
    two = seal_chunk(v2, 0, bytes(1024), final=False)
    with pytest.raises(IntegrityError):
        open_chunk(v2, 0, (1024).to_bytes(WORD_SIZE, "big") + one, final=False)
    with pytest.raises(IntegrityError):
        open_chunk(v1, 0, two[WORD_SIZE:], final=False)
