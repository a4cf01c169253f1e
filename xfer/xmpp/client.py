"""An XMPP client connection on slixmpp, with typed errors and a clean start.

slixmpp reports failures as events; :func:`connect` turns them into
exceptions: a wrong password is :class:`AuthenticationFailed`, an
unreachable server (or one that does not answer in time)
:class:`~xfer.errors.ServerUnreachable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

import slixmpp

from xfer.errors import AuthenticationFailed, ConnectionFailed, ServerUnreachable
from xfer.xmpp._slixmpp import server_ended_stream

__all__ = ["AuthenticationFailed", "XferClient", "connect"]


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
        self._address: tuple[str | None, int] = (None, 5222)
        self.enable_direct_tls = tls == "direct"
        self.enable_starttls = tls == "starttls"
        self.enable_plaintext = tls == "none"
        if not verify_tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            self.ssl_context = context
        self._ready: asyncio.Future[None] | None = None
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_all_auth", self._on_auth_failed)
        self.add_event_handler("connection_failed", self._on_connection_failed)
        self.add_event_handler("disconnected", self._on_disconnected)

    def _settle(self, exc: BaseException | None) -> None:
        if self._ready is not None and not self._ready.done():
            if exc is None:
                self._ready.set_result(None)
            else:
                self._ready.set_exception(exc)

    async def _on_start(self, _event: object) -> None:
        self.send_presence()
        self._settle(None)

    def _on_auth_failed(self, _event: object) -> None:
        self._settle(
            AuthenticationFailed(
                f"the server refused the password for {self.boundjid.bare}"
            )
        )

    def _on_disconnected(self, _event: object) -> None:
        ready = self._ready
        was_up = ready is not None and ready.done() and ready.exception() is None
        if self._reconnect and was_up and not self._stopping:
            host, port = self._address
            self.connect(host=host, port=port)

    def _on_connection_failed(self, event: object) -> None:
        self._settle(ServerUnreachable(f"cannot connect to the XMPP server: {event}"))

    async def start(
        self, host: str | None = None, port: int = 5222, *, timeout: float = 30
    ) -> None:
        """Connect, authenticate, bind, send presence.

        Raises:
            AuthenticationFailed, ServerUnreachable.
        """
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
    port: int,
    *,
    tls: str = "starttls",
    verify_tls: bool = True,
    plugin_config: dict[str, Any] | None = None,
) -> XferClient:
    """Create, start and return a client (see :class:`XferClient`)."""
    client = XferClient(
        jid, password, tls=tls, verify_tls=verify_tls, plugin_config=plugin_config
    )
    await client.start(host, port)
    return client
