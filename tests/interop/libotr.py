"""A small ctypes harness around libotr 4.1 (Debian's libotr5): a real OTR peer.

Each :class:`LibOTRPeer` is one simulated user with its own ``OtrlUserState``,
a long-term key and instance tag that the test chooses (written to files in
libotr's own formats and read back by libotr), and an outbox filled by
libotr's ``inject_message`` callback. Events from libotr's callbacks are
recorded as tuples in :attr:`LibOTRPeer.events`.

Struct layouts follow the libotr 4.1.1 headers (``message.h``,
``context.h``, ``context_priv.h``, ``dh.h``, ``tlv.h``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_int,
    c_long,
    c_size_t,
    c_uint,
    c_ushort,
    c_void_p,
)
from pathlib import Path
from typing import Any

from xfer.otr.crypto import PrivateKey

POLICY_ALLOW_V1 = 0x01
POLICY_ALLOW_V2 = 0x02
POLICY_ALLOW_V3 = 0x04
POLICY_REQUIRE_ENCRYPTION = 0x08
POLICY_SEND_WHITESPACE_TAG = 0x10
POLICY_WHITESPACE_START_AKE = 0x20
POLICY_ERROR_START_AKE = 0x40
#: libotr's OTRL_POLICY_DEFAULT (opportunistic), what Pidgin, mcabber and the
#: other libotr clients start with: v2 and v3, whitespace tags sent and
#: answered, an OTR error starts an AKE.
POLICY_DEFAULT = (
    POLICY_ALLOW_V2
    | POLICY_ALLOW_V3
    | POLICY_SEND_WHITESPACE_TAG
    | POLICY_WHITESPACE_START_AKE
    | POLICY_ERROR_START_AKE
)
#: The default policy of a client that only speaks OTR v2 (libotr 3.x).
POLICY_V2_ONLY = POLICY_DEFAULT & ~POLICY_ALLOW_V3
FRAGMENT_SEND_ALL_BUT_LAST = 3
INSTAG_MASTER = 0
INSTAG_BEST = 1
INSTAG_RECENT_RECEIVED = 3
MSGSTATE = {0: "plaintext", 1: "encrypted", 2: "finished"}
SMP_EVENTS = [
    "none",
    "error",
    "abort",
    "cheated",
    "ask_for_answer",
    "ask_for_secret",
    "in_progress",
    "success",
    "failure",
]
MSG_EVENTS = [
    "none",
    "encryption_required",
    "encryption_error",
    "connection_ended",
    "setup_error",
    "msg_reflected",
    "msg_resent",
    "rcvdmsg_not_in_private",
    "rcvdmsg_unreadable",
    "rcvdmsg_malformed",
    "log_heartbeat_rcvd",
    "log_heartbeat_sent",
    "rcvdmsg_general_err",
    "rcvdmsg_unencrypted",
    "rcvdmsg_unrecognized",
    "rcvdmsg_for_other_instance",
]


class DHKeypair(Structure):
    _fields_ = [("groupid", c_uint), ("priv", c_void_p), ("pub", c_void_p)]


class DHSesskeys(Structure):
    _fields_ = [
        ("sendctr", c_char * 16),
        ("rcvctr", c_char * 16),
        ("sendenc", c_void_p),
        ("rcvenc", c_void_p),
        ("sendmac", c_void_p),
        ("sendmackey", c_char * 20),
        ("sendmacused", c_int),
        ("rcvmac", c_void_p),
        ("rcvmackey", c_char * 20),
        ("rcvmacused", c_int),
        ("extrakey", c_char * 32),
    ]


class ContextPriv(Structure):
    _fields_ = [
        ("fragment", c_char_p),
        ("fragment_len", c_size_t),
        ("fragment_n", c_ushort),
        ("fragment_k", c_ushort),
        ("their_keyid", c_uint),
        ("their_y", c_void_p),
        ("their_old_y", c_void_p),
        ("our_keyid", c_uint),
        ("our_dh_key", DHKeypair),
        ("our_old_dh_key", DHKeypair),
        ("sesskeys", (DHSesskeys * 2) * 2),
        ("numsavedkeys", c_uint),
        ("saved_mac_keys", c_void_p),
        ("generation", c_uint),
        ("lastsent", c_long),
        ("lastrecv", c_long),
    ]


class ConnContext(Structure):
    """The leading, public fields of libotr's ``struct context``."""

    _fields_ = [
        ("next", c_void_p),
        ("tous", c_void_p),
        ("context_priv", POINTER(ContextPriv)),
        ("username", c_char_p),
        ("accountname", c_char_p),
        ("protocol", c_char_p),
        ("m_context", c_void_p),
        ("recent_rcvd_child", c_void_p),
        ("recent_sent_child", c_void_p),
        ("recent_child", c_void_p),
        ("our_instance", c_uint),
        ("their_instance", c_uint),
        ("msgstate", c_int),
    ]


