"""Two federated XMPP domains in Linux network namespaces, for deployment
tests: each domain's server in its own namespace, each client in its own,
TLS everywhere, and a local DNS that knows the test domains.

```
  client "a" 10.78.1.2 --+                 +-- 10.78.3.2 server "b" (b.test)
                          router 10.78.N.1
  server "a" 10.78.2.2 --+  (DNS on :53)   +-- 10.78.4.2 client "b"
  (a.test)
```

Five namespaces joined by veth pairs to a router namespace, with private
addresses (IPv4, and unique-local IPv6 on the client links). The router
forwards between every link, runs :mod:`xfer.testing.dns` (each other
namespace's ``/etc/resolv.conf`` points to its gateway: ``ip netns exec``
bind-mounts ``/etc/netns/<namespace>/resolv.conf`` over it), and drops
traffic on request (:meth:`Federation.block`, nftables: silently, as a
firewall does). A throw-away CA (:mod:`xfer.testing.certs`) signs each
server's certificate (its domain and the service names under it); every
server trusts that CA for s2s and requires TLS and a valid certificate
on c2s and s2s. Clients run as processes in the client namespaces
(:meth:`Federation.command`) and trust the CA with ``--ca-file``
(:attr:`Federation.ca_file`).

The servers are pluggable: a :data:`ServerFactory` turns the
:class:`ServerSite` the topology prepared (domain, namespace, address,
accounts, certificate, CA, directory) into a started :class:`Server`.
:func:`prosody` and :func:`ejabberd` are the ones here (``servers={"a":
prosody, "b": ejabberd}`` federates the two implementations); another
only needs to listen on the site's address and honour the same site.

:meth:`Federation.close` (also on failure, and at the ``with`` block's
end) stops the servers and the DNS, deletes the namespaces (links and
rules go with them) and the ``/etc/netns`` entries it made. Needs root,
``ip`` and ``nft``.

For outages and stock settings (Prosody only): :meth:`Federation.outage`
stops one server as a crash would and starts it again on the same ports;
:meth:`Federation.reconfigure` restarts one with other settings (a c2s
rate limit, offline storage) and points the DNS at its new ports.

Run by hand (as root), to try the command line across two domains::

    python -m xfer.testing.federation alice:secret@a bob:secret@b
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from xfer.testing.certs import CertificateAuthority, Issued
from xfer.testing.ejabberd import LocalEjabberd
from xfer.testing.netns import (
    NetnsUnavailable,
    _NetnsProsody,
    _run,
    netns_available,
    port_open_in,
)
from xfer.testing.prosody import LocalProsody

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "CLIENTS",
    "DOMAINS",
    "Federation",
    "Server",
    "ServerFactory",
    "ServerSite",
    "ejabberd",
    "prosody",
]

#: The domain served in each server namespace.
DOMAINS = {"a": "a.test", "b": "b.test"}
#: Each client namespace's addresses (IPv4, IPv6), and its server's name.
CLIENTS = {"a": ("10.78.1.2", "fd78:1::2"), "b": ("10.78.4.2", "fd78:4::2")}
#: Each namespace's link to the router: (subnet number, has IPv6).
_LINKS = {"ca": (1, True), "sa": (2, False), "sb": (3, False), "cb": (4, True)}
#: Where /etc/netns lives (``ip netns exec`` reads it).
ETC_NETNS = Path("/etc/netns")


def _address(link: str, host: int) -> str:
    return f"10.78.{_LINKS[link][0]}.{host}"


@dataclass(frozen=True)
class ServerSite:
    """What the topology gives one domain's server."""

    domain: str
    #: The network namespace to run in (``ip netns exec NAMESPACE ...``).
    namespace: str
    #: Listen here (c2s, s2s, the proxy): the namespace's only address.
    address: str
    accounts: dict[str, str]
    #: Valid for the domain and ``proxy.``/``conference.`` under it.
    certificate: Issued
    #: The CA that signed every server's certificate: trust it for s2s.
    ca_file: Path
    #: An empty directory of its own (removed with the topology).
    directory: Path


