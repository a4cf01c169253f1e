"""An OTR v3 session with one instance of one peer: messages in, messages out.

Theory of operation
-------------------
``Session.receive(text)`` takes a message body from the peer and returns
:mod:`events <xfer.otr.events>`; anything the protocol must send back (a D-H
Key, a Signature, an SMP step, an error) is queued and collected with
``data_to_send()``, which returns ready-to-send bodies (fragmented if the
policy says so). ``send()``, ``extra_symmetric_key()`` and the ``smp_*``
calls queue messages the same way. There is no I/O, clock or global
randomness inside: the random source is a constructor argument.

Message states (Protocol-v3, "Message states"): PLAINTEXT until an AKE
finishes, then ENCRYPTED; FINISHED once the peer ends the conversation with
TLV 1, until we end it too or a new AKE finishes.

Data messages and key rotation (Protocol-v3, "Exchanging Data" and "Key
Management"): we keep our two latest D-H key pairs and the peer's two latest
public keys, each with a key id. A message is encrypted with (our previous
key, their latest key) and announces our latest public key as ``next_dh``.
When the peer has used our latest key we forget the previous one and make a
new one; when the peer's message is sent from its latest key its ``next_dh``
becomes its new latest. Keys for a pair: ``secbytes = MPI(g^xy)``; the side
whose public key is larger is "high" and sends with byte 0x01::

    sendAES = SHA-1(sendbyte || secbytes)[0:16]   sendMAC = SHA-1(sendAES)
    extra symmetric key = SHA-256(0xFF || secbytes)

Each pair has its own counter, strictly increasing and never zero; a
message whose counter does not increase is a replay and is rejected.
Receiving MAC keys of forgotten pairs are revealed in a later message, as
the spec asks (deniability).

Offers in the clear (Protocol-v3, "Query Messages" and "Tagged plaintext
messages"): a query message or whitespace tag that offers version 3 starts
the AKE (a whitespace tag, per ``Policy.whitespace_start_ake``, only outside
an ENCRYPTED conversation); one that offers other versions only, or the
first message of an older AKE (a version 2 D-H Commit), is reported as
:class:`~xfer.otr.events.VersionUnsupported` and changes nothing.

SMP (starting, answering and aborting it, and its steps deferred off the
caller's thread with ``Policy.defer_smp``) is in
:mod:`xfer.otr.session_smp`, whose :class:`~xfer.otr.session_smp.SessionSMP`
is a base of :class:`Session`.

Hostile input never changes an established session: a message that fails to
parse or verify raises :class:`~xfer.errors.RemoteProtocolError` (after
queueing the error reply the spec asks for, if any) and leaves every key and
counter as it was.
"""

from __future__ import annotations

import enum
import hmac
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.otr import events as ev
from xfer.otr.ake import AKE, AKEInput
from xfer.otr.crypto import (
    PrivateKey,
    aes_ctr,
    check_group_element,
    hmac_sha1,
)
from xfer.otr.fragments import (
    FRAGMENT_OVERHEAD,
    FragmentBudget,
    Reassembler,
    fragment,
    parse_fragment,
)
from xfer.otr.keys import Pair, SessionKeys
from xfer.otr.messages import (
    DataMessage,
    DHCommit,
    DHKey,
    ErrorMessage,
    OldEncoded,
    PlainText,
    QueryMessage,
    RevealSignature,
    Signature,
    parse_text,
)
from xfer.otr.session_smp import SMP_INPUTS, SMP_QUEUE_LIMIT, SessionSMP
from xfer.otr.tlv import (
    TLV_DISCONNECTED,
    TLV_EXTRA_SYMMETRIC_KEY,
    TLV_PADDING,
    decode_tlvs,
    encode_tlvs,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "SMP_QUEUE_LIMIT",
    "TLV_DISCONNECTED",
    "TLV_EXTRA_SYMMETRIC_KEY",
    "TLV_PADDING",
    "MessageState",
    "Policy",
    "Session",
    "decode_tlvs",
    "encode_tlvs",
]

_UNREADABLE = "You sent an encrypted message I cannot read"


