"""Where an installation keeps its OTR identity: key and trust store.

An adapter (it reads and writes files), kept synchronous: the files are tiny
and read once. Everything goes in one directory (the command line uses the
XDG data directory), every file is written atomically (temporary file,
fsync, rename) with mode 0600, and no secret is ever logged or printed.

Modes are enforced every time the store is used, not only when it is created:
a directory that exists with a looser mode (0755 from an old version, a
restored backup, a careless ``mkdir``) becomes 0700 and its files 0600,
provided they are ours; a loose directory or file that belongs to someone else
cannot be fixed by us and is refused.

=================  =========================================================
``otr.key``        the long-term DSA key, PKCS#8 PEM
``trust.json``     :class:`~xfer.otr.trust.TrustStore`
=================  =========================================================

The OTR instance tag is not stored: every running client draws its own, so
that two processes of one installation (``xfer receive`` and ``xfer verify``,
or two devices sharing a directory) are two OTR instances, as OTR v3 wants.
Versions before that kept an ``instance-tag`` file here; it is not read.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from xfer.errors import LocalProtocolError
from xfer.otr.crypto import PrivateKey
from xfer.otr.trust import TrustStore

__all__ = ["IdentityStore", "write_private_file"]


def write_private_file(path: Path, data: bytes, *, replace: bool = True) -> None:
    """Write ``data`` to ``path`` atomically, mode 0600.

    Raises:
        FileExistsError: ``replace`` is false and ``path`` exists.
    """
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(temp, path)
        else:
            os.link(temp, path)  # fails if path exists: no clobbering
    finally:
        temp.unlink(missing_ok=True)


def _restrict(path: Path, st: os.stat_result, mode: int) -> None:
    """chmod ``path`` (whose stat is ``st``) to ``mode`` if it allows more."""
    if stat.S_IMODE(st.st_mode) & ~mode == 0:
        return
    if st.st_uid != os.getuid():
        raise LocalProtocolError(
            f"{path} belongs to another user and is open to others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); it cannot hold an OTR identity"
        )
    os.chmod(path, mode)


class IdentityStore:
    """The files of one OTR identity in ``directory`` (mode 0700, files 0600,
    enforced on every use)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()
        self.key_path = self.directory / "otr.key"
        self.trust_path = self.directory / "trust.json"

    def _ensure_dir(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.tighten()

    def tighten(self) -> None:
        """Give the directory mode 0700 and its files mode 0600 if they are
        looser (nothing to do if the directory does not exist yet).

        Raises:
            LocalProtocolError: the directory is not a directory, or a loose
                directory or file belongs to another user.
        """
        try:
            st = self.directory.stat()
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            raise LocalProtocolError(f"{self.directory} is not a directory")
        _restrict(self.directory, st, 0o700)
        for path in (self.key_path, self.trust_path):
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):  # a symbolic link is the user's choice
                _restrict(path, st, 0o600)

    def private_key(self, *, create: bool = True) -> PrivateKey:
        """Our long-term key, generated and saved on first use.

        Raises:
            FileNotFoundError: none exists and ``create`` is false.
            LocalProtocolError: the key file is damaged.
        """
        self.tighten()
        try:
            pem = self.key_path.read_bytes()
        except FileNotFoundError:
            if not create:
                raise
            self._ensure_dir()
            key = PrivateKey.generate()
            try:
                write_private_file(self.key_path, key.to_pem(), replace=False)
            except FileExistsError:  # another process made one first: use it
                return self.private_key(create=False)
            return key
        try:
            return PrivateKey.from_pem(pem)
        except (ValueError, TypeError) as exc:
            raise LocalProtocolError(f"{self.key_path} is not a usable key") from exc

    def trust_store(self) -> TrustStore:
        self.tighten()
        try:
            return TrustStore.from_json(self.trust_path.read_bytes())
        except FileNotFoundError:
            return TrustStore()

    def save_trust_store(self, store: TrustStore) -> None:
        self._ensure_dir()
        write_private_file(self.trust_path, store.to_json())
