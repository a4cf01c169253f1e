"""The key schedule: input key material -> per-transfer AES key, MAC key, nonce.

Spec section 3. The input key material (32 bytes; in a transfer, the OTR extra
symmetric key) is never used directly. HKDF (RFC 5869) with the suite's hash
stretches it, salted with the transfer's fresh random salt and bound by its
``info`` to the format version, the suite and the transfer id::

    okm = HKDF-Hash(ikm, salt, info = LABEL || version || suite || transfer_id)
    enc_key = okm[0:32]; mac_key = okm[32:32+H]; nonce = okm[32+H:40+H]

where H is the hash's output size (64 for SHA-512, 32 for SHA-256). The OTR
extra symmetric key stays the same for a whole OTR key epoch (see
``shared/research/otr.md``), so the fresh salt is what makes two transfers in
one epoch use unrelated keys: CryptoCat, which fed that key straight into
AES-CTR, could reuse a keystream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import (
    Cipher,
    CipherContext,
    algorithms,
    modes,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from xfer.envelope.format import KEY_SIZE, EnvelopeHeader, Suite
from xfer.errors import LocalProtocolError

__all__ = ["HKDF_LABEL", "NONCE_SIZE", "ChunkKeys", "derive_keys"]

#: The HKDF info label (spec section 3).
HKDF_LABEL = b"xfer envelope keys\x00"
#: The first half of every CTR counter block; the second half counts blocks.
NONCE_SIZE = 8
_AES_BLOCK = 16


def _hash_for(suite: Suite) -> hashes.HashAlgorithm:
    if suite == Suite.AES256_CTR_HMAC_SHA512:
        return hashes.SHA512()
    return hashes.SHA256()


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkKeys:
    """Derived keys for one sealed stream, plus what every chunk needs.

    ``mac_prefix`` is an HMAC context already keyed and fed the header bytes;
    each chunk's tag starts from a copy of it (spec section 4, step 3).
    """

    enc_key: bytes = field(repr=False)
    mac_key: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    header: EnvelopeHeader
    header_bytes: bytes
    mac_prefix: hmac.HMAC = field(repr=False)

    @property
    def chunk_size(self) -> int:
        return self.header.chunk_size

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def blocks_per_chunk(self) -> int:
        """AES blocks of keystream reserved for each chunk: ceil(chunk_size/16)."""
        return -(-self.header.chunk_size // _AES_BLOCK)

    @property
    def keystream_gap(self) -> int:
        """Keystream bytes skipped after a full chunk to reach the next one.

        Zero when the chunk size is a multiple of 16. Otherwise a sequential
        encryptor discards this many keystream bytes after each full chunk, so
        that one CTR context can serve a run of chunks while chunk ``i`` still
        starts at block ``i * blocks_per_chunk``.
        """
        return self.blocks_per_chunk * _AES_BLOCK - self.header.chunk_size

    def counter_block(self, index: int) -> bytes:
        """The initial CTR counter block of chunk ``index`` (spec section 4)."""
        return self.nonce + (index * self.blocks_per_chunk).to_bytes(8, "big")

    def cipher_at(self, index: int) -> CipherContext:
        """A CTR context positioned at the start of chunk ``index``.

        CTR is its own inverse, so the same context encrypts and decrypts.
        """
        return Cipher(
            algorithms.AES256(self.enc_key), modes.CTR(self.counter_block(index))
        ).encryptor()


def derive_keys(key_material: bytes, header: EnvelopeHeader) -> ChunkKeys:
    """Run the key schedule of spec section 3 for one stream.

    Raises:
        LocalProtocolError: the key material is not 32 bytes.
    """
    if len(key_material) != KEY_SIZE:
        msg = f"key material must be {KEY_SIZE} bytes, not {len(key_material)}"
        raise LocalProtocolError(msg)
    algorithm = _hash_for(header.suite)
    mac_size = algorithm.digest_size
    info = HKDF_LABEL + bytes([header.version, header.suite]) + header.transfer_id
    okm = HKDF(
        algorithm=algorithm,
        length=KEY_SIZE + mac_size + NONCE_SIZE,
        salt=header.salt,
        info=info,
    ).derive(key_material)
    mac_key = okm[KEY_SIZE : KEY_SIZE + mac_size]
    header_bytes = header.pack()
    prefix = hmac.HMAC(mac_key, algorithm)
    prefix.update(header_bytes)
    return ChunkKeys(
        enc_key=okm[:KEY_SIZE],
        mac_key=mac_key,
        nonce=okm[KEY_SIZE + mac_size :],
        header=header,
        header_bytes=header_bytes,
        mac_prefix=prefix,
    )
