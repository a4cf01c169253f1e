"""XEP-0065 SOCKS5 Bytestreams on slixmpp: direct and through the server's proxy.

The plugin ``xfer_socks5`` (slixmpp's own ``xep_0065`` only uses proxies,
cannot tell concurrent streams apart and crashes on close; see
``shared/research/slixmpp-audit.md``) offers both kinds of streamhost:

* **direct**: the requester listens on a local TCP port and offers it; the
  target connects straight to it;
* **proxied**: a SOCKS5 proxy found on the server (disco: identity
  proxy/bytestreams, then its ``<streamhost/>``); both sides connect to it and
  the requester activates the relay.

The target tries the streamhosts in the offered order (direct first) and
answers with the one that worked. This module holds the XEP's IQs and the
proxy discovery; the SOCKS5 connections themselves (our streamhost, the
client handshake, :class:`Socks5Stream`) are :mod:`xfer.aio.socks5`'s, where
each connection is matched to its stream by its SOCKS5 address.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import weakref
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, ClassVar, Literal

from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.plugins.base import BasePlugin
from slixmpp.stanza import Iq
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from xfer.aio.socks5 import (
    Socks5Listener,
    Socks5Stream,
    abandon,
    connect_streamhost,
    parse_port,
)
from xfer.errors import (
    ConnectionFailed,
    NoUsableTransport,
    RemoteProtocolError,
    TransferTimeout,
    TransportError,
)
from xfer.framing.socks5 import dst_addr
from xfer.xmpp._slixmpp import ack, error_reply, send_iq

if TYPE_CHECKING:
    from collections.abc import Callable

    from slixmpp.xmlstream.stanzabase import StanzaBase

    from xfer.aio.tcp import TcpConnection

__all__ = ["Socks5Stream", "Streamhost", "XferSocks5"]

NS = "http://jabber.org/protocol/bytestreams"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"

Streamhost = tuple[str, str, int]  # (jid, host, port)
#: How long a failed proxy discovery is remembered (seconds).
FAILED_FOR = 300.0


def _query_element(**attributes: str) -> ET.Element:
    """A bytestreams ``<query/>``; attribute values are escaped by ElementTree."""
    return ET.Element(f"{{{NS}}}query", attributes)


class XferSocks5(BasePlugin):
    """xfer's XEP-0065 plugin: ``client.register_plugin("xfer_socks5", module=...)``.

    Config: ``authorize(peer, sid) -> bool`` for incoming streams (default:
    refuse), ``listen_host`` (the address our streamhost listens on; default
    ``""``, every address of this host, IPv4 and IPv6 on one port),
    ``connect_timeout`` per streamhost, ``discovery_timeout`` for each IQ of
    the proxy discovery.
    """

    name = "xfer_socks5"
    description = "XEP-0065: SOCKS5 Bytestreams (xfer: direct and proxied)"
    dependencies: ClassVar[set[str]] = set()
    default_config: ClassVar[dict[str, object]] = {
        "authorize": None,
        "listen_host": "",
        "connect_timeout": 10.0,
        "discovery_timeout": 10.0,
        "idle_timeout": 120.0,
    }

    def plugin_init(self) -> None:
        self._listener = Socks5Listener(
            handshake_timeout=lambda: self.config["connect_timeout"]
        )
        self._incoming: asyncio.Queue[Socks5Stream] = asyncio.Queue()
        self._proxies: dict[str, asyncio.Future[list[Streamhost]]] = {}
        self._live: weakref.WeakSet[Socks5Stream] = weakref.WeakSet()
        self._tasks: set[asyncio.Future[None]] = set()
        self.xmpp.add_event_handler("disconnected", self._on_disconnected)
        self.xmpp.register_handler(
            Callback(
                "xfer_socks5 request",
                MatchXPath(f"{{jabber:client}}iq/{{{NS}}}query"),
                self._on_iq,
            )
        )

    def plugin_end(self) -> None:
        self.xmpp.remove_handler("xfer_socks5 request")
        self._on_disconnected(None)

    def _on_disconnected(self, _event: object) -> None:
        """Offline, our streamhost is useless: stop listening."""
        self._listener.close(ConnectionFailed("the XMPP connection closed"))
        for stream in list(self._live):
            stream.abort("the XMPP connection closed")

    # -- requester ------------------------------------------------------------------

    async def _listen(self) -> tuple[str, int]:
        host, port = await self._listener.listen(self.config["listen_host"])
        if host in ("::", "0.0.0.0"):  # noqa: S104 - every address: loopback too
            host = "127.0.0.1"
        return host, port

    async def discover_proxies(self, domain: str | None = None) -> list[Streamhost]:
        """The SOCKS5 proxies of ``domain`` (default: our server's): its disco
        items whose identity is proxy/bytestreams, and the streamhost each
        gives us (a proxy that refuses us, as Prosody's does for users of
        other servers unless told otherwise, is left out).

        The answer is kept per domain; concurrent callers share one
        discovery, which goes on (and is kept) even if a caller stops
        waiting. A failed discovery is remembered for ``FAILED_FOR``
        seconds (the error is raised again meanwhile, at once), then tried
        again: a server that never answers costs one wait, not one per offer.

        Raises:
            IqError, IqTimeout: the domain did not list its items.
        """
        domain = domain or self.xmpp.boundjid.domain
        found = self._proxies.get(domain)
        if found is None:
            found = self._proxies[domain] = asyncio.ensure_future(
                self._discover(domain)
            )

            def forget(done: asyncio.Future[list[Streamhost]]) -> None:
                if done.cancelled() or done.exception() is not None:
                    loop = asyncio.get_running_loop()
                    loop.call_later(FAILED_FOR, self._forget, domain, done)

            found.add_done_callback(forget)
        return await asyncio.shield(found)

    def _forget(self, domain: str, done: asyncio.Future[list[Streamhost]]) -> None:
        if self._proxies.get(domain) is done:
            del self._proxies[domain]

    async def _discover(self, domain: str) -> list[Streamhost]:
        found: list[Streamhost] = []
        timeout = self.config["discovery_timeout"]
        items = await self._query(
            "get", domain, ET.Element(f"{{{NS_DISCO_ITEMS}}}query"), timeout
        )
        for item in items.xml.iter(f"{{{NS_DISCO_ITEMS}}}item"):
            jid = item.get("jid", "")
            with contextlib.suppress(IqError, IqTimeout):
                info = await self._query(
                    "get", jid, ET.Element(f"{{{NS_DISCO_INFO}}}query"), timeout
                )
                if any(
                    i.get("category") == "proxy" and i.get("type") == "bytestreams"
                    for i in info.xml.iter(f"{{{NS_DISCO_INFO}}}identity")
                ):
                    answer = await self._query("get", jid, _query_element(), timeout)
                    for host in answer.xml.iter(f"{{{NS}}}streamhost"):
                        with contextlib.suppress(RemoteProtocolError):
                            port = parse_port(host.get("port"))
                            found.append(
                                (host.get("jid", jid), host.get("host", ""), port)
                            )
        return found

    async def _query(
        self,
        kind: Literal["get", "set"],
        to: str,
        query: ET.Element,
        timeout: float = 10,
    ) -> Iq:
        iq = self.xmpp.make_iq(ito=to, itype=kind)
        iq.xml.append(query)
        return await send_iq(iq, timeout)

    async def open(
        self,
        peer: str,
        *,
        sid: str | None = None,
        direct: bool = True,
        proxy: bool = True,
        timeout: float = 30,
    ) -> Socks5Stream:
        """Negotiate a stream to ``peer``: our own streamhost first, then proxies.

        Raises:
            NoUsableTransport: the peer could reach no streamhost.
            TransportError: negotiation failed otherwise.
        """
        sid = sid or secrets.token_hex(8)
        us = self.xmpp.boundjid.full
        address = dst_addr(sid, us, peer)
        hosts: list[Streamhost] = []
        waiter: asyncio.Future[TcpConnection] | None = None
        if direct:
            host, port = await self._listen()
            waiter = self._listener.waiter(address)
            hosts.append((us, host, port))
        proxies = await self.discover_proxies() if proxy else []
        hosts += proxies
        if not hosts:
            raise NoUsableTransport("no SOCKS5 streamhost to offer")
        offer = _query_element(sid=sid, mode="tcp")
        for jid, host, port in hosts:
            ET.SubElement(
                offer, f"{{{NS}}}streamhost", jid=jid, host=host, port=str(port)
            )
        try:
            result = await self._query("set", peer, offer, timeout)
        except IqError as exc:
            condition = exc.iq["error"]["condition"]
            raise NoUsableTransport(
                f"{peer} could not use any SOCKS5 streamhost ({condition})"
            ) from None
        except IqTimeout:
            raise TransferTimeout(f"{peer} did not answer the SOCKS5 offer") from None
        except BaseException:
            abandon(waiter)
            raise
        finally:
            # The target connects before it answers, so whatever reached our
            # streamhost is in the waiter by now; no later connection counts.
            self._listener.forget(address)
        used_el = result.xml.find(f"{{{NS}}}query/{{{NS}}}streamhost-used")
        used = used_el.get("jid", "") if used_el is not None else ""
        if used == us and waiter is not None:
            if not waiter.done():
                raise TransportError(
                    f"{peer} claims our streamhost but never connected"
                )
            return self._stream(peer, sid, waiter.result(), used)
        abandon(waiter)  # a connection to our streamhost the peer did not choose
        for jid, host, port in proxies:
            if jid == used:
                connection = await connect_streamhost(
                    host, port, address, self.config["connect_timeout"]
                )
                try:
                    activate = _query_element(sid=sid)
                    ET.SubElement(activate, f"{{{NS}}}activate").text = peer
                    await self._query("set", jid, activate, timeout)
                except (IqError, IqTimeout) as exc:
                    connection.abort()
                    raise TransportError(
                        f"the proxy {jid} would not activate the stream"
                    ) from exc
                return self._stream(peer, sid, connection, used)
        raise RemoteProtocolError(
            f"{peer} named a streamhost we did not offer: {used!r}"
        )

    def _stream(
        self, peer: str, sid: str, connection: TcpConnection, streamhost: str
    ) -> Socks5Stream:
        """A new stream on a negotiated connection, remembered until we go offline."""
        stream = Socks5Stream(
            peer=peer,
            sid=sid,
            connection=connection,
            streamhost=streamhost,
            idle_timeout=self.config["idle_timeout"],
        )
        self._live.add(stream)
        return stream

    # -- building blocks for Jingle (XEP-0260) ---------------------------------------

    async def listen(self) -> tuple[str, int]:
        """Our streamhost's (host, port), listening from now on; the host is
        one this machine reaches it at (loopback if it listens on every
        address)."""
        return await self._listen()

    def expect(self, address: bytes) -> asyncio.Future[TcpConnection]:
        """The next connection to our streamhost for SOCKS5 ``address``.

        Cancel the future (or let it finish) to stop accepting it; a later
        connection for the same address is refused.
        """
        return self._listener.expect(address)

    async def connect(
        self, host: str, port: int, address: bytes, timeout: float | None = None
    ) -> TcpConnection:
        """Connect to a streamhost (a peer's or a proxy) for ``address``,
        within ``timeout`` seconds (default: ``connect_timeout``).

        Raises:
            OSError, TimeoutError, TransportError, RemoteProtocolError.
        """
        return await connect_streamhost(
            host, port, address, timeout or self.config["connect_timeout"]
        )

    async def activate(self, proxy: str, sid: str, target: str) -> None:
        """Ask the proxy ``proxy`` to relay stream ``sid`` to ``target``.

        Raises:
            TransportError: the proxy refused or did not answer.
        """
        activate = _query_element(sid=sid)
        ET.SubElement(activate, f"{{{NS}}}activate").text = target
        try:
            await self._query("set", proxy, activate)
        except (IqError, IqTimeout) as exc:
            raise TransportError(f"the proxy {proxy} would not activate {sid}") from exc

    def stream(
        self, peer: str, sid: str, connection: TcpConnection, streamhost: str
    ) -> Socks5Stream:
        """A :class:`Socks5Stream` over a negotiated connection."""
        return self._stream(peer, sid, connection, streamhost)

    # -- target ----------------------------------------------------------------------

    async def accept(self, timeout: float | None = None) -> Socks5Stream:
        """The next incoming stream that ``authorize`` let in."""
        return await asyncio.wait_for(self._incoming.get(), timeout)

    def _on_iq(self, iq: StanzaBase) -> None:
        assert isinstance(iq, Iq)
        if iq["type"] != "set":
            return
        task = asyncio.ensure_future(self._answer(iq))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, iq: Iq) -> None:
        query = iq.xml.find(f"{{{NS}}}query")
        assert query is not None
        sid = query.get("sid", "")
        peer = iq["from"].full
        authorize: Callable[[str, str], bool] | None = self.config["authorize"]
        if not sid:
            self._error(iq, "bad-request")
            return
        if authorize is None or not authorize(peer, sid):
            self._error(iq, "not-acceptable")
            return
        address = dst_addr(sid, peer, self.xmpp.boundjid.full)
        for host in query.iter(f"{{{NS}}}streamhost"):
            jid, name = host.get("jid", ""), host.get("host", "")
            try:
                port = parse_port(host.get("port"))
                connection = await connect_streamhost(
                    name, port, address, self.config["connect_timeout"]
                )
            except (
                OSError,
                TimeoutError,
                TransportError,
                RemoteProtocolError,
                ValueError,
            ):
                continue  # try the next streamhost
            used = _query_element(sid=sid)
            ET.SubElement(used, f"{{{NS}}}streamhost-used", jid=jid)
            ack(iq, used)
            self._incoming.put_nowait(self._stream(peer, sid, connection, jid))
            return
        self._error(iq, "item-not-found")

    def _error(self, iq: Iq, condition: str) -> None:
        error_reply(iq, condition, "cancel")


#: slixmpp's loader looks the plugin up by its name in this module.
xfer_socks5 = XferSocks5
