"""A throw-away ejabberd XMPP server, for tests and benchmarks.

A second server implementation beside :mod:`xfer.testing.prosody`, with the
same interface: :meth:`LocalEjabberd.start` / :meth:`~LocalEjabberd.stop`
(or ``with``), free ports picked at start on :attr:`~LocalEjabberd.address`,
a private directory for the configuration, the database and the logs, and the
accounts you ask for. It runs Debian's ``ejabberd`` package from a generated
configuration that keeps what Debian ships where it matters for xfer: the
c2s shaper (3000 B/s with a 20 kB burst for every account; IBB data goes
through it), ``s2s_shaper`` "fast", ``max_stanza_size``, mod_stream_mgmt
(``resend_on_timeout: if_offline``), mod_offline, mod_carboncopy, roster,
disco, ping, blocking, privacy, vcard and the SCRAM password format. Added:
mod_proxy65 (Debian does not enable it) on a port of its own. Left out:
HTTP, BOSH, MQTT, STUN, pubsub, MUC and mod_fail2ban (a test that fails a
log-in on purpose must not ban loopback). Plain c2s by default, as with
LocalProsody: the accounts and the server are throw-away.

Optional: STARTTLS (``tls``; ``require_tls``; a direct TLS port with
``direct_tls``) with a certificate from a throw-away CA (:attr:`ca_file`) or
one given (``certificate``, ``key``, ``ca_file``); s2s (``s2s``: a listener
on :attr:`s2s_port`, with ``s2s_tls`` STARTTLS required and peers'
certificates checked against ``ca_file``; ``s2s_dialback=False`` leaves
dialback out, so certificates are the only way in or out), a domain and
an address other than loopback, and a command prefix (``wrapper``, e.g.
``ip netns exec``; :func:`xfer.testing.federation.ejabberd` runs it so).

Erlang: every instance is its own node (a unique name on 127.0.0.1 and a
random cookie, kept in the private directory's ``.erlang.cookie``, owner
only, so that it shows in no command line). It runs without epmd: the node
listens for Erlang distribution on a fixed free loopback port
(``-erl_epmd_port`` with ``-start_epmd false``), and the helper that creates
accounts reaches it on that port the same way; so nothing outlives
:meth:`~LocalEjabberd.stop`, which ends the VM's whole process group
(SIGTERM, then SIGKILL). As root, the VM runs as the ``ejabberd`` user. Run by hand::

    python -m xfer.testing.ejabberd alice:secret bob:secret
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from xfer.testing._server import LocalServer, free_port, run_by_hand
from xfer.testing.certs import CertificateAuthority
from xfer.testing.ejabberd_config import (
    STOCK_C2S_SHAPER,
    STOCK_S2S_SHAPER,
    Shaper,
    server_config,
    to_yaml,
)
from xfer.testing.prosody import Account

__all__ = [
    "STOCK_C2S_SHAPER",
    "Account",
    "EjabberdUnavailable",
    "LocalEjabberd",
    "Shaper",
    "ejabberd_available",
]

INSTALL_HINT = "install it with: apt-get install ejabberd"


class EjabberdUnavailable(RuntimeError):
    """ejabberd is not installed, or would not start."""


def _erl_libs() -> str | None:
    """Where Debian's ejabberd keeps its Erlang application (the ERL_LIBS
    its ejabberdctl sets), or None if ejabberd is not installed."""
    for found in glob.glob("/usr/lib/*/ejabberd-*/ebin/ejabberd.app"):
        return str(Path(found).parent.parent.parent)
    if glob.glob("/usr/lib/erlang/lib/ejabberd-*/ebin/ejabberd.app"):
        return ""
    return None


def ejabberd_available() -> bool:
    return shutil.which("erl") is not None and _erl_libs() is not None


def _erlang_binary(text: str) -> str:
    """``text`` as an Erlang binary literal (UTF-8)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'<<"{escaped}"/utf8>>'


