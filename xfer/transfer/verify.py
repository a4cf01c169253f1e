"""The receiver's verifier: a sealed stream checked against its offer."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from xfer.envelope import Opener
from xfer.errors import IntegrityError, StreamTruncated
from xfer.transfer.offer import envelope_header

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from xfer.envelope.format import BytesLike
    from xfer.transfer.offer import TransferOffer

__all__ = ["Verifier"]


class Verifier:
    """Verifies a sealed stream against the offer it was announced by:
    the envelope's :class:`~xfer.envelope.Opener`, the offer's salt, suite
    and chunk size in the header, a byte budget (the sealed size), and a
    running SHA-256 of the plaintext (the caller feeds :attr:`digest` the
    released plaintext), compared at the end with the offer's (version 1)
    or, by :meth:`check`, with the sender's digest that follows the data
    (version 2). ``feed`` may run on a worker thread; one caller at a time.

    A resumed receipt verifies the rest of the file, from ``start``: the
    digest already holds the prefix, and the stream holds ``size - start``
    bytes of plaintext.
    """

    def __init__(
        self,
        key: bytes,
        offer: TransferOffer,
        sealed_size: int,
        executor: Executor | None,
        start: int = 0,
    ) -> None:
        self.opener = Opener(
            key,
            transfer_id=offer.transfer_id,
            max_chunk_size=offer.chunk_size,
            executor=executor,
        )
        self.offer = offer
        #: The header the offer announced (suite, chunk size, salt, id).
        self.expected = envelope_header(offer)
        self.budget = sealed_size
        self.start = start
        self.plain = start
        self.digest = hashlib.sha256()

    def feed(self, piece: BytesLike, buf: bytearray) -> memoryview:
        """Verify and decrypt ``piece`` into ``buf`` (big enough: see
        ``opener.output_bound``); the plaintext released so far."""
        self.budget -= memoryview(piece).nbytes
        if self.budget < 0:  # more than the offer said: not this transfer
            raise IntegrityError
        n = self.opener.update_into(piece, buf)
        header = self.opener.header
        if header is not None and header != self.expected:
            raise IntegrityError
        self.plain += n
        return memoryview(buf)[:n]

    def finish(self) -> bytes:
        """At the end of the stream: the held-back final plaintext, once the
        final chunk and the size check out, and for a version 1 offer the
        SHA-256 too (a version 2 offer's comes later: :meth:`check`)."""
        if self.budget > 0:  # cut off: what came is verified, the rest is due
            raise StreamTruncated(
                f"the stream ended after {self.plain} of {self.offer.size} bytes"
            )
        tail = self.opener.finalize()
        self.digest.update(tail)
        self.plain += len(tail)
        if self.budget != 0 or self.plain != self.offer.size:
            raise IntegrityError
        if self.offer.sha256 is not None:
            self.check(self.offer.sha256, self.offer.size)
        return tail

    def check(self, sha256: bytes, size: int) -> bytes:
        """After :meth:`finish`: the plaintext's SHA-256 (prefix included),
        once it equals ``sha256`` and ``size`` is the plaintext's size.

        Raises:
            IntegrityError: it does not (the file is not the one the sender
            hashed: nothing may be stored).
        """
        ours = self.digest.digest()
        if size != self.plain or not hmac.compare_digest(ours, sha256):
            raise IntegrityError
        return ours