class Server(Protocol):
    """A started XMPP server for one :class:`ServerSite`."""

    domain: str
    c2s_port: int
    s2s_port: int
    proxy_port: int

    @property
    def proxy_jid(self) -> str: ...

    def stop(self) -> None: ...


#: Starts a server for a site (raises if it cannot).
ServerFactory = Callable[[ServerSite], Server]


def prosody(site: ServerSite) -> Server:
    """Prosody for ``site``: c2s with TLS required, s2s with TLS and
    certificates required (``s2s_secure_auth``), its proxy65."""
    server = _NetnsProsody(
        domain=site.domain,
        accounts=dict(site.accounts),
        address=site.address,
        wrapper=("ip", "netns", "exec", site.namespace),
        directory=site.directory,
        require_tls=True,
        s2s=True,
        s2s_port=5269,
        certificate=site.certificate,
        ca_file=site.ca_file,
    )
    server.namespace = site.namespace
    return server.start()


class _NetnsEjabberd(LocalEjabberd):
    """ejabberd inside a server namespace: started through ``ip netns
    exec`` (its Erlang node and the account helper talk over that
    namespace's loopback), its ports checked from inside too."""

    namespace: str = ""

    def _port_open(self, port: int) -> bool:
        return port_open_in(self.namespace, self.address, port)


def ejabberd(site: ServerSite) -> Server:
    """ejabberd (Debian's package, its shapers as shipped) for ``site``:
    c2s with TLS required; s2s with STARTTLS required both ways and the
    site's CA as its ``ca_file``, without dialback, so that a peer is
    accepted only by a certificate that CA signed (SASL EXTERNAL), and
    ejabberd gets in only with its own; its proxy65."""
    server = _NetnsEjabberd(
        domain=site.domain,
        accounts=dict(site.accounts),
        address=site.address,
        wrapper=("ip", "netns", "exec", site.namespace),
        directory=site.directory,
        require_tls=True,
        s2s=True,
        s2s_port=5269,
        s2s_tls=True,
        s2s_dialback=False,
        certificate=site.certificate.certificate,
        key=site.certificate.key,
        ca_file=site.ca_file,
    )
    server.namespace = site.namespace
    return server.start()


