"""Deterministic seams for test vectors and tests.

:class:`~xfer.envelope.Sealer` draws its salt from ``os.urandom``; these
functions take the salt (and transfer id) as parameters instead, one level
down, the way ``cryptography``'s Fernet has ``_encrypt_from_parts``. Never use
them to seal real data: a salt must not be reused with the same key material.
"""

from __future__ import annotations

from xfer.envelope.chunker import DEFAULT_SUITE, Sealer
from xfer.envelope.format import DEFAULT_CHUNK_SIZE, VERSION, BytesLike, Suite

__all__ = ["seal_from_parts", "sealer_from_parts"]


def sealer_from_parts(
    key: bytes,
    *,
    salt: bytes,
    transfer_id: bytes,
    suite: Suite = DEFAULT_SUITE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    version: int = VERSION,
) -> Sealer:
    """A Sealer with a given salt and transfer id (deterministic output).

    The same construction as :meth:`Sealer.announced`, on the calling thread.
    """
    return Sealer.announced(
        key,
        salt=salt,
        transfer_id=transfer_id,
        suite=suite,
        chunk_size=chunk_size,
        version=version,
    )


def seal_from_parts(
    key: bytes,
    plaintext: BytesLike,
    *,
    salt: bytes,
    transfer_id: bytes,
    suite: Suite = DEFAULT_SUITE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    version: int = VERSION,
) -> bytes:
    """Seal a whole plaintext in one call with a given salt and transfer id
    (in version 2 without a flush: full chunks, then the final one)."""
    sealer = sealer_from_parts(
        key,
        salt=salt,
        transfer_id=transfer_id,
        suite=suite,
        chunk_size=chunk_size,
        version=version,
    )
    return sealer.update(plaintext) + sealer.finalize()
