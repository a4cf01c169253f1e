"""TLS to the XMPP server: the verifying context, and words for a failure.

:func:`tls_context` builds the context the client verifies the server with:
the system's CAs, or (``ca_file``) the CAs of one PEM file **instead** of
them, as ``curl --cacert`` does, so that a private CA can be trusted, and a
server pinned to it.

When verification fails, OpenSSL says why ("unable to get local issuer
certificate", "Hostname mismatch ...") but not what the certificate says. For
the one line the user reads, :func:`untrusted` opens a second, throw-away
connection that reads the certificate without trusting it (no verification,
nothing sent but the STARTTLS request), and names its subject names and
issuer. What it reads only words the error: the connection that failed stays
failed, and the probe never carries a password or a stanza.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import NameOID

from xfer.errors import CertificateUntrusted

if TYPE_CHECKING:
    import os

__all__ = ["PROBE_TIMEOUT", "peek_certificate", "tls_context", "untrusted"]

#: How long the probe that reads an untrusted certificate may take, in all.
PROBE_TIMEOUT = 3.0

_TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"


def tls_context(
    ca_file: str | os.PathLike[str] | None = None, *, verify: bool = True
) -> ssl.SSLContext:
    """A client context: CERT_REQUIRED and the host name checked; trusted CAs
    from ``ca_file`` if given (only those), else the system's.

    Raises:
        OSError: ``ca_file`` cannot be read.
        ssl.SSLError: it holds no PEM certificate.
    """
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _stream_header(domain: str) -> bytes:
    return (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' version='1.0' "
        f"to='{domain}'>"
    ).encode()


async def _read_until(reader: asyncio.StreamReader, *needles: bytes) -> bytes:
    seen = b""
    while not any(n in seen for n in needles):
        chunk = await reader.read(4096)
        if not chunk or len(seen) > 65536:
            raise ConnectionError("the server closed the probe")
        seen += chunk
    return seen


async def peek_certificate(
    host: str, port: int, domain: str, *, starttls: bool
) -> x509.Certificate | None:
    """The server's certificate, read without verifying it (for words only),
    or ``None`` when it cannot be read within :data:`PROBE_TIMEOUT`."""
    blind = ssl.create_default_context()
    blind.check_hostname = False
    blind.verify_mode = ssl.CERT_NONE

    async def probe() -> bytes | None:
        if not starttls:
            _, writer = await asyncio.open_connection(
                host, port, ssl=blind, server_hostname=domain
            )
        else:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(_stream_header(domain))
            await _read_until(reader, b"features>")
            writer.write(f"<starttls xmlns='{_TLS_NS}'/>".encode())
            answer = await _read_until(reader, b"proceed", b"failure")
            if b"proceed" not in answer:
                writer.close()
                return None
            await writer.start_tls(blind, server_hostname=domain)
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(True) if ssl_object is not None else None
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        return der if isinstance(der, bytes) else None

    try:
        der = await asyncio.wait_for(probe(), PROBE_TIMEOUT)
    except (OSError, TimeoutError, ValueError):
        return None
    if der is None:
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


def _name(name: x509.Name) -> str:
    common = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common and isinstance(common[0].value, str):
        return common[0].value
    return name.rfc4514_string()


def _subject_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return (_name(cert.subject),)
    names = san.value.get_values_for_type(x509.DNSName)
    return tuple(names) or (_name(cert.subject),)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return str(exc.verify_message).rstrip(".")
    return str(getattr(exc, "reason", None) or exc)


async def untrusted(
    exc: BaseException,
    *,
    server: str,
    address: tuple[str, int] | None,
    starttls: bool,
) -> CertificateUntrusted:
    """The error for a failed verification (``exc``), with what the
    certificate says when a probe to ``address`` can read it."""
    cert = None
    if address is not None:
        cert = await peek_certificate(*address, server, starttls=starttls)
    if cert is None:
        return CertificateUntrusted(server, _reason(exc))
    return CertificateUntrusted(
        server,
        _reason(exc),
        subject=_name(cert.subject),
        issuer=_name(cert.issuer),
        names=_subject_names(cert),
    )