@dataclass
class Federation:
    """The namespaces, links, DNS and servers; see the module docstring.

    ``accounts`` maps each server ("a", "b") to its accounts; ``servers``
    maps it to the factory that starts it (default: :func:`prosody`).
    """

    accounts: dict[str, dict[str, str]] = field(default_factory=dict)
    servers: dict[str, ServerFactory] = field(
        default_factory=lambda: {"a": prosody, "b": prosody}
    )
    prefix: str = field(default_factory=lambda: "xf" + secrets.token_hex(3))
    running: dict[str, Server] = field(default_factory=dict)
    ca_file: Path | None = None
    _made: list[str] = field(default_factory=list)
    _etc: list[Path] = field(default_factory=list)
    _dns: subprocess.Popen[str] | None = None
    #: What :meth:`block` drops now (applied again after a reconfigure).
    _blocked: tuple[bool, bool | Collection[str], bool] = (False, False, False)
    _directory: Path | None = None

    def ns(self, name: str) -> str:
        """The namespace of ``router``, a server (``sa``, ``sb``) or a
        client (``ca``, ``cb``)."""
        return f"{self.prefix}-{name}"

    def server_address(self, name: str) -> str:
        return _address(f"s{name}", 2)

    def start(self) -> Federation:
        why = netns_available()
        if why is not None:
            raise NetnsUnavailable(why)
        try:
            self._directory = Path(tempfile.mkdtemp(prefix="xfer-federation-"))
            self._directory.chmod(0o755)
            self._build()
            self._start_servers()
            self._start_dns()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        router = self.ns("router")
        for name in ("router", *_LINKS):
            _run("ip", "netns", "add", self.ns(name))
            self._made.append(self.ns(name))
            self._ip(name, "link", "set", "lo", "up")
        for name, (subnet, v6) in _LINKS.items():
            inside, outside = f"{self.prefix}{name}h", f"{self.prefix}{name}r"
            _run(
                "ip", "-n", self.ns(name), "link", "add", inside,
                "type", "veth", "peer", "name", outside, "netns", router,
            )  # fmt: skip
            for where, link, host in ((name, inside, 2), ("router", outside, 1)):
                ip4 = f"{_address(name, host)}/24"
                self._ip(where, "addr", "add", ip4, "dev", link)
                if v6:
                    ip6 = f"fd78:{subnet}::{host}/64"
                    self._ip(where, "-6", "addr", "add", ip6, "dev", link, "nodad")
                self._ip(where, "link", "set", link, "up")
            self._ip(name, "route", "add", "default", "via", _address(name, 1))
            if v6:
                gateway6 = f"fd78:{subnet}::1"
                self._ip(name, "-6", "route", "add", "default", "via", gateway6)
            # The namespace's resolver asks the DNS on its gateway.
            etc = ETC_NETNS / self.ns(name)
            try:
                etc.mkdir(parents=True, exist_ok=True)
                self._etc.append(etc)
                (etc / "resolv.conf").write_text(
                    f"nameserver {_address(name, 1)}\noptions timeout:1 attempts:2\n"
                )
            except OSError as exc:  # a read-only /etc, say
                raise NetnsUnavailable(f"cannot write {etc}: {exc}") from exc
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            _run("ip", "netns", "exec", router, "sysctl", "-qw", f"{key}=1")

    def _start_servers(self) -> None:
        assert self._directory is not None
        authority = CertificateAuthority("xfer federation test CA")
        for name, factory in self.servers.items():
            domain = DOMAINS[name]
            directory = self._directory / f"server-{name}"
            (directory / "certs").mkdir(parents=True)
            directory.chmod(0o755)
            names = [domain, f"proxy.{domain}", f"conference.{domain}"]
            site = ServerSite(
                domain=domain,
                namespace=self.ns(f"s{name}"),
                address=self.server_address(name),
                accounts=dict(self.accounts.get(name, {})),
                certificate=authority.issue(names, directory / "certs", domain),
                ca_file=authority.write(directory / "certs" / "ca.crt"),
                directory=directory,
            )
            self.running[name] = factory(site)
        self.ca_file = authority.write(self._directory / "ca.crt")

    def outage(self, name: str, seconds: float) -> tuple[float, float]:
        """Stop server ``name`` as a crash would (every session lost, its
        data kept), wait ``seconds``, start it again on the same ports;
        when it stopped and when it listened again (``time.monotonic``)."""
        server = self._prosody(name)
        server.halt()
        down = time.monotonic()
        time.sleep(seconds)
        server.restart()
        return down, time.monotonic()

    def reconfigure(
        self,
        name: str,
        *,
        c2s_rate: str | None = None,
        c2s_burst: str = "2s",
        offline: bool = False,
        hibernation: int = 10,
    ) -> None:
        """Restart server ``name`` with these settings (each one not given:
        its default, off; see
        :class:`~xfer.testing.prosody.LocalProsody`: a c2s rate limit with
        mod_limits, offline storage, stream management's hibernation),
        keeping its data; the DNS then gives its new c2s port, and the
        blocks in force apply to its new proxy port."""
        server = self._prosody(name)
        server.halt()
        server.c2s_rate, server.c2s_burst = c2s_rate, c2s_burst
        server.offline, server.hibernation = offline, hibernation
        server.start()
        self._stop_dns()
        self._start_dns()
        direct, proxies, s2s = self._blocked
        self.block(direct=direct, proxies=proxies, s2s=s2s)

    def _prosody(self, name: str) -> LocalProsody:
        server = self.running[name]
        if not isinstance(server, LocalProsody):
            raise NotImplementedError(f"server {name!r} is not Prosody")
        return server

    def _start_dns(self) -> None:
        zones = [
            f"{DOMAINS[n]}={self.server_address(n)}:{s.c2s_port}:{s.s2s_port}"
            for n, s in self.running.items()
        ]
        # Every address of the router (each link's gateway), in its namespace.
        anywhere = "0.0.0.0"  # noqa: S104
        dns = [sys.executable, "-m", "xfer.testing.dns", anywhere, *zones]
        self._dns = subprocess.Popen(  # noqa: S603 - fixed argv
            self.command("router", ["setpriv", "--pdeathsig=TERM", *dns]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert self._dns.stdout is not None
        if self._dns.stdout.readline().strip() != "ready":
            self._dns.kill()
            _, err = self._dns.communicate(timeout=5)
            raise NetnsUnavailable(f"the test DNS did not start: {err.strip()}")

    def _ip(self, name: str, *argv: str) -> None:
        _run("ip", "-n", self.ns(name), *argv)

    def block(
        self,
        *,
        direct: bool = False,
        proxies: bool | Collection[str] = False,
        s2s: bool = False,
    ) -> None:
        """Drop (silently, established connections too) traffic between
        the two clients, to both servers' proxies (or to those of the
        servers named: ``proxies=["b"]``), and/or between the two servers;
        replaces earlier rules (``block()`` lifts them all)."""
        self._blocked = (direct, proxies, s2s)
        rules = []

        def between(one: str, other: str) -> None:
            for src, dst in ((one, other), (other, one)):
                rules.append(
                    f'iifname "{self.prefix}{src}r" oifname "{self.prefix}{dst}r" drop;'
                )

        if direct:
            between("ca", "cb")
        if s2s:
            between("sa", "sb")
        dropped = (
            (self.running if proxies else ()) if isinstance(proxies, bool) else proxies
        )
        for name, server in self.running.items():
            if name in dropped:
                rules.append(
                    f"ip daddr {self.server_address(name)} "
                    f"tcp dport {server.proxy_port} drop;"
                )
        script = "table inet xfer\ndelete table inet xfer\n"
        if rules:
            script += (
                "table inet xfer {\n chain forward {\n"
                "  type filter hook forward priority 0;\n  "
                + "\n  ".join(rules)
                + "\n }\n}\n"
            )
        _run("ip", "netns", "exec", self.ns("router"), "nft", "-f", "-", stdin=script)

    def command(self, name: str, argv: list[str]) -> list[str]:
        """``argv`` run in namespace ``name`` (``ca``, ``cb``, ``router``...)."""
        return ["ip", "netns", "exec", self.ns(name), *argv]

    def close(self) -> None:
        """Stop everything and delete what :meth:`start` made."""
        self._stop_dns()
        for server in self.running.values():
            with contextlib.suppress(Exception):
                server.stop()
        self.running.clear()
        for name in reversed(self._made):
            with contextlib.suppress(NetnsUnavailable):
                _run("ip", "netns", "del", name)
        self._made.clear()
        for etc in self._etc:
            shutil.rmtree(etc, ignore_errors=True)
        if self._etc:
            with contextlib.suppress(OSError):
                ETC_NETNS.rmdir()  # only if nothing else is in it
        self._etc.clear()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def _stop_dns(self) -> None:
        if self._dns is not None:
            with contextlib.suppress(ProcessLookupError):
                self._dns.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._dns.communicate(timeout=5)
            self._dns = None

    def __enter__(self) -> Federation:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


if __name__ == "__main__":
    from xfer.testing.federation_cli import main

    sys.exit(main(sys.argv[1:]))
