"""The rotating D-H keys of an encrypted OTR session (Protocol-v3, "Key
Management"): our two latest key pairs, the peer's two latest public keys,
and the keys and counters of each (our key, their key) pair; see the theory
of operation in :mod:`xfer.otr.session`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xfer.otr.crypto import DHKeyPair, sha1, sha256
from xfer.otr.data import encode_mpi

if TYPE_CHECKING:
    from collections.abc import Callable

    from xfer.otr.ake import AKEResult

__all__ = ["Pair", "SessionKeys", "pair_keys"]


@dataclass(slots=True)
class Pair:
    """Keys and counters for one (our key, their key) pair."""

    send_aes: bytes = field(repr=False)
    send_mac: bytes = field(repr=False)
    recv_aes: bytes = field(repr=False)
    recv_mac: bytes = field(repr=False)
    extra_key: bytes = field(repr=False)
    send_ctr: int = 0
    recv_ctr: int = 0
    recv_used: bool = False


def pair_keys(ours: DHKeyPair, theirs: int) -> Pair:
    secbytes = encode_mpi(ours.shared(theirs))
    send_byte, recv_byte = (
        (b"\x01", b"\x02") if ours.public > theirs else (b"\x02", b"\x01")
    )
    send_aes = sha1(send_byte + secbytes)[:16]
    recv_aes = sha1(recv_byte + secbytes)[:16]
    return Pair(
        send_aes, sha1(send_aes), recv_aes, sha1(recv_aes), sha256(b"\xff" + secbytes)
    )


class SessionKeys:
    """The rotating D-H keys of an encrypted session."""

    def __init__(self, result: AKEResult, random: Callable[[int], bytes]) -> None:
        self._random = random
        self.our_keyid = result.our_keyid + 1
        self.our_old: DHKeyPair | None = result.our_dh
        self.our_dh = DHKeyPair.generate(random)
        self.their_keyid = result.their_keyid
        self.their_y = result.their_dh
        self.their_old: int | None = None
        self.pairs: dict[tuple[int, int], Pair] = {}
        self.reveal = b""

    def pair(self, our_id: int, their_id: int) -> Pair | None:
        """The pair for these key ids, or None if we do not hold both keys."""
        found = self.pairs.get((our_id, their_id))
        if found is not None:
            return found
        if our_id == self.our_keyid:
            ours = self.our_dh
        elif our_id == self.our_keyid - 1 and self.our_old is not None:
            ours = self.our_old
        else:
            return None
        if their_id == self.their_keyid:
            theirs = self.their_y
        elif their_id == self.their_keyid - 1 and self.their_old is not None:
            theirs = self.their_old
        else:
            return None
        if our_id == 0 or their_id == 0:
            return None
        created = pair_keys(ours, theirs)
        self.pairs[our_id, their_id] = created
        return created

    def sending_pair(self) -> Pair:
        pair = self.pair(self.our_keyid - 1, self.their_keyid)
        assert pair is not None
        return pair

    def _forget(self, keep: Callable[[tuple[int, int]], bool]) -> None:
        for ids in [ids for ids in self.pairs if not keep(ids)]:
            dropped = self.pairs.pop(ids)
            if dropped.recv_used:
                self.reveal += dropped.recv_mac

    def rotate_ours(self) -> None:
        """The peer used our latest key: forget the previous, make a new one."""
        gone = self.our_keyid - 1
        self._forget(lambda ids: ids[0] != gone)
        self.our_old = self.our_dh
        self.our_keyid += 1
        self.our_dh = DHKeyPair.generate(self._random)

    def rotate_theirs(self, next_dh: int) -> None:
        """The peer sent from its latest key: its next_dh becomes the latest."""
        gone = self.their_keyid - 1
        self._forget(lambda ids: ids[1] != gone)
        self.their_old = self.their_y
        self.their_y = next_dh
        self.their_keyid += 1
