"""The OTR v3 authenticated key exchange (Protocol-v3, "The protocol state machine").

Theory of operation
-------------------
Bob (the initiator) commits to ``g^x`` by sending it encrypted under a random
key ``r`` together with its hash (D-H Commit). Alice answers in the clear with
``g^y`` (D-H Key). Bob reveals ``r`` and sends his long-term public key, key
id and a signature over both D-H values, encrypted and MACed under keys from
``s = g^xy`` (Reveal Signature). Alice checks all of it and answers the same
way (Signature). Both then hold ``s``, each other's authenticated long-term
key, and the session id.

Keys from ``s`` (``h2(b) = SHA-256(b || MPI(s))``)::

    ssid = h2(0x00)[0:8]    c = h2(0x01)[0:16]   c' = h2(0x01)[16:32]
    m1 = h2(0x02)  m2 = h2(0x03)  m1' = h2(0x04)  m2' = h2(0x05)

The machine is data: :data:`TRANSITIONS` maps every (state, input) pair to a
handler, including the many pairs the spec says to ignore. Messages that fail
a check (a bad MAC, a bad signature, a hash that does not match) raise
:class:`~xfer.errors.RemoteProtocolError` and leave the state as it was, so
a forged message cannot derail an exchange in progress.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xfer.errors import RemoteProtocolError
from xfer.otr.crypto import (
    DHKeyPair,
    PrivateKey,
    PublicKey,
    aes_ctr,
    check_group_element,
    hmac_sha256,
    sha256,
)
from xfer.otr.data import Reader, encode_data, encode_int, encode_mpi
from xfer.otr.messages import DHCommit, DHKey, RevealSignature, Signature

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["AKE", "TRANSITIONS", "AKEInput", "AKEResult", "AuthState"]

#: The key id each side gives its AKE D-H key (libotr does the same).
AKE_KEYID = 1
_ZERO_CTR = bytes(8)


class AuthState(enum.Enum):
    NONE = "none"
    AWAITING_DHKEY = "awaiting-dhkey"
    AWAITING_REVEALSIG = "awaiting-revealsig"
    AWAITING_SIG = "awaiting-sig"


class AKEInput(enum.Enum):
    START = "start"
    DH_COMMIT = "dh-commit"
    DH_KEY = "dh-key"
    REVEAL_SIGNATURE = "reveal-signature"
    SIGNATURE = "signature"


@dataclass(frozen=True, slots=True, kw_only=True)
class AKEResult:
    """What a finished AKE hands to the session."""

    ssid: bytes
    their_public_key: PublicKey
    their_keyid: int
    their_dh: int
    our_dh: DHKeyPair = field(repr=False)
    our_keyid: int
    #: True for the side that sent Reveal Signature (it shows the ssid's
    #: first half in bold, per the spec).
    sent_reveal: bool


@dataclass(frozen=True, slots=True)
class _Keys:
    ssid: bytes
    c: bytes
    c_prime: bytes
    m1: bytes
    m2: bytes
    m1_prime: bytes
    m2_prime: bytes


def _derive(secret: int) -> _Keys:
    secbytes = encode_mpi(secret)

    def h2(b: int) -> bytes:
        return sha256(bytes([b]) + secbytes)

    h01 = h2(0x01)
    return _Keys(
        h2(0x00)[:8], h01[:16], h01[16:], h2(0x02), h2(0x03), h2(0x04), h2(0x05)
    )


class AKE:
    """One side's AKE with one peer instance.

    Args:
        private_key: our long-term DSA key.
        our_tag: our instance tag; ``their_tag`` is learnt from their messages.
        random: a source of random bytes (``os.urandom`` in production).
    """

    def __init__(
        self, private_key: PrivateKey, *, our_tag: int, random: Callable[[int], bytes]
    ) -> None:
        self._key = private_key
        self.our_tag = our_tag
        self.their_tag = 0
        self._random = random
        self.state = AuthState.NONE
        self._reset()

    def _reset(self) -> None:
        self._our_dh: DHKeyPair | None = None
        self._r = b""
        self._commit: DHCommit | None = None
        self._dhkey: DHKey | None = None
        self._reveal: RevealSignature | None = None
        self._their_encrypted_gx = b""
        self._their_hashed_gx = b""
        self._gy = 0
        self._keys: _Keys | None = None

    # -- the table -----------------------------------------------------------

    def handle(
        self, kind: AKEInput, message: object = None
    ) -> tuple[list[DHCommit | DHKey | RevealSignature | Signature], AKEResult | None]:
        """Feed one input; return (messages to send, a result if the AKE ended).

        Raises:
            RemoteProtocolError: the message failed a check; state unchanged.
        """
        handler = TRANSITIONS[self.state, kind]
        return handler(self, message)

    def start(self) -> DHCommit:
        """Begin (or restart) the AKE: return our D-H Commit."""
        out, _ = self.handle(AKEInput.START)
        commit = out[0]
        assert isinstance(commit, DHCommit)
        return commit

    # -- handlers ------------------------------------------------------------

    def _ignore(self, message: object) -> _Out:
        return [], None

    def _send_commit(self, message: object) -> _Out:
        self._reset()
        self._our_dh = DHKeyPair.generate(self._random)
        self._r = self._random(16)
        gxmpi = encode_mpi(self._our_dh.public)
        self._commit = DHCommit(
            sender_tag=self.our_tag,
            receiver_tag=self.their_tag,
            encrypted_gx=aes_ctr(self._r, _ZERO_CTR, gxmpi),
            hashed_gx=sha256(gxmpi),
        )
        self.state = AuthState.AWAITING_DHKEY
        return [self._commit], None

    def _answer_commit(self, message: object) -> _Out:
        assert isinstance(message, DHCommit)
        self._reset()
        self._their_encrypted_gx = message.encrypted_gx
        self._their_hashed_gx = message.hashed_gx
        self._our_dh = DHKeyPair.generate(self._random)
        self._dhkey = DHKey(
            sender_tag=self.our_tag, receiver_tag=self.their_tag, gy=self._our_dh.public
        )
        self.state = AuthState.AWAITING_REVEALSIG
        return [self._dhkey], None

    def _commit_while_awaiting_dhkey(self, message: object) -> _Out:
        # Both sides sent a commit: the larger hash (as a 32-byte big-endian
        # number) wins and keeps its commit; the other side answers it.
        assert isinstance(message, DHCommit)
        assert self._commit is not None
        if self._commit.hashed_gx > message.hashed_gx:
            return [self._commit], None
        return self._answer_commit(message)

    def _commit_while_awaiting_revealsig(self, message: object) -> _Out:
        assert isinstance(message, DHCommit)
        assert self._dhkey is not None
        self._their_encrypted_gx = message.encrypted_gx
        self._their_hashed_gx = message.hashed_gx
        return [self._dhkey], None

    def _dhkey_while_awaiting_dhkey(self, message: object) -> _Out:
        assert isinstance(message, DHKey)
        assert self._our_dh is not None
        check_group_element(message.gy)
        keys = _derive(self._our_dh.shared(message.gy))
        self._gy = message.gy
        signed = self._signed_part(keys.m1, self._our_dh.public, message.gy, AKE_KEYID)
        encrypted = aes_ctr(keys.c, _ZERO_CTR, signed)
        self._reveal = RevealSignature(
            sender_tag=self.our_tag,
            receiver_tag=self.their_tag,
            revealed_key=self._r,
            encrypted_signature=encrypted,
            mac=hmac_sha256(keys.m2, encode_data(encrypted))[:20],
        )
        self._keys = keys
        self.state = AuthState.AWAITING_SIG
        return [self._reveal], None

    def _dhkey_while_awaiting_sig(self, message: object) -> _Out:
        assert isinstance(message, DHKey)
        if message.gy == self._gy and self._reveal is not None:
            return [self._reveal], None
        return [], None

    def _reveal_while_awaiting_revealsig(self, message: object) -> _Out:
        assert isinstance(message, RevealSignature)
        assert self._our_dh is not None
        assert self._dhkey is not None
        if len(message.revealed_key) != 16:
            raise RemoteProtocolError("revealed AES key must be 16 bytes")
        gxmpi = aes_ctr(message.revealed_key, _ZERO_CTR, self._their_encrypted_gx)
        if not hmac.compare_digest(sha256(gxmpi), self._their_hashed_gx):
            raise RemoteProtocolError("D-H commitment does not match")
        reader = Reader(gxmpi)
        gx = reader.mpi()
        reader.end()
        check_group_element(gx)
        keys = _derive(self._our_dh.shared(gx))
        public, keyid = self._check_signed_part(
            keys.m2,
            keys.c,
            keys.m1,
            message.encrypted_signature,
            message.mac,
            gx,
            self._our_dh.public,
        )
        signed = self._signed_part(keys.m1_prime, self._our_dh.public, gx, AKE_KEYID)
        encrypted = aes_ctr(keys.c_prime, _ZERO_CTR, signed)
        reply = Signature(
            sender_tag=self.our_tag,
            receiver_tag=self.their_tag,
            encrypted_signature=encrypted,
            mac=hmac_sha256(keys.m2_prime, encode_data(encrypted))[:20],
        )
        result = AKEResult(
            ssid=keys.ssid,
            their_public_key=public,
            their_keyid=keyid,
            their_dh=gx,
            our_dh=self._our_dh,
            our_keyid=AKE_KEYID,
            sent_reveal=False,
        )
        self._reset()
        self.state = AuthState.NONE
        return [reply], result

    def _signature_while_awaiting_sig(self, message: object) -> _Out:
        assert isinstance(message, Signature)
        assert self._our_dh is not None
        assert self._keys is not None
        keys = self._keys
        public, keyid = self._check_signed_part(
            keys.m2_prime,
            keys.c_prime,
            keys.m1_prime,
            message.encrypted_signature,
            message.mac,
            self._gy,
            self._our_dh.public,
        )
        result = AKEResult(
            ssid=keys.ssid,
            their_public_key=public,
            their_keyid=keyid,
            their_dh=self._gy,
            our_dh=self._our_dh,
            our_keyid=AKE_KEYID,
            sent_reveal=True,
        )
        self._reset()
        self.state = AuthState.NONE
        return [], result

    # -- the signed part X = PUBKEY || keyid || SIG(M) ------------------------

    def _signed_part(self, mac_key: bytes, ours: int, theirs: int, keyid: int) -> bytes:
        pub = self._key.public.encode()
        m = hmac_sha256(
            mac_key, encode_mpi(ours) + encode_mpi(theirs) + pub + encode_int(keyid)
        )
        return pub + encode_int(keyid) + self._key.sign(m)

    @staticmethod
    def _check_signed_part(
        mac_verify_key: bytes,
        aes_key: bytes,
        mac_sign_key: bytes,
        encrypted: bytes,
        mac: bytes,
        their_dh: int,
        our_dh: int,
    ) -> tuple[PublicKey, int]:
        expected = hmac_sha256(mac_verify_key, encode_data(encrypted))[:20]
        if not hmac.compare_digest(expected, mac):
            raise RemoteProtocolError("AKE MAC does not verify")
        reader = Reader(aes_ctr(aes_key, _ZERO_CTR, encrypted))
        public = PublicKey.read(reader)
        keyid = reader.u32()
        signature = reader.rest()
        if keyid == 0:
            raise RemoteProtocolError("AKE key id must not be 0")
        m = hmac_sha256(
            mac_sign_key,
            encode_mpi(their_dh)
            + encode_mpi(our_dh)
            + public.encode()
            + encode_int(keyid),
        )
        if not public.verify(m, signature):
            raise RemoteProtocolError("AKE signature does not verify")
        return public, keyid


_Out = tuple[list[DHCommit | DHKey | RevealSignature | Signature], AKEResult | None]

_S, _I = AuthState, AKEInput
#: Every (state, input) pair, and what it does. Protocol-v3 lists these cases
#: under "Receiving a D-H Commit message" and the sections after it.
TRANSITIONS: dict[tuple[AuthState, AKEInput], Callable[[AKE, object], _Out]] = {
    **{(s, _I.START): AKE._send_commit for s in AuthState},
    (_S.NONE, _I.DH_COMMIT): AKE._answer_commit,
    (_S.AWAITING_DHKEY, _I.DH_COMMIT): AKE._commit_while_awaiting_dhkey,
    (_S.AWAITING_REVEALSIG, _I.DH_COMMIT): AKE._commit_while_awaiting_revealsig,
    (_S.AWAITING_SIG, _I.DH_COMMIT): AKE._answer_commit,
    (_S.NONE, _I.DH_KEY): AKE._ignore,
    (_S.AWAITING_DHKEY, _I.DH_KEY): AKE._dhkey_while_awaiting_dhkey,
    (_S.AWAITING_REVEALSIG, _I.DH_KEY): AKE._ignore,
    (_S.AWAITING_SIG, _I.DH_KEY): AKE._dhkey_while_awaiting_sig,
    (_S.NONE, _I.REVEAL_SIGNATURE): AKE._ignore,
    (_S.AWAITING_DHKEY, _I.REVEAL_SIGNATURE): AKE._ignore,
    (_S.AWAITING_REVEALSIG, _I.REVEAL_SIGNATURE): AKE._reveal_while_awaiting_revealsig,
    (_S.AWAITING_SIG, _I.REVEAL_SIGNATURE): AKE._ignore,
    (_S.NONE, _I.SIGNATURE): AKE._ignore,
    (_S.AWAITING_DHKEY, _I.SIGNATURE): AKE._ignore,
    (_S.AWAITING_REVEALSIG, _I.SIGNATURE): AKE._ignore,
    (_S.AWAITING_SIG, _I.SIGNATURE): AKE._signature_while_awaiting_sig,
}
