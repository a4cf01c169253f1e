"""An XMPP client connection on slixmpp, with typed errors and a clean start.

slixmpp reports failures as events; :func:`connect` turns them into
exceptions, each as soon as it is known (never the start's timeout): a wrong
password is :class:`AuthenticationFailed`; a server certificate that fails
verification :class:`~xfer.errors.CertificateUntrusted`; a server that offers
no TLS when TLS was asked :class:`~xfer.errors.TLSNotOffered` (no password is
sent then); one that requires TLS when ``tls="none"`` was asked
:class:`~xfer.errors.TLSRequired`; an unreachable server (or one that does not
answer in time) :class:`~xfer.errors.ServerUnreachable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING, Any

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from xfer.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    ServerUnreachable,
    TLSNotOffered,
    TLSRequired,
)
from xfer.xmpp._slixmpp import server_ended_stream
from xfer.xmpp.tls import tls_context, untrusted

if TYPE_CHECKING:
    import os

    from slixmpp.xmlstream import StanzaBase

__all__ = [
    "DIRECT_TLS_PORT",
    "STARTTLS_PORT",
    "AuthenticationFailed",
    "XferClient",
    "connect",
]

#: The default c2s ports: STARTTLS (and plain), and direct TLS (XEP-0368).
STARTTLS_PORT = 5222
DIRECT_TLS_PORT = 5223


class _Reported(logging.Filter):
    """Drops slixmpp's log errors for the failures :class:`XferClient`
    raises as typed errors (else, with no logging set up, Python's last-resort
    handler prints them on stderr beside the error's one line)."""

    MESSAGES = frozenset(
        {"CERT: Invalid certificate trust chain.", "No appropriate login method."}
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.MESSAGES


for _name in (
    "slixmpp.xmlstream.xmlstream",
    "slixmpp.features.feature_mechanisms.mechanisms",
):
    logging.getLogger(_name).addFilter(_Reported())

_STREAM_NS = "http://etherx.jabber.org/streams"
_TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
_SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"


class XferClient(slixmpp.ClientXMPP):
    """A slixmpp client with xfer's settings.

    Args:
        jid: the account's full or bare JID.
        password: its password.
        tls: "direct" (TLS from the start), "starttls", or "none" (plain, only
            for a local test server; the password then crosses loopback in
            the clear).
        verify_tls: check the server's certificate (turn off only for a test
            server with a self-signed certificate).
        ca_file: a PEM file of the CAs to trust for the server's
            certificate, instead of the system's (a private CA).
        reconnect: when the connection drops (not by :meth:`stop`), connect
            again (slixmpp backs off 1, 3, 7... s). With stream management
            (XEP-0198, on by default), the server session is resumed: the
            full JID, presence and OTR sessions survive the gap, and
            stanzas the server had not acknowledged are sent again.
    """

    def __init__(
        self,
        jid: str,
        password: str,
        *,
        tls: str = "starttls",
        verify_tls: bool = True,
        ca_file: str | os.PathLike[str] | None = None,
        plugin_config: dict[str, Any] | None = None,
        reconnect: bool = True,
    ) -> None:
        config: dict[str, Any] = {
            "feature_mechanisms": {"unencrypted_scram": tls == "none"},
            "xep_0198": {"allow_resume": True},
        }
        config.update(plugin_config or {})
        super().__init__(jid, password, plugin_config=config)
        self.register_plugin("xep_0198")
        # The roster and presence subscriptions are the user's, decided in
        # their own client: slixmpp would authorize every request and ask
        # back, telling any JID when the user is online. None leaves a
        # request pending at the server.
        self.auto_authorize = None
        self.auto_subscribe = False
        self._reconnect = reconnect
        self._stopping = False
        self._tls = tls
        self.default_port = DIRECT_TLS_PORT if tls == "direct" else STARTTLS_PORT
        self._address: tuple[str | None, int] = (None, self.default_port)
        #: Where the stream went (an SRV target, say), for the probe that
        #: reads an untrusted certificate.
        self._peer: tuple[str, int] | None = None
        self.enable_direct_tls = tls == "direct"
        self.enable_starttls = tls == "starttls"
        self.enable_plaintext = tls == "none"
        self.ssl_context = tls_context(ca_file, verify=verify_tls)
        self._ready: asyncio.Future[None] | None = None
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_all_auth", self._on_auth_failed)
        self.add_event_handler("connection_failed", self._on_connection_failed)
        self.add_event_handler("ssl_invalid_chain", self._on_invalid_chain)
        self.add_event_handler("disconnected", self._on_disconnected)
        self.register_handler(
            Callback(
                "xfer: TLS in the stream features",
                MatchXPath(f"{{{_STREAM_NS}}}features"),
                self._on_features,
                instream=True,
            )
        )

    def _settle(self, exc: BaseException | None) -> None:
        if self._ready is not None and not self._ready.done():
            if exc is None:
                self._ready.set_result(None)
            else:
                self._ready.set_exception(exc)

    async def _on_start(self, _event: object) -> None:
        self.send_presence()
        self._settle(None)

    def _secure(self) -> bool:
        transport = self.transport
        return (
            transport is not None and transport.get_extra_info("ssl_object") is not None
        )

    def _where(self) -> str:
        host, port = self._address
        return (
            f"{self.boundjid.domain} ({host}:{port})"
            if host
            else (self.boundjid.domain)
        )

    def _no_tls(self) -> TLSNotOffered:
        return TLSNotOffered(
            f"the server {self._where()} offers no TLS (STARTTLS); "
            "xfer did not send the password"
        )

    def _on_features(self, features: StanzaBase) -> None:
        """Tell at once what slixmpp would leave to the timeout (or to a
        misleading "refused the password"): TLS missing, or required."""
        peer = self.transport.get_extra_info("peername") if self.transport else None
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._peer = (str(peer[0]), int(peer[1]))
        if self._secure() or self.authenticated:
            # Once logged in (plain, as asked), a server may offer STARTTLS
            # again on the restarted stream: that is no refusal.
            return
        offer = features.xml.find(f"{{{_TLS_NS}}}starttls")
        if self._tls == "starttls" and offer is None:
            self._settle(self._no_tls())
        elif self._tls == "none" and offer is not None:
            required = offer.find(f"{{{_TLS_NS}}}required") is not None
            no_login = features.xml.find(f"{{{_SASL_NS}}}mechanisms") is None
            if required or no_login:
                self._settle(TLSRequired(f"the server {self._where()} requires TLS"))

    def _on_auth_failed(self, _event: object) -> None:
        if self._tls == "starttls" and not self._secure():
            self._settle(self._no_tls())
            return
        self._settle(
            AuthenticationFailed(
                f"the server refused the password for {self.boundjid.bare}"
            )
        )

    async def _on_invalid_chain(self, exc: BaseException) -> None:
        # STARTTLS: the handshake failed verification. slixmpp leaves the
        # connection to us once this event is handled; start() aborts it.
        self._settle(
            await untrusted(
                exc, server=self.boundjid.domain, address=self._peer, starttls=True
            )
        )

    def _on_disconnected(self, _event: object) -> None:
        ready = self._ready
        was_up = ready is not None and ready.done() and ready.exception() is None
        if self._reconnect and was_up and not self._stopping:
            host, port = self._address
            self.connect(host=host, port=port)

    async def _on_connection_failed(self, event: object) -> None:
        if self._ready is None or self._ready.done():
            return
        if isinstance(event, ssl.SSLCertVerificationError):
            host, port = self._address
            self._settle(
                await untrusted(
                    event,
                    server=self.boundjid.domain,
                    address=(host or self.boundjid.domain, port),
                    starttls=False,
                )
            )
        elif isinstance(event, ssl.SSLError) or (
            self._tls == "direct" and isinstance(event, ConnectionResetError)
        ):
            # Connected, then no TLS: a plain XMPP port answers a ClientHello
            # with XML (OpenSSL: wrong version number), or resets the
            # connection when it closed on unread bytes.
            reason = getattr(event, "reason", None) or event.strerror or event
            self._settle(
                TLSNotOffered(
                    f"the server {self._where()} does not speak direct TLS ({reason})"
                )
            )
        else:
            self._settle(
                ServerUnreachable(f"cannot connect to the XMPP server: {event}")
            )

    async def start(
        self, host: str | None = None, port: int | None = None, *, timeout: float = 30
    ) -> None:
        """Connect, authenticate, bind, send presence. ``port`` defaults to
        5223 for direct TLS, else 5222.

        Raises:
            AuthenticationFailed, ServerUnreachable, and the TLSFailed kinds:
            CertificateUntrusted, TLSNotOffered, TLSRequired.
        """
        port = port or self.default_port
        self._ready = asyncio.get_running_loop().create_future()
        self._address = (host, port)
        self._stopping = False
        self.connect(host=host, port=port)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            self.abort()
            raise ServerUnreachable(
                f"the XMPP server did not answer within {timeout:g} s"
            ) from None
        except ConnectionFailed:
            self.abort()
            raise

    def disconnect(
        self,
        wait: float = 2.0,
        reason: str | None = None,
        ignore_send_queue: bool = False,
    ) -> asyncio.Future[None]:
        """slixmpp's disconnect; a client that was told to go stays gone."""
        self._stopping = True
        return super().disconnect(wait, reason, ignore_send_queue)

    def abort(self) -> None:
        """slixmpp's abort; a client that was told to go stays gone. slixmpp
        aborts by itself when the server ends the stream (a stream error,
        say): that is no reason to stay away, and it reconnects."""
        if not server_ended_stream(self):
            self._stopping = True
        super().abort()

    async def stop(self) -> None:
        """Disconnect and wait for the stream to close."""
        self._stopping = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.disconnect(), 5)


async def connect(
    jid: str,
    password: str,
    host: str,
    port: int | None,
    *,
    tls: str = "starttls",
    verify_tls: bool = True,
    ca_file: str | os.PathLike[str] | None = None,
    plugin_config: dict[str, Any] | None = None,
) -> XferClient:
    """Create, start and return a client (see :class:`XferClient`)."""
    client = XferClient(
        jid,
        password,
        tls=tls,
        verify_tls=verify_tls,
        ca_file=ca_file,
        plugin_config=plugin_config,
    )
    await client.start(host, port)
    return client