class MessageState(enum.Enum):
    PLAINTEXT = "plaintext"
    ENCRYPTED = "encrypted"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """How a session behaves. Only protocol version 3 is spoken.

    Attributes:
        require_encryption: refuse to send plaintext (``send`` raises).
        answer_queries: start the AKE when a query message offers v3.
        whitespace_start_ake: start the AKE when a plain message carries a
            whitespace tag that offers v3 (Protocol-v3's
            WHITESPACE_START_AKE), unless the conversation with the peer is
            ENCRYPTED already.
        max_message_size: split longer outgoing messages into fragments
            (None: never; XMPP needs none, but some networks do).
        defer_smp: do not compute SMP steps inside ``receive``,
            ``smp_start`` or ``smp_answer``; report
            :class:`~xfer.otr.events.SMPPending` and let the caller run them
            (``smp_next``, ``run_smp_job``, ``smp_finish``). Set it whenever
            the session is driven from an event loop.
    """

    require_encryption: bool = True
    answer_queries: bool = True
    whitespace_start_ake: bool = True
    max_message_size: int | None = None
    defer_smp: bool = False


class Session(SessionSMP):
    """OTR v3 with one peer instance (its SMP: see :class:`SessionSMP`).

    Args:
        private_key: our long-term DSA key.
        our_tag: our instance tag (0x100 or more; persistent per installation).
        their_tag: the peer's instance tag if known, else 0 (learnt from its
            first AKE message).
        policy: see :class:`Policy`.
        random: source of random bytes.
        fragment_budget: shared with the other sessions of an account, so
            that their partial fragmented messages together stay bounded;
            None for a budget of this session's own (one message).
    """

    def __init__(
        self,
        private_key: PrivateKey,
        *,
        our_tag: int,
        their_tag: int = 0,
        policy: Policy | None = None,
        random: Callable[[int], bytes] = os.urandom,
        fragment_budget: FragmentBudget | None = None,
    ) -> None:
        if not 0x100 <= our_tag <= 0xFFFFFFFF:
            raise LocalProtocolError("instance tags are 0x100 to 0xffffffff")
        self.private_key = private_key
        self.our_tag = our_tag
        self.their_tag = their_tag
        self.policy = policy or Policy()
        self._random = random
        self.state = MessageState.PLAINTEXT
        self.ake = AKE(private_key, our_tag=our_tag, random=random)
        self.ake.their_tag = their_tag
        self._smp_setup()
        self._keys: SessionKeys | None = None
        self._reassembler = Reassembler(budget=fragment_budget)
        self._outbox: list[str] = []
        self.their_public_key: object = None
        self.their_fingerprint: bytes | None = None
        self.ssid: bytes | None = None

    # -- output ----------------------------------------------------------------

    def data_to_send(self) -> list[str]:
        """Take the message bodies queued for the peer, in order."""
        out, self._outbox = self._outbox, []
        return out

    def _queue(self, text: str) -> None:
        limit = self.policy.max_message_size
        if limit is not None and text.startswith("?OTR:") and len(text) > limit:
            if limit <= FRAGMENT_OVERHEAD:
                raise LocalProtocolError("max_message_size is too small for fragments")
            self._outbox.extend(
                fragment(
                    text, limit, sender_tag=self.our_tag, receiver_tag=self.their_tag
                )
            )
        else:
            self._outbox.append(text)

    # -- starting and ending -----------------------------------------------------

    def query(self) -> None:
        """Queue a query message asking the peer to start OTR v3."""
        self._queue(QueryMessage(versions=frozenset({3})).encode())

    def start_ake(self) -> None:
        """Queue a D-H Commit: start (or refresh) the AKE ourselves."""
        self._queue(self.ake.start().encode())

    def end(self) -> None:
        """End the private conversation: tell the peer (TLV 1), go PLAINTEXT."""
        if self.state is MessageState.ENCRYPTED:
            self._send_data(b"", [(TLV_DISCONNECTED, b"")], ignore_unreadable=True)
        self._go_plaintext()

    def release(self) -> None:
        """Give back what this session holds of shared budgets (its partial
        fragmented message): call it when dropping the session."""
        self._reassembler.reset()

    def clear_ake(self) -> None:
        """Forget any AKE in progress (another session took it over)."""
        self.ake = AKE(self.private_key, our_tag=self.our_tag, random=self._random)
        self.ake.their_tag = self.their_tag

    def _go_plaintext(self) -> None:
        self.state = MessageState.PLAINTEXT
        self._keys = None
        self._smp_reset()

    # -- sending -------------------------------------------------------------

    def send(self, text: str, tlvs: Iterable[tuple[int, bytes]] = ()) -> None:
        """Queue ``text`` for the peer, encrypted when the session is.

        Raises:
            LocalProtocolError: the session is not ENCRYPTED and the policy
                requires encryption, or it is FINISHED (the peer left: end
                it or start a new AKE first).
        """
        if self.state is MessageState.ENCRYPTED:
            self._send_data(text.encode("utf-8"), list(tlvs))
            return
        if self.state is MessageState.FINISHED:
            raise LocalProtocolError("the peer ended the private conversation")
        if self.policy.require_encryption:
            raise LocalProtocolError("the conversation is not encrypted yet")
        self._outbox.append(text)

    def _send_data(
        self,
        text: bytes,
        tlvs: list[tuple[int, bytes]],
        *,
        ignore_unreadable: bool = False,
    ) -> Pair:
        keys = self._keys
        if keys is None or self.state is not MessageState.ENCRYPTED:
            raise LocalProtocolError("the conversation is not encrypted")
        pair = keys.sending_pair()
        pair.send_ctr += 1
        top = pair.send_ctr.to_bytes(8, "big")
        plaintext = text + b"\x00" + encode_tlvs(tlvs)  # libotr always adds the NUL
        message = DataMessage(
            sender_tag=self.our_tag,
            receiver_tag=self.their_tag,
            flags=DataMessage.FLAG_IGNORE_UNREADABLE if ignore_unreadable else 0,
            sender_keyid=keys.our_keyid - 1,
            recipient_keyid=keys.their_keyid,
            next_dh=keys.our_dh.public,
            ctr=top,
            encrypted=aes_ctr(pair.send_aes, top, plaintext),
        )
        mac = hmac_sha1(pair.send_mac, message.authenticated_bytes())
        reveal, keys.reveal = keys.reveal, b""
        self._queue(
            DataMessage(
                sender_tag=message.sender_tag,
                receiver_tag=message.receiver_tag,
                flags=message.flags,
                sender_keyid=message.sender_keyid,
                recipient_keyid=message.recipient_keyid,
                next_dh=message.next_dh,
                ctr=message.ctr,
                encrypted=message.encrypted,
                mac=mac,
                old_mac_keys=reveal,
            ).encode()
        )
        return pair

    def extra_symmetric_key(self, use: int, data: bytes = b"") -> bytes:
        """Queue a TLV 8 message for ``use`` and return the 32-byte key.

        The key is the extra symmetric key of the D-H pair this very message
        is encrypted with, so the peer computes the same one on receipt.

        Raises:
            LocalProtocolError: not ENCRYPTED, or ``use`` is not 32-bit.
        """
        if not 0 <= use <= 0xFFFFFFFF:
            raise LocalProtocolError("the use value is a 32-bit integer")
        if len(data) > 0xFFFF - 4:
            raise LocalProtocolError("TLV 8 data is too long")
        pair = self._send_data(
            b"",
            [(TLV_EXTRA_SYMMETRIC_KEY, use.to_bytes(4, "big") + data)],
            ignore_unreadable=True,
        )
        return pair.extra_key

    # -- SMP (the rest is in session_smp.py) -----------------------------------

    def _smp_fingerprints(self) -> tuple[bytes, bytes, bytes]:
        """(ours, theirs, ssid) of the encrypted conversation, for the secret."""
        if self.state is not MessageState.ENCRYPTED or self.their_fingerprint is None:
            raise LocalProtocolError("SMP needs an encrypted conversation")
        assert self.ssid is not None
        return self.private_key.public.fingerprint, self.their_fingerprint, self.ssid

    def _smp_transmit(self, tlvs: list[tuple[int, bytes]]) -> None:
        """Send SMP TLVs to the peer if the conversation is encrypted."""
        if self.state is MessageState.ENCRYPTED:
            self._send_data(b"", tlvs, ignore_unreadable=True)

    # -- receiving -------------------------------------------------------------

    def receive(self, text: str, *, peer_encrypted: bool = False) -> list[ev.Event]:
        """Take one message body from the peer; return what happened.

        ``peer_encrypted``: a conversation with this peer is ENCRYPTED in
        another session (another of its instances; :class:`Account` knows).
        A whitespace tag then starts no AKE, as in this session's own
        ENCRYPTED state: the tag is plain text that anyone can write, and
        must not re-key a conversation that works.

        Raises:
            RemoteProtocolError: the message is malformed, not for this
                instance, or fails verification. The session is unchanged
                (a reply may have been queued, see ``data_to_send``).
        """
        if text.startswith("?OTR|"):
            whole = self._fragment(text)
            if whole is None:
                return []
            text = whole
        elif text.startswith("?OTR,"):
            return []  # a version 2 fragment: we speak only v3
        else:
            self._reassembler.reset()
        return self._whole(text, peer_encrypted)

    def _fragment(self, text: str) -> str | None:
        frag = parse_fragment(text)
        if frag.receiver_tag not in (0, self.our_tag):
            return None  # for another instance of our account
        if self.their_tag and frag.sender_tag != self.their_tag:
            return None
        return self._reassembler.add(frag)

    def _whole(self, text: str, peer_encrypted: bool) -> list[ev.Event]:
        message = parse_text(text)
        if isinstance(message, PlainText):
            return self._plaintext(message, peer_encrypted)
        if isinstance(message, QueryMessage):
            return self._query(message)
        if isinstance(message, ErrorMessage):
            return [ev.OTRErrorReceived(text=message.text)]
        if isinstance(message, OldEncoded):
            if message.starts_ake:
                return [
                    ev.VersionUnsupported(peer_versions=frozenset({message.version}))
                ]
            raise RemoteProtocolError(
                f"unsupported OTR protocol version {message.version}"
            )
        if message.receiver_tag not in (0, self.our_tag):
            return []  # addressed to another instance of our account
        if message.receiver_tag == 0 and not isinstance(message, DHCommit):
            raise RemoteProtocolError("only a D-H Commit may omit the receiver tag")
        if self.their_tag and message.sender_tag != self.their_tag:
            return []  # another instance of the peer; its own session handles it
        if isinstance(message, DataMessage):
            return self._data(message)
        return self._ake_message(message)

    def _query(self, message: QueryMessage) -> list[ev.Event]:
        """A query: answered with a D-H Commit if it offers v3 (even while
        ENCRYPTED: the peer asks for a new AKE, as Protocol-v3 says)."""
        answered = 3 in message.versions and self.policy.answer_queries
        if answered:
            self.start_ake()
        out: list[ev.Event] = [
            ev.QueryReceived(versions=message.versions, answered=answered)
        ]
        if message.versions and 3 not in message.versions:
            out.append(ev.VersionUnsupported(peer_versions=message.versions))
        return out

    def _plaintext(self, message: PlainText, peer_encrypted: bool) -> list[ev.Event]:
        """Plain text, and what its whitespace tag (if any) offers."""
        out: list[ev.Event] = []
        versions = message.tag_versions
        offered = 3 in versions
        if (
            offered
            and self.policy.whitespace_start_ake
            and self.state is not MessageState.ENCRYPTED
            and not peer_encrypted
        ):
            self.start_ake()
        if message.text:
            out.append(ev.PlaintextReceived(text=message.text, offered_otr=offered))
        if versions and not offered:
            out.append(ev.VersionUnsupported(peer_versions=versions))
        return out

    def _ake_message(
        self, message: DHCommit | DHKey | RevealSignature | Signature
    ) -> list[ev.Event]:
        kind = {
            DHCommit: AKEInput.DH_COMMIT,
            DHKey: AKEInput.DH_KEY,
            RevealSignature: AKEInput.REVEAL_SIGNATURE,
            Signature: AKEInput.SIGNATURE,
        }[type(message)]
        learnt = self.their_tag == 0
        if learnt:
            self.ake.their_tag = message.sender_tag
        try:
            replies, result = self.ake.handle(kind, message)
        except RemoteProtocolError:
            if learnt:
                self.ake.their_tag = 0
            raise
        if learnt and (replies or result):
            self.their_tag = message.sender_tag
        elif learnt:
            self.ake.their_tag = 0
        for reply in replies:
            self._queue(reply.encode())
        if result is None:
            return []
        refreshed = self.state is MessageState.ENCRYPTED
        before = self.their_fingerprint
        self._keys = SessionKeys(result, self._random)
        self.state = MessageState.ENCRYPTED
        self.their_public_key = result.their_public_key
        self.their_fingerprint = result.their_public_key.fingerprint
        self.ssid = result.ssid
        smp = self._smp_rekeyed(same_peer=before == self.their_fingerprint)
        return [
            ev.GoneSecure(
                fingerprint=self.their_fingerprint,
                ssid=result.ssid,
                their_tag=self.their_tag,
                refreshed=refreshed,
            ),
            *smp,
        ]

    def _unreadable(self, message: DataMessage, why: str) -> list[ev.Event]:
        if message.flags & DataMessage.FLAG_IGNORE_UNREADABLE:
            return []
        self._outbox.append(ErrorMessage(text=_UNREADABLE).encode())
        raise RemoteProtocolError(why)

    def _data(self, message: DataMessage) -> list[ev.Event]:
        keys = self._keys
        if self.state is not MessageState.ENCRYPTED or keys is None:
            return self._unreadable(
                message, "encrypted message outside a private conversation"
            )
        pair = keys.pair(message.recipient_keyid, message.sender_keyid)
        if pair is None:
            return self._unreadable(message, "data message for unknown keys")
        expected = hmac_sha1(pair.recv_mac, message.authenticated_bytes())
        if not hmac.compare_digest(expected, message.mac):
            return self._unreadable(message, "data message MAC does not verify")
        counter = int.from_bytes(message.ctr, "big")
        if counter <= pair.recv_ctr:
            return self._unreadable(
                message, "data message counter did not increase (replay)"
            )
        rotate_theirs = message.sender_keyid == keys.their_keyid
        if rotate_theirs:
            check_group_element(message.next_dh)
        # Everything checked: now change state.
        pair.recv_ctr = counter
        pair.recv_used = True
        plaintext = aes_ctr(pair.recv_aes, message.ctr, message.encrypted)
        if message.recipient_keyid == keys.our_keyid:
            keys.rotate_ours()
        if rotate_theirs:
            keys.rotate_theirs(message.next_dh)
        raw_text, _, raw_tlvs = plaintext.partition(b"\x00")
        out: list[ev.Event] = []
        if raw_text:
            out.append(
                ev.MessageReceived(text=raw_text.decode("utf-8", errors="replace"))
            )
        smp_seen = False
        for kind, value in decode_tlvs(raw_tlvs):
            if kind in SMP_INPUTS:
                # One SMP step per message, as libotr takes (it looks each
                # SMP type up once): a message packed with SMP TLVs would
                # otherwise cost a proof check per TLV.
                if smp_seen:
                    continue
                smp_seen = True
            out.extend(self._tlv(kind, value, pair))
        return out

    def _tlv(self, kind: int, value: bytes, pair: Pair) -> list[ev.Event]:
        if kind == TLV_DISCONNECTED:
            self._keys = None
            self.state = MessageState.FINISHED
            self._smp_peer_ended()
            return [ev.GoneInsecure()]
        if kind == TLV_EXTRA_SYMMETRIC_KEY:
            if len(value) < 4:
                return []
            return [
                ev.SymmetricKeyReceived(
                    use=int.from_bytes(value[:4], "big"),
                    data=value[4:],
                    key=pair.extra_key,
                )
            ]
        if kind in SMP_INPUTS:
            return self._smp_tlv(kind, value)
        return []  # padding and unknown TLVs are ignored, as the spec says
