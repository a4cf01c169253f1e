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

SMP off the caller's thread (``Policy.defer_smp``): one SMP step costs up to
about two dozen 1536-bit exponentiations, a quarter of a second, which an
event loop cannot afford for every message any peer sends. With the policy,
an SMP TLV (and ``smp_start``/``smp_answer``) only queues the step and
``receive`` reports :class:`~xfer.otr.events.SMPPending`; the caller takes
the job (``smp_next``), computes it where it likes with the pure
:func:`~xfer.otr.smp.run_smp_job`, and applies the result here
(``smp_finish``), which sends the reply and returns the SMP events, exactly
those an inline step returns. Without the policy the step runs inline, as
``smp_run`` does. Keys, counters and the outbox are only ever touched by the
session's own calls. At most :data:`SMP_QUEUE_LIMIT` steps are in flight or
waiting; one more is out of order (SMP runs one exchange at a time) and
aborts the exchange. An abort, the end of the conversation or a new AKE
makes the step in flight stale: ``smp_finish`` then ignores its result.

Hostile input never changes an established session: a message that fails to
parse or verify raises :class:`~xfer.errors.RemoteProtocolError` (after
queueing the error reply the spec asks for, if any) and leaves every key and
counter as it was.
"""

from __future__ import annotations

import collections
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
    PlainText,
    QueryMessage,
    RevealSignature,
    Signature,
    parse_text,
)
from xfer.otr.smp import (
    SMP,
    TLV_SMP1,
    TLV_SMP1Q,
    TLV_SMP2,
    TLV_SMP3,
    TLV_SMP4,
    TLV_SMP_ABORT,
    SMPDone,
    SMPInput,
    SMPJob,
    SMPOutcome,
    SMPState,
    check_question,
    run_smp_job,
    smp_secret,
)
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

_SMP_INPUTS = {
    TLV_SMP1: SMPInput.RECV_1,
    TLV_SMP1Q: SMPInput.RECV_1,
    TLV_SMP2: SMPInput.RECV_2,
    TLV_SMP3: SMPInput.RECV_3,
    TLV_SMP4: SMPInput.RECV_4,
    TLV_SMP_ABORT: SMPInput.RECV_ABORT,
}
#: SMP steps a session holds at once, in flight and waiting: one being
#: computed and one behind it (both users started at once; or the peer's
#: step arrived while our own user's was computed). SMP runs one exchange at
#: a time, so a step beyond these is out of order and aborts the exchange.
SMP_QUEUE_LIMIT = 2
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
        answer_queries: start the AKE when the peer offers v3 (a query
            message or a whitespace tag).
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
    max_message_size: int | None = None
    defer_smp: bool = False


class Session:
    """OTR v3 with one peer instance.

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
        self.smp = SMP(random)
        #: SMP steps waiting to be computed, oldest first.
        self._smp_queue: collections.deque[tuple[SMPInput, object]] = (
            collections.deque()
        )
        self._smp_tickets = 0
        #: The ticket of the step being computed, if one is.
        self._smp_in_flight: int | None = None
        #: (ticket, fingerprint) of a step under way when the peer ended the
        #: conversation: only its verdict still counts.
        self._smp_verdict_only: tuple[int, bytes] | None = None
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

    # -- SMP -------------------------------------------------------------------

    def _smp_fingerprints(self) -> tuple[bytes, bytes, bytes]:
        if self.state is not MessageState.ENCRYPTED or self.their_fingerprint is None:
            raise LocalProtocolError("SMP needs an encrypted conversation")
        assert self.ssid is not None
        return self.private_key.public.fingerprint, self.their_fingerprint, self.ssid

    def smp_start(self, secret: bytes, question: str | None = None) -> None:
        """Start SMP with ``secret`` (and a question for the peer's user).

        With ``Policy.defer_smp`` the step is only queued: run it with
        ``smp_next``/``smp_finish`` (or ``smp_run``).

        Raises:
            LocalProtocolError: not ENCRYPTED; the question holds a NUL; an
                SMP step is still being computed (wait for its events, or
                ``smp_abort`` first).
        """
        ours, theirs, ssid = self._smp_fingerprints()
        check_question(question)
        self._smp_check_idle()
        x = smp_secret(ours, theirs, ssid, secret)
        self._smp_enqueue(SMPInput.START, (x, question))

    def smp_answer(self, secret: bytes) -> None:
        """Answer the peer's SMP (after :class:`~xfer.otr.events.SMPAsked`).

        Raises:
            LocalProtocolError: not ENCRYPTED; no question waits for an
                answer; an SMP step is still being computed.
        """
        ours, theirs, ssid = self._smp_fingerprints()
        self._smp_check_idle()
        if self.smp.state is not SMPState.AWAITING_SECRET:
            msg = f"no SMP secret is expected in state {self.smp.state.value}"
            raise LocalProtocolError(msg)
        x = smp_secret(theirs, ours, ssid, secret)
        self._smp_enqueue(SMPInput.SECRET, x)

    def smp_abort(self) -> list[ev.Event]:
        """Give up the exchange: tell the peer (TLV 6); drop any step queued
        or being computed (its result will be ignored)."""
        self._smp_drop_work()
        return self._smp_send(self.smp.handle(SMPInput.ABORT))

    @property
    def smp_busy(self) -> bool:
        """Whether an SMP step is being computed or waits to be."""
        return self._smp_in_flight is not None or bool(self._smp_queue)

    def smp_next(self) -> SMPJob | None:
        """Take the next SMP step to compute, or None (none waits, or one is
        already being computed: steps run one at a time, in order).

        The job holds a copy of the SMP machine; compute it with
        :func:`~xfer.otr.smp.run_smp_job` on any thread or process and give
        the result to :meth:`smp_finish`.
        """
        if self._smp_in_flight is not None or not self._smp_queue:
            return None
        kind, value = self._smp_queue.popleft()
        self._smp_tickets += 1
        self._smp_in_flight = self._smp_tickets
        return SMPJob(
            ticket=self._smp_tickets, machine=self.smp.copy(), kind=kind, value=value
        )

    def smp_finish(self, done: SMPDone) -> list[ev.Event]:
        """Apply a computed step: send its reply, return its SMP events (plus
        :class:`~xfer.otr.events.SMPPending` if another step waits).

        A result that is not for the step in flight (it was aborted, or the
        conversation ended or was re-keyed meanwhile) is ignored: ``[]``;
        except that if the peer ended the conversation (TLV 1) while the step
        was computed, its verdict (``SMPSucceeded``/``SMPFailed``, for the
        fingerprint of that conversation) is still returned, with no reply.
        """
        orphan = self._smp_verdict_only
        if orphan is not None and done.ticket == orphan[0]:
            self._smp_verdict_only = None
            if done.outcome.event == "succeeded":
                return [ev.SMPSucceeded(fingerprint=orphan[1])]
            if done.outcome.event in {"failed", "cheated"}:
                return [ev.SMPFailed(cheated=done.outcome.event == "cheated")]
            return []
        if self._smp_in_flight is None or done.ticket != self._smp_in_flight:
            return []
        self._smp_in_flight = None
        self.smp = done.machine
        events = self._smp_send(done.outcome)
        if self._smp_queue:
            events.append(ev.SMPPending())
        return events

    def smp_run(self) -> list[ev.Event]:
        """Compute every waiting SMP step here and now; return their events."""
        events: list[ev.Event] = []
        while (job := self.smp_next()) is not None:
            done = self.smp_finish(run_smp_job(job))
            events.extend(e for e in done if not isinstance(e, ev.SMPPending))
        return events

    def _smp_check_idle(self) -> None:
        if self.smp_busy:
            raise LocalProtocolError("an SMP step is still being computed")

    def _smp_enqueue(self, kind: SMPInput, value: object) -> list[ev.Event]:
        held = len(self._smp_queue) + (self._smp_in_flight is not None)
        if held >= SMP_QUEUE_LIMIT:
            # More steps than one exchange has room for: out of order.
            self._smp_drop_work()
            return self._smp_send(self.smp.handle(SMPInput.ABORT))
        self._smp_queue.append((kind, value))
        if not self.policy.defer_smp:
            return self.smp_run()
        return [ev.SMPPending()]

    def _smp_drop_work(self) -> bool:
        """Forget queued steps and the one in flight; whether there were any."""
        had = self.smp_busy
        self._smp_queue.clear()
        self._smp_in_flight = None
        return had

    def _smp_reset(self) -> None:
        self._smp_drop_work()
        self._smp_verdict_only = None
        self.smp = SMP(self._random)

    def _smp_send(self, outcome: SMPOutcome) -> list[ev.Event]:
        if outcome.tlvs and self.state is MessageState.ENCRYPTED:
            self._send_data(b"", list(outcome.tlvs), ignore_unreadable=True)
        if outcome.event == "asked":
            return [ev.SMPAsked(question=outcome.question)]
        if outcome.event == "succeeded":
            assert self.their_fingerprint is not None
            return [ev.SMPSucceeded(fingerprint=self.their_fingerprint)]
        if outcome.event in {"failed", "cheated"}:
            return [ev.SMPFailed(cheated=outcome.event == "cheated")]
        if outcome.event == "aborted":
            return [ev.SMPAborted()]
        return []

    # -- receiving -------------------------------------------------------------

    def receive(self, text: str) -> list[ev.Event]:
        """Take one message body from the peer; return what happened.

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
        return self._whole(text)

    def _fragment(self, text: str) -> str | None:
        frag = parse_fragment(text)
        if frag.receiver_tag not in (0, self.our_tag):
            return None  # for another instance of our account
        if self.their_tag and frag.sender_tag != self.their_tag:
            return None
        return self._reassembler.add(frag)

    def _whole(self, text: str) -> list[ev.Event]:
        message = parse_text(text)
        if isinstance(message, PlainText):
            return self._plaintext(message)
        if isinstance(message, QueryMessage):
            answered = 3 in message.versions and self.policy.answer_queries
            if answered:
                self.start_ake()
            return [ev.QueryReceived(versions=message.versions, answered=answered)]
        if isinstance(message, ErrorMessage):
            return [ev.OTRErrorReceived(text=message.text)]
        if message.receiver_tag not in (0, self.our_tag):
            return []  # addressed to another instance of our account
        if message.receiver_tag == 0 and not isinstance(message, DHCommit):
            raise RemoteProtocolError("only a D-H Commit may omit the receiver tag")
        if self.their_tag and message.sender_tag != self.their_tag:
            return []  # another instance of the peer; its own session handles it
        if isinstance(message, DataMessage):
            return self._data(message)
        return self._ake_message(message)

    def _plaintext(self, message: PlainText) -> list[ev.Event]:
        out: list[ev.Event] = []
        offered = 3 in message.tag_versions
        if (
            offered
            and self.policy.answer_queries
            and self.state is not MessageState.ENCRYPTED
        ):
            self.start_ake()
        if message.text or not offered:
            out.append(ev.PlaintextReceived(text=message.text, offered_otr=offered))
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
        self._keys = SessionKeys(result, self._random)
        self.state = MessageState.ENCRYPTED
        self._smp_reset()
        self.their_public_key = result.their_public_key
        self.their_fingerprint = result.their_public_key.fingerprint
        self.ssid = result.ssid
        return [
            ev.GoneSecure(
                fingerprint=self.their_fingerprint,
                ssid=result.ssid,
                their_tag=self.their_tag,
                refreshed=refreshed,
            )
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
            if kind in _SMP_INPUTS:
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
            held, fingerprint = self._smp_in_flight, self.their_fingerprint
            self._keys = None
            self.state = MessageState.FINISHED
            self._smp_reset()
            if held is not None and fingerprint is not None:
                # The peer may send its last SMP message and end at once: the
                # exchange is over, and its verdict is still ours to see.
                self._smp_verdict_only = (held, fingerprint)
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
        smp_input = _SMP_INPUTS.get(kind)
        if smp_input is None:
            return []  # padding and unknown TLVs are ignored, as the spec says
        if smp_input is SMPInput.RECV_ABORT:
            # Costs nothing, and supersedes whatever was queued or computed.
            dropped = self._smp_drop_work()
            events = self._smp_send(self.smp.handle(SMPInput.RECV_ABORT))
            return events or ([ev.SMPAborted()] if dropped else [])
        arg: object = (kind, value) if smp_input is SMPInput.RECV_1 else value
        return self._smp_enqueue(smp_input, arg)