class OtrlTLV(Structure):
    pass


OtrlTLV._fields_ = [
    ("type", c_ushort),
    ("len", c_ushort),
    ("data", POINTER(c_char)),
    ("next", POINTER(OtrlTLV)),
]

CTX = POINTER(ConnContext)
_policy_t = CFUNCTYPE(c_uint, c_void_p, CTX)
_is_logged_in_t = CFUNCTYPE(c_int, c_void_p, c_char_p, c_char_p, c_char_p)
_inject_t = CFUNCTYPE(None, c_void_p, c_char_p, c_char_p, c_char_p, c_char_p)
_void_opdata_t = CFUNCTYPE(None, c_void_p)
_new_fp_t = CFUNCTYPE(None, c_void_p, c_void_p, c_char_p, c_char_p, c_char_p, c_void_p)
_ctx_t = CFUNCTYPE(None, c_void_p, CTX)
_still_secure_t = CFUNCTYPE(None, c_void_p, CTX, c_int)
_max_size_t = CFUNCTYPE(c_int, c_void_p, CTX)
_symkey_t = CFUNCTYPE(
    None, c_void_p, CTX, c_uint, POINTER(c_char), c_size_t, POINTER(c_char)
)
_smp_event_t = CFUNCTYPE(None, c_void_p, c_int, CTX, c_ushort, c_char_p)
_msg_event_t = CFUNCTYPE(None, c_void_p, c_int, CTX, c_char_p, c_uint)
_create_instag_t = CFUNCTYPE(None, c_void_p, c_char_p, c_char_p)


class AppOps(Structure):
    _fields_ = [
        ("policy", _policy_t),
        ("create_privkey", c_void_p),
        ("is_logged_in", _is_logged_in_t),
        ("inject_message", _inject_t),
        ("update_context_list", _void_opdata_t),
        ("new_fingerprint", _new_fp_t),
        ("write_fingerprints", _void_opdata_t),
        ("gone_secure", _ctx_t),
        ("gone_insecure", _ctx_t),
        ("still_secure", _still_secure_t),
        ("max_message_size", _max_size_t),
        ("account_name", c_void_p),
        ("account_name_free", c_void_p),
        ("received_symkey", _symkey_t),
        ("otr_error_message", c_void_p),
        ("otr_error_message_free", c_void_p),
        ("resent_msg_prefix", c_void_p),
        ("resent_msg_prefix_free", c_void_p),
        ("handle_smp_event", _smp_event_t),
        ("handle_msg_event", _msg_event_t),
        ("create_instag", _create_instag_t),
        ("convert_msg", c_void_p),
        ("convert_free", c_void_p),
        ("timer_control", c_void_p),
    ]


def find_libotr() -> str | None:
    return ctypes.util.find_library("otr")


_LIB: Any = None