def _erlang_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: Run in a helper node: create or update the accounts listed in a file on
#: the server node, then halt (status 1, printing the results, on failure).
_REGISTER = """\
N = list_to_atom({node}),
{{ok, As}} = file:consult({file}),
Do = fun({{U, H, P}}) ->
    case rpc:call(N, ejabberd_auth, try_register, [U, H, P]) of
        {{error, exists}} -> rpc:call(N, ejabberd_auth, set_password, [U, H, P]);
        R -> R
    end
end,
Rs = [{{U, Do(A)}} || {{U, _, _}} = A <- As],
case [X || {{_, X}} <- Rs, X =/= ok] of
    [] -> halt(0);
    _ -> io:format("~p~n", [Rs]), halt(1)
end.
"""


@dataclass
class LocalEjabberd(LocalServer):
    """Start with :meth:`start` (or ``with``); stop with :meth:`stop`."""

    #: The server's certificate and key (PEM files); if not given and TLS is
    #: used, a throw-away CA signs one for ``certificate_names`` (default:
    #: the domain and ``proxy.`` the domain) and :attr:`ca_file` is its CA.
    certificate: Path | None = None
    key: Path | None = None
    certificate_names: tuple[str, ...] = ()
    #: The CA certificate clients trust; with s2s, also the one remote
    #: servers' certificates are checked against.
    ca_file: Path | None = None
    #: Federation: listen for s2s on :attr:`s2s_port` (a free port if 0);
    #: ``s2s_tls`` requires STARTTLS on s2s both ways. Off: no s2s listener
    #: and no outgoing s2s either. ``outgoing_s2s_port`` is where ejabberd
    #: connects when DNS has no SRV record for a remote domain. ejabberd
    #: finds remote domains through DNS only (an Erlang hosts table,
    #: ERL_INETRC, was not consulted when tried): federation needs a DNS
    #: server that knows the domains.
    s2s: bool = False
    s2s_port: int = 0
    s2s_tls: bool = False
    #: Accept and use dialback (mod_s2s_dialback, as Debian ships it) as
    #: well as certificates (SASL EXTERNAL); off: a remote server must
    #: present a certificate ``ca_file`` vouches for, and so must we.
    s2s_dialback: bool = True
    outgoing_s2s_port: int = 5269
    #: Traffic shapers (None: no shaper); the defaults are Debian's.
    c2s_shaper: Shaper | None = STOCK_C2S_SHAPER
    s2s_shaper: Shaper | None = STOCK_S2S_SHAPER
    #: mod_offline (on, as shipped) and how long mod_stream_mgmt keeps a
    #: broken session for resumption (seconds; 300 as shipped).
    offline: bool = True
    resume_timeout: int = 300
    #: The Erlang node's name and cookie (set at start).
    node: str = ""
    cookie: str = ""
    dist_port: int = 0
    _process: subprocess.Popen[bytes] | None = None

    @property
    def proxy_jid(self) -> str:
        return f"proxy.{self.domain}"

    @property
    def log_file(self) -> Path:
        assert self.directory is not None, "start() first"
        return self.directory / "logs" / "ejabberd.log"

    def account(self, user: str) -> Account:
        return Account(user, self.accounts[user], self.domain)

    # -- start -----------------------------------------------------------------

    def start(self, *, timeout: float = 60) -> LocalEjabberd:
        libs = _erl_libs()
        if shutil.which("erl") is None or libs is None:
            raise EjabberdUnavailable(f"ejabberd is not installed; {INSTALL_HINT}")
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="xfer-ejabberd-"))
            self._own_dir = True
        self.directory.chmod(0o755)
        self._check_reachable(self.directory)
        for sub in ("spool", "logs", "certs"):
            (self.directory / sub).mkdir(exist_ok=True)
        if self.uses_tls and self.certificate is None:
            self._make_certificate()
        requested = (
            self.c2s_port,
            self.proxy_port,
            self.direct_tls_port,
            self.s2s_port,
        )
        # One node name for all attempts: the database in the spool belongs
        # to the node that created it.
        self.node = f"xfer-{secrets.token_hex(4)}@127.0.0.1"
        self.cookie = secrets.token_hex(16)
        for attempt in range(3):
            self._pick_ports(*requested)
            config = self.directory / "ejabberd.yml"
            config.write_text(to_yaml(self.config()))
            config.chmod(0o600)
            cookie = self.directory / ".erlang.cookie"
            cookie.unlink(missing_ok=True)
            cookie.write_text(self.cookie)
            cookie.chmod(0o400)
            self._chown(self.directory)
            self._process = self._spawn(libs)
            if self._wait_ready(timeout):
                try:
                    self.add_accounts(dict(self.accounts))
                except EjabberdUnavailable:
                    self.stop()
                    raise
                return self
            self._terminate()
            if attempt == 2:
                break
        detail = self._why()
        self.stop()
        raise EjabberdUnavailable(f"ejabberd did not start: {detail}")

    def _why(self) -> str:
        """The first lines of the last errors ejabberd logged (else the tail
        of what the VM printed)."""
        assert self.directory is not None
        text = ""
        with contextlib.suppress(OSError):
            text = (self.directory / "logs" / "ejabberd.log").read_text()
        errors = re.findall(r"^\S+ \S+ \[(?:error|critical)\] (.*)$", text, re.M)
        if errors:
            return "\n".join(e for e in errors[-6:] if "REPORT" not in e)
        with contextlib.suppress(OSError):
            text = (self.directory / "stdout.log").read_text()
        return text[-2000:].strip()

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.require_tls or self.direct_tls or self.s2s_tls

    def _pick_ports(self, c2s: int, proxy: int, direct: int, s2s: int) -> None:
        """The ports asked for, and free ones (on loopback, as seen from
        here) for those left at 0."""
        self.c2s_port = c2s or free_port()
        self.proxy_port = proxy or free_port()
        self.dist_port = free_port()
        self.direct_tls_port = (direct or free_port()) if self.direct_tls else 0
        self.s2s_port = (s2s or free_port()) if self.s2s else 0

    def _make_certificate(self) -> None:
        assert self.directory is not None
        certs = self.directory / "certs"
        authority = CertificateAuthority(f"xfer test CA for {self.domain}")
        self.ca_file = authority.write(certs / "ca.crt")
        names = list(self.certificate_names or (self.domain, self.proxy_jid))
        issued = authority.issue(names, certs, self.domain)
        self.certificate, self.key = issued.certificate, issued.key

    def config(self) -> dict[str, object]:
        """The ejabberd.yml, as data (see :mod:`xfer.testing.ejabberd_config`)."""
        # Copies in the private directory: the ejabberd user may not be able
        # to read the given files where they are.
        files = [f for f in (self.certificate, self.key) if f is not None]
        return server_config(
            self,
            [str(self._private_copy(f)) for f in files],
            None if self.ca_file is None else str(self._private_copy(self.ca_file)),
        )

    def _private_copy(self, path: Path) -> Path:
        """``path`` copied into the private ``certs`` folder (if not there)."""
        assert self.directory is not None
        certs = self.directory / "certs"
        if path.parent == certs:
            return path
        copy = certs / f"given-{path.name}"
        copy.write_bytes(path.read_bytes())
        copy.chmod(0o600)
        return copy

    def _spawn(self, libs: str) -> subprocess.Popen[bytes]:
        assert self.directory is not None
        d = self.directory
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(d),
            "EJABBERD_CONFIG_PATH": str(d / "ejabberd.yml"),
            "EJABBERD_LOG_PATH": str(d / "logs" / "ejabberd.log"),
            "ERL_CRASH_DUMP": str(d / "logs" / "erl_crash.dump"),
            "ERL_CRASH_DUMP_BYTES": "0",
            "LANG": "C.UTF-8",
        }
        if libs:
            env["ERL_LIBS"] = libs
        # setpriv: the VM dies with us (no orphan node if the test run is
        # killed) and, as root, runs as the ejabberd user.
        command = [*self.wrapper, "setpriv", "--pdeathsig=TERM"]
        if os.geteuid() == 0:
            command += ["--reuid=ejabberd", "--regid=ejabberd", "--init-groups"]
        spool = _erlang_string(str(d / "spool"))
        command += ["erl", *self._dist_args(self.node), "-noinput", "+K", "true"]
        command += ["-mnesia", "dir", spool, "-s", "ejabberd"]
        log = (d / "stdout.log").open("ab")
        try:
            return subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=d / "spool",
                env=env,
            )
        finally:
            log.close()

    def _dist_args(self, name: str) -> list[str]:
        """Erlang distribution without epmd: every node of this instance
        uses :attr:`dist_port` on loopback and the instance's cookie (read
        from ``$HOME/.erlang.cookie``: HOME is the private directory)."""
        return [
            *("-name", name),
            *("-erl_epmd_port", str(self.dist_port), "-start_epmd", "false"),
            *("-kernel", "inet_dist_use_interface", "{127,0,0,1}"),
        ]

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        assert self._process is not None
        ports = [self.c2s_port, self.proxy_port]
        ports += [p for p in (self.direct_tls_port, self.s2s_port) if p]
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if all(self._port_open(p) for p in ports):
                return True
            time.sleep(0.1)
        return False

    def _port_open(self, port: int) -> bool:
        """Whether something listens on ``port`` of :attr:`address`."""
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        with socket.socket(family) as s:
            s.settimeout(0.2)
            return s.connect_ex((self.address, port)) == 0

    def _check_reachable(self, directory: Path) -> None:
        """As root (the VM runs as the ejabberd user): every folder above
        ``directory`` must let that user through."""
        if os.geteuid() != 0:
            return
        uid = pwd.getpwnam("ejabberd").pw_uid
        for folder in directory.resolve().parents:
            st = folder.stat()
            if not st.st_mode & 0o001 and st.st_uid != uid:
                raise EjabberdUnavailable(
                    f"the ejabberd user cannot reach {directory}: {folder} is "
                    "closed to other users (give no directory, or one below "
                    "folders open to all)"
                )

    def _chown(self, path: Path) -> None:
        if os.geteuid() != 0:
            return
        entry = pwd.getpwnam("ejabberd")
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, entry.pw_uid, entry.pw_gid)

    # -- accounts --------------------------------------------------------------

    def add_accounts(self, accounts: dict[str, str]) -> None:
        """Create accounts (or set their passwords) on the running server,
        through a short-lived hidden Erlang node."""
        assert self.directory is not None, "start() first"
        assert self._process is not None, "start() first"
        if not accounts:
            return
        listing = self.directory / f"accounts-{secrets.token_hex(4)}.eterm"
        listing.write_text(
            "".join(
                f"{{{_erlang_binary(u)}, {_erlang_binary(self.domain)}, "
                f"{_erlang_binary(p)}}}.\n"
                for u, p in accounts.items()
            )
        )
        listing.chmod(0o600)
        script = _REGISTER.format(
            node=_erlang_string(self.node), file=_erlang_string(str(listing))
        )
        helper = f"ctl-{secrets.token_hex(4)}@127.0.0.1"
        command = [*self.wrapper, "setpriv", "--pdeathsig=TERM", "erl"]
        command += self._dist_args(helper)
        command += ["-dist_listen", "false", "-hidden", "-noinput", "-eval", script]
        try:
            done = subprocess.run(  # noqa: S603 - fixed argv, no shell
                command,
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
                env={**os.environ, "HOME": str(self.directory)},
            )
        finally:
            listing.unlink(missing_ok=True)
        if done.returncode != 0:
            raise EjabberdUnavailable(
                f"ejabberd did not create the accounts: {done.stdout}{done.stderr}"
            )
        self.accounts.update(accounts)

    # -- stop ------------------------------------------------------------------

    def _terminate(self) -> None:
        """End the VM (SIGTERM: ejabberd stops cleanly) and everything in
        its process group (erl_child_setup, inet_gethost)."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
        # Helpers of the VM that outlived it, if any.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process = None

    def summary(self) -> str:
        return (
            f"ejabberd on {self.address}:{self.c2s_port} (proxy65 {self.proxy_jid} "
            f"on port {self.proxy_port}; node {self.node}); accounts: "
            + ", ".join(f"{u}@{self.domain}" for u in self.accounts)
        )


def main(argv: list[str]) -> int:
    return run_by_hand(lambda accounts: LocalEjabberd(accounts=accounts), argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
