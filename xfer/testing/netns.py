"""A small routed network in Linux network namespaces, for deployment tests.

Three namespaces, joined by veth pairs, with private addresses (IPv4 and
unique-local IPv6) and nothing else:

```
  host "a"  10.77.1.2 / fd77:1::2 ---+
                                      server 10.77.1.1, 10.77.2.1 (fd77:1::1, fd77:2::1)
  host "b"  10.77.2.2 / fd77:2::2 ---+   routes between a and b; runs Prosody
```

The server namespace runs a :class:`~xfer.testing.prosody.LocalProsody`
(c2s and its proxy65 on 10.77.1.1, reachable from both hosts) and forwards
between the two host links, so the hosts reach each other directly, as on a
LAN, unless :meth:`Topology.block` drops that traffic (nftables in the
server namespace: packets dropped silently, as a firewall does, so a
connection attempt hangs rather than fails). Clients run as processes
inside the host namespaces (:meth:`Topology.command`).

Nothing touches the namespace the tests run in except the veth ends, which
are moved out of it at once: :meth:`Topology.close` (also on failure, and
the ``with`` block's end) deletes the namespaces, and with them every link
and rule. Needs root, ``ip`` (iproute2) and ``nft`` (nftables).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xfer.testing.prosody import LocalProsody

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["HOSTS", "NetnsUnavailable", "Topology", "netns_available"]

#: Each host namespace's (IPv4, IPv6) and its link's server side.
HOSTS = {
    "a": (("10.77.1.2", "fd77:1::2"), ("10.77.1.1", "fd77:1::1")),
    "b": (("10.77.2.2", "fd77:2::2"), ("10.77.2.1", "fd77:2::1")),
}
#: Where the server listens (the server side of host a's link).
SERVER_ADDRESS = "10.77.1.1"


class NetnsUnavailable(RuntimeError):
    """Not root, or ``ip``/``nft`` missing, or namespaces cannot be made."""


def netns_available() -> str | None:
    """None if namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install {package})"
    return None


def _run(*argv: str, stdin: str | None = None) -> None:
    done = subprocess.run(  # noqa: S603 - fixed tools, our own arguments
        argv, input=stdin, capture_output=True, text=True, check=False, timeout=30
    )
    if done.returncode != 0:
        raise NetnsUnavailable(f"{' '.join(argv)}: {done.stderr.strip()}")


def port_open_in(namespace: str, address: str, port: int) -> bool:
    """Whether something listens on ``address``:``port``, as seen from
    inside network namespace ``namespace``."""
    probe = f"exec 3<>/dev/tcp/{address}/{port}"
    done = subprocess.run(  # noqa: S603 - fixed argv
        ["ip", "netns", "exec", namespace, "bash", "-c", probe],  # noqa: S607
        capture_output=True,
        check=False,
        timeout=5,
    )
    return done.returncode == 0


class _NetnsProsody(LocalProsody):
    """Prosody inside the server namespace: started through ``ip netns
    exec``, its ports checked from inside too."""

    namespace: str = ""

    def _port_open(self, port: int) -> bool:
        return port_open_in(self.namespace, self.address, port)


@dataclass
class Topology:
    """The namespaces, their links and the server; see the module docstring.

    Use as a context manager (or :meth:`start` and :meth:`close`).
    """

    accounts: dict[str, str] = field(default_factory=dict)
    domain: str = "xfer.test"
    prefix: str = field(default_factory=lambda: "xf" + secrets.token_hex(3))
    server: LocalProsody | None = None
    _made: list[str] = field(default_factory=list)

    def ns(self, name: str) -> str:
        """The namespace name of ``server``, ``a`` or ``b``."""
        return f"{self.prefix}-{name}"

    def start(self) -> Topology:
        why = netns_available()
        if why is not None:
            raise NetnsUnavailable(why)
        try:
            self._build()
            server = _NetnsProsody(
                domain=self.domain,
                accounts=dict(self.accounts),
                address=SERVER_ADDRESS,
                wrapper=("ip", "netns", "exec", self.ns("server")),
            )
            server.namespace = self.ns("server")
            self.server = server.start()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        for name in ("server", *HOSTS):
            _run("ip", "netns", "add", self.ns(name))
            self._made.append(self.ns(name))
            self._ip(name, "link", "set", "lo", "up")
        server = self.ns("server")
        for name, ((v4, v6), (gw4, gw6)) in HOSTS.items():
            # Both ends are created inside the namespaces: nothing appears
            # in ours, even for a moment.
            inside, outside = f"{self.prefix}{name}h", f"{self.prefix}{name}s"
            _run(
                "ip", "-n", self.ns(name), "link", "add", inside,
                "type", "veth", "peer", "name", outside, "netns", server,
            )  # fmt: skip
            for where, link, ip4, ip6 in (
                (name, inside, v4, v6),
                ("server", outside, gw4, gw6),
            ):
                self._ip(where, "addr", "add", f"{ip4}/24", "dev", link)
                self._ip(where, "-6", "addr", "add", f"{ip6}/64", "dev", link, "nodad")
                self._ip(where, "link", "set", link, "up")
            self._ip(name, "route", "add", "default", "via", gw4)
            self._ip(name, "-6", "route", "add", "default", "via", gw6)
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            _run("ip", "netns", "exec", server, "sysctl", "-qw", f"{key}=1")

    def _ip(self, name: str, *argv: str) -> None:
        _run("ip", "-n", self.ns(name), *argv)

    def block(
        self, *, between_hosts: bool = False, into_a: bool = False, proxy: bool = False
    ) -> None:
        """Drop (silently) traffic between the two hosts (``into_a``: only
        connections that b opens to a, as a firewall in front of a would),
        and/or to the server's proxy; replaces earlier rules."""
        drops = []
        if between_hosts:
            drops.append("chain forward { type filter hook forward priority 0; "
                         "policy drop; }")  # fmt: skip
        elif into_a:
            drops.append("chain forward { type filter hook forward priority 0; "
                         'iifname "*bs" oifname "*as" ct state new drop; }'
                         .replace("*", self.prefix))  # fmt: skip
        if proxy:
            assert self.server is not None
            drops.append("chain input { type filter hook input priority 0; "
                         f"tcp dport {self.server.proxy_port} drop; }}")  # fmt: skip
        script = "table inet xfer\ndelete table inet xfer\n"
        if drops:
            script += "table inet xfer {\n" + "\n".join(drops) + "\n}\n"
        _run("ip", "netns", "exec", self.ns("server"), "nft", "-f", "-", stdin=script)

    def command(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` run inside host ``host``'s namespace."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def close(self) -> None:
        """Stop the server and delete every namespace (links and rules go
        with them)."""
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.stop()
            self.server = None
        for name in reversed(self._made):
            with contextlib.suppress(NetnsUnavailable):
                _run("ip", "netns", "del", name)
        self._made.clear()

    def __enter__(self) -> Topology:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