def load() -> Any:
    """Load libotr once and initialise it for API 4.1.1."""
    global _LIB  # noqa: PLW0603 - one library per process
    if _LIB is not None:
        return _LIB
    path = find_libotr()
    if path is None:
        raise OSError("libotr is not installed (apt-get install libotr5)")
    lib = ctypes.CDLL(path)
    lib.otrl_init.argtypes = [c_uint, c_uint, c_uint]
    lib.otrl_init.restype = c_uint
    if lib.otrl_init(4, 1, 1) != 0:
        raise OSError("otrl_init failed")
    lib.otrl_userstate_create.restype = c_void_p
    lib.otrl_privkey_read.argtypes = [c_void_p, c_char_p]
    lib.otrl_privkey_read.restype = c_uint
    lib.otrl_instag_read.argtypes = [c_void_p, c_char_p]
    lib.otrl_instag_read.restype = c_uint
    lib.otrl_privkey_fingerprint.argtypes = [c_void_p, c_char_p, c_char_p, c_char_p]
    lib.otrl_privkey_fingerprint.restype = c_char_p
    lib.otrl_message_sending.argtypes = [
        c_void_p,
        POINTER(AppOps),
        c_void_p,
        c_char_p,
        c_char_p,
        c_char_p,
        c_uint,
        c_char_p,
        c_void_p,
        POINTER(c_void_p),
        c_int,
        POINTER(CTX),
        c_void_p,
        c_void_p,
    ]
    lib.otrl_message_sending.restype = c_uint
    lib.otrl_message_receiving.argtypes = [
        c_void_p,
        POINTER(AppOps),
        c_void_p,
        c_char_p,
        c_char_p,
        c_char_p,
        c_char_p,
        POINTER(c_void_p),
        POINTER(POINTER(OtrlTLV)),
        POINTER(CTX),
        c_void_p,
        c_void_p,
    ]
    lib.otrl_message_receiving.restype = c_int
    lib.otrl_message_free.argtypes = [c_void_p]
    lib.otrl_tlv_free.argtypes = [POINTER(OtrlTLV)]
    lib.otrl_message_symkey.argtypes = [
        c_void_p,
        POINTER(AppOps),
        c_void_p,
        CTX,
        c_uint,
        c_char_p,
        c_size_t,
        c_char_p,
    ]
    lib.otrl_message_symkey.restype = c_uint
    lib.otrl_message_initiate_smp.argtypes = [
        c_void_p,
        POINTER(AppOps),
        c_void_p,
        CTX,
        c_char_p,
        c_size_t,
    ]
    lib.otrl_message_initiate_smp_q.argtypes = [
        c_void_p,
        POINTER(AppOps),
        c_void_p,
        CTX,
        c_char_p,
        c_char_p,
        c_size_t,
    ]
    lib.otrl_message_respond_smp.argtypes = [
        c_void_p,
        POINTER(AppOps),
        c_void_p,
        CTX,
        c_char_p,
        c_size_t,
    ]
    lib.otrl_message_disconnect.argtypes = [
        c_void_p,
        POINTER(AppOps),
        c_void_p,
        c_char_p,
        c_char_p,
        c_char_p,
        c_uint,
    ]
    lib.otrl_message_abort_smp.argtypes = [c_void_p, POINTER(AppOps), c_void_p, CTX]
    lib.otrl_context_find.argtypes = [
        c_void_p,
        c_char_p,
        c_char_p,
        c_char_p,
        c_uint,
        c_int,
        c_void_p,
        c_void_p,
        c_void_p,
    ]
    lib.otrl_context_find.restype = CTX
    lib.otrl_proto_default_query_msg.argtypes = [c_char_p, c_uint]
    lib.otrl_proto_default_query_msg.restype = c_void_p
    _LIB = lib
    return lib


