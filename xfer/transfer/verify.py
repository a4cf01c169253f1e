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

    from xfer.transfer.offer import TransferOffer

__all__ = ["Verifier"]


class Verifier:
    """Verifies a sealed stream against the offer it was announced by:
    the envelope's :class:`~xfer.envelope.Opener`, the offer's salt, suite
    and chunk size in the header, a byte budget (the sealed size), and a
    running SHA-256 of the plaintext, compared with the offer's at the end.
    ``feed`` may run on a worker thread; one caller at a time.

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

    def feed(self, piece: bytes, buf: bytearray) -> memoryview:
        """Verify and decrypt ``piece`` into ``buf`` (big enough: see
        ``opener.output_bound``); the plaintext released so far."""
        self.budget -= len(piece)
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
        final chunk, the size and the SHA-256 check out."""
        if self.budget > 0:  # cut off: what came is verified, the rest is due
            raise StreamTruncated(
                f"the stream ended after {self.plain} of {self.offer.size} bytes"
            )
        tail = self.opener.finalize()
        self.digest.update(tail)
        self.plain += len(tail)
        if self.budget != 0 or self.plain != self.offer.size:
            raise IntegrityError
        if not hmac.compare_digest(self.digest.digest(), self.offer.sha256):
            raise IntegrityError
        return tail