def _sexp_hex(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    if raw and raw[0] & 0x80:
        raw = b"\x00" + raw  # gcrypt would read a set top bit as negative
    return raw.hex().upper()


def key_file_text(account: str, protocol: str, key: PrivateKey) -> str:
    """libotr's private key file (an S-expression) for one of our keys."""
    pub = key.public
    parts = [("p", pub.p), ("q", pub.q), ("g", pub.g), ("y", pub.y), ("x", key.x)]
    body = "".join(f"    ({n} #{_sexp_hex(v)}#)\n" for n, v in parts)
    return (
        f'(privkeys\n (account\n  (name "{account}")\n  (protocol {protocol})\n'
        f"  (private-key\n   (dsa\n{body}   )\n  )\n )\n)\n"
    )


class LibOTRPeer:
    """One libotr user talking to peers by name."""

    def __init__(
        self,
        folder: Path,
        *,
        account: str,
        key: PrivateKey,
        instag: int,
        policy: int = POLICY_ALLOW_V3,
        max_message_size: int = 0,
        protocol: str = "xmpp",
    ) -> None:
        self.lib = load()
        self.account = account.encode()
        self.protocol = protocol.encode()
        self.us = self.lib.otrl_userstate_create()
        keyfile = folder / f"{account}.key"
        keyfile.write_text(key_file_text(account, protocol, key))
        if self.lib.otrl_privkey_read(self.us, str(keyfile).encode()) != 0:
            raise OSError("otrl_privkey_read failed")
        tagfile = folder / f"{account}.instag"
        tagfile.write_text(f"{account}\t{protocol}\t{instag:08x}\n")
        if self.lib.otrl_instag_read(self.us, str(tagfile).encode()) != 0:
            raise OSError("otrl_instag_read failed")
        self.policy = policy
        self.max_message_size = max_message_size
        self.outbox: list[tuple[str, str]] = []
        self.events: list[tuple[Any, ...]] = []
        self.secure_context: Any = None
        #: Fingerprints libotr saw for the first time, per peer (username).
        self.new_fingerprints: list[tuple[str, bytes]] = []
        self._ops = AppOps()
        self._callbacks = [
            ("policy", _policy_t(lambda _o, _c: self.policy)),
            ("is_logged_in", _is_logged_in_t(lambda *_: 1)),
            ("inject_message", _inject_t(self._inject)),
            ("update_context_list", _void_opdata_t(lambda _o: None)),
            ("new_fingerprint", _new_fp_t(self._new_fingerprint)),
            ("write_fingerprints", _void_opdata_t(lambda _o: None)),
            ("gone_secure", _ctx_t(self._gone_secure)),
            (
                "gone_insecure",
                _ctx_t(lambda _o, _c: self.events.append(("gone_insecure",))),
            ),
            (
                "still_secure",
                _still_secure_t(lambda _o, c, _r: self._gone_secure(_o, c)),
            ),
            ("max_message_size", _max_size_t(lambda _o, _c: self.max_message_size)),
            ("received_symkey", _symkey_t(self._symkey)),
            ("handle_smp_event", _smp_event_t(self._smp_event)),
            ("handle_msg_event", _msg_event_t(self._msg_event)),
            ("create_instag", _create_instag_t(lambda *_: None)),
        ]
        for name, fn in self._callbacks:
            setattr(self._ops, name, fn)

    # -- callbacks -------------------------------------------------------------

    def _inject(
        self, _o: Any, _acct: bytes, _proto: bytes, to: bytes, msg: bytes
    ) -> None:
        self.outbox.append((to.decode(), msg.decode()))

    def _new_fingerprint(
        self, _o: Any, _us: Any, _acct: bytes, _proto: bytes, user: bytes, fp: int
    ) -> None:
        self.new_fingerprints.append((user.decode(), ctypes.string_at(fp, 20)))

    def _gone_secure(self, _o: Any, ctx: Any) -> None:
        self.secure_context = ctx
        self.events.append(("gone_secure", ctx.contents.their_instance))

    def _symkey(self, _o: Any, _c: Any, use: int, data: Any, n: int, key: Any) -> None:
        self.events.append(
            ("symkey", use, ctypes.string_at(data, n), ctypes.string_at(key, 32))
        )

    def _smp_event(
        self, _o: Any, kind: int, ctx: Any, _p: int, question: bytes | None
    ) -> None:
        self.secure_context = ctx
        self.events.append(
            ("smp", SMP_EVENTS[kind], question.decode() if question else None)
        )

    def _msg_event(
        self, _o: Any, kind: int, _c: Any, msg: bytes | None, _e: int
    ) -> None:
        self.events.append(
            ("msg_event", MSG_EVENTS[kind], msg.decode() if msg else None)
        )

    # -- API ---------------------------------------------------------------------

    def fingerprint(self) -> str:
        buf = ctypes.create_string_buffer(45)
        self.lib.otrl_privkey_fingerprint(self.us, buf, self.account, self.protocol)
        return buf.value.decode()

    def query(self, to: str) -> None:
        ptr = self.lib.otrl_proto_default_query_msg(self.account, self.policy)
        self.outbox.append((to, ctypes.string_at(ptr).decode()))
        self.lib.otrl_message_free(ptr)

    def send(self, to: str, text: str, instag: int = INSTAG_BEST) -> None:
        """What the user types: encrypted in a private conversation, else
        plain (with the whitespace tag, if the policy sends it and the peer
        has not answered plain text yet)."""
        out = c_void_p()
        ctx = CTX()
        err = self.lib.otrl_message_sending(
            self.us,
            ctypes.byref(self._ops),
            None,
            self.account,
            self.protocol,
            to.encode(),
            instag,
            text.encode(),
            None,
            ctypes.byref(out),
            FRAGMENT_SEND_ALL_BUT_LAST,
            ctypes.byref(ctx),
            None,
            None,
        )
        if err:
            raise OSError(f"otrl_message_sending failed: {err}")
        if out.value:
            self.outbox.append((to, ctypes.string_at(out.value).decode()))
            self.lib.otrl_message_free(out.value)
        else:
            self.outbox.append((to, text))

    def receive(
        self, frm: str, text: str
    ) -> tuple[bool, str | None, list[tuple[int, bytes]]]:
        """Returns (ignore, new message text or None, TLVs)."""
        new = c_void_p()
        tlvs = POINTER(OtrlTLV)()
        ctx = CTX()
        ignore = self.lib.otrl_message_receiving(
            self.us,
            ctypes.byref(self._ops),
            None,
            self.account,
            self.protocol,
            frm.encode(),
            text.encode(),
            ctypes.byref(new),
            ctypes.byref(tlvs),
            ctypes.byref(ctx),
            None,
            None,
        )
        message = None
        if new.value:
            message = ctypes.string_at(new.value).decode("utf-8", errors="replace")
            self.lib.otrl_message_free(new.value)
        found = []
        node = tlvs
        while node:
            found.append(
                (
                    node.contents.type,
                    ctypes.string_at(node.contents.data, node.contents.len),
                )
            )
            node = node.contents.next
        if tlvs:
            self.lib.otrl_tlv_free(tlvs)
        return bool(ignore), message, found

    def take(self) -> list[str]:
        out = [m for _, m in self.outbox]
        self.outbox.clear()
        return out

    def context(self, peer: str, instance: int = INSTAG_BEST) -> Any:
        """libotr's context with ``peer`` (its username) and ``instance``
        (a tag, or INSTAG_MASTER/BEST/RECENT_RECEIVED); None if it has none."""
        ctx = self.lib.otrl_context_find(
            self.us,
            peer.encode(),
            self.account,
            self.protocol,
            instance,
            0,
            None,
            None,
            None,
        )
        return ctx if ctx else None

    def _ctx(self, context: Any) -> Any:
        return self.secure_context if context is None else context

    def symkey(self, use: int, data: bytes, context: Any = None) -> bytes:
        """Send TLV 8 over ``context`` (default: the one that went secure last)."""
        key = ctypes.create_string_buffer(32)
        err = self.lib.otrl_message_symkey(
            self.us,
            ctypes.byref(self._ops),
            None,
            self._ctx(context),
            use,
            data,
            len(data),
            key,
        )
        if err:
            raise OSError(f"otrl_message_symkey failed: {err}")
        return key.raw

    def smp_start(
        self, secret: bytes, question: str | None = None, context: Any = None
    ) -> None:
        if question is None:
            self.lib.otrl_message_initiate_smp(
                self.us,
                ctypes.byref(self._ops),
                None,
                self._ctx(context),
                secret,
                len(secret),
            )
        else:
            self.lib.otrl_message_initiate_smp_q(
                self.us,
                ctypes.byref(self._ops),
                None,
                self._ctx(context),
                question.encode(),
                secret,
                len(secret),
            )

    def smp_respond(self, secret: bytes, context: Any = None) -> None:
        self.lib.otrl_message_respond_smp(
            self.us,
            ctypes.byref(self._ops),
            None,
            self._ctx(context),
            secret,
            len(secret),
        )

    def smp_abort(self, context: Any = None) -> None:
        """Abandon the SMP under way (TLV 6 to the peer)."""
        self.lib.otrl_message_abort_smp(
            self.us, ctypes.byref(self._ops), None, self._ctx(context)
        )

    def disconnect(self, peer: str, instag: int) -> None:
        self.lib.otrl_message_disconnect(
            self.us,
            ctypes.byref(self._ops),
            None,
            self.account,
            self.protocol,
            peer.encode(),
            instag,
        )

    @property
    def msgstate(self) -> str:
        if not self.secure_context:
            return "plaintext"
        return MSGSTATE[self.secure_context.contents.msgstate]

    def make_heartbeat_due(self) -> None:
        """Pretend libotr last sent long ago, so its next receive sends a heartbeat."""
        priv = self.secure_context.contents.context_priv.contents
        priv.lastsent = int(time.time()) - 3600
