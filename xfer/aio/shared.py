"""A shared folder on disk: what it lists, what it serves, and nothing else
(spec/share.md section 5).

Blocking helpers (they read the disk): callers run them in a thread.

Only regular files and directories under the shared root are shared. A
symbolic link (whatever it points to), a hidden name (starting with ``.``),
a special file (FIFO, device, socket) or a name that is not a valid share
path (:func:`~xfer.transfer.share_paths.check_path`) is neither listed nor
served. Every request is resolved afresh from the real root, one component
at a time with ``openat`` and ``O_NOFOLLOW`` (a symbolic link put in a
path's way fails the open instead of being followed), and the descriptor
finally opened is checked once more to be a regular file (``fstat``) inside
the root (its path in ``/proc/self/fd``). The sender then reads the file
through that very descriptor's ``/proc/self/fd`` entry, so renaming or
replacing the path afterwards changes nothing of what is sent.

A file that changes while it is sent must not reach the fetcher as a mix of
old and new bytes: the sender hashes what it reads, so a mix would verify.
:meth:`OpenedFile.check_unchanged` compares the descriptor's size,
modification and change times with those seen at the open; the sharer calls
it before the digest goes out, and a change fails the transfer (the fetcher
keeps nothing) so that the sharer can send the new content afresh.

SHA-256 hashes are listed when known: :class:`HashCache` keeps them, in the
identity directory, keyed by the path and what ``stat`` says of the file
(device, inode, size, modification and change time in ns); the sharer fills
it from every file it sends and hashes listed files in the background.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import mimetypes
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xfer.aio.placement import free_name
from xfer.errors import DestinationExists, LocalProtocolError
from xfer.names import safe_parts
from xfer.transfer.offer import _MEDIA_TYPE as MEDIA_TYPE_RULE
from xfer.transfer.share import EntryType, ShareEntry
from xfer.transfer.share_paths import check_path, within

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MAX_GET_FILES",
    "MAX_LISTED",
    "HashCache",
    "OpenedFile",
    "SharedFolder",
    "SourceChanged",
    "TooManyFiles",
    "fetch_destination",
]

#: Entries one listing walks at most (a recursive one included).
MAX_LISTED = 100_000
#: Files one get may fetch at most.
MAX_GET_FILES = 10_000
#: Hashes the cache keeps at most.
MAX_CACHED = 200_000
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO put in a file's place must not block the open.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_PROC_FD = Path("/proc/self/fd")


class SourceChanged(OSError):
    """The shared file changed while it was being sent."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ESTALE, "the file changed while it was sent", path)


class TooManyFiles(ValueError):
    """A get would fetch more than :data:`MAX_GET_FILES` files."""


def _not_found(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "not in the shared folder", path)


@dataclass(frozen=True, slots=True)
class _Seen:
    """What identifies a file's content as far as ``stat`` can tell."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> _Seen:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class OpenedFile:
    """A shared file opened safely; read it through :attr:`source` (its
    descriptor's entry in ``/proc/self/fd``), close it when done."""

    def __init__(self, path: str, fd: int, st: os.stat_result, real: Path) -> None:
        self.path = path
        self.fd = fd
        self.stat = st
        self._seen = _Seen.of(st)
        proc = _PROC_FD / str(fd)
        #: What the sender reads: the descriptor's own entry, never the path
        #: (without /proc: the path, and the check below makes sure that it
        #: still names the file opened).
        self.source = proc if proc.exists() else real
        self._by_path = not proc.exists()

    def check_unchanged(self) -> None:
        """Raises SourceChanged if the file changed since it was opened (or,
        read by its path, that path names another file now)."""
        if _Seen.of(os.fstat(self.fd)) != self._seen:
            raise SourceChanged(self.path)
        if self._by_path:
            try:
                now = os.stat(self.source, follow_symlinks=False)
            except OSError:
                raise SourceChanged(self.path) from None
            if _Seen.of(now) != self._seen:
                raise SourceChanged(self.path)

    def seen(self) -> _Seen:
        return self._seen

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def media_type(name: str) -> str:
    """The media type guessed from a name's extension ("" if unknown, or
    not of the form an offer allows)."""
    guessed, _ = mimetypes.guess_type(name, strict=False)
    if guessed and len(guessed) <= 255 and MEDIA_TYPE_RULE.fullmatch(guessed):
        return guessed
    return ""


class SharedFolder:
    """The directory ``root`` as shared: see the module's docstring."""

    def __init__(
        self, root: str | os.PathLike[str], cache: HashCache | None = None
    ) -> None:
        real = Path(os.path.realpath(root))
        if not real.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(root))
        self.root = real
        self.cache = cache

    # -- resolving -------------------------------------------------------------

    def _inside(self, fd: int) -> bool:
        proc = _PROC_FD / str(fd)
        try:
            where = os.readlink(proc)
        except OSError:
            return True  # no /proc: the openat walk alone vouches for it
        root = str(self.root)
        return where == root or where.startswith(root.rstrip("/") + "/")

    def _open_dir(self, parts: tuple[str, ...]) -> int:
        fd = os.open(self.root, _DIR)
        try:
            for part in parts:
                child = os.open(part, _DIR, dir_fd=fd)
                os.close(fd)
                fd = child
            if not self._inside(fd):
                raise _not_found("/".join(parts))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _parts(self, path: str, *, root: bool) -> tuple[str, ...]:
        try:
            return check_path(path, root=root)
        except LocalProtocolError:
            raise _not_found(path) from None

    def open(self, path: str) -> OpenedFile:
        """The regular file ``path`` of the share, opened.

        Raises:
            FileNotFoundError: not a regular file of the share (missing,
            hidden, a symbolic link on the way, a special file).
        """
        parts = self._parts(path, root=False)
        try:
            parent = self._open_dir(parts[:-1])
        except (FileNotFoundError, NotADirectoryError):
            raise _not_found(path) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _not_found(path) from None
            raise
        try:
            fd = os.open(parts[-1], _FILE, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
                raise _not_found(path) from None
            raise
        finally:
            os.close(parent)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not self._inside(fd):
            os.close(fd)
            raise _not_found(path)
        return OpenedFile(path, fd, st, self.root.joinpath(*parts))

    # -- listing ---------------------------------------------------------------

    def _children(self, fd: int, prefix: str) -> list[tuple[str, os.stat_result]]:
        """The shared children of the open directory ``fd``: (path, lstat)."""
        found = []
        with os.scandir(fd) as it:
            for child in it:
                path = f"{prefix}/{child.name}" if prefix else child.name
                try:
                    check_path(path)
                    st = child.stat(follow_symlinks=False)
                except (LocalProtocolError, OSError):
                    continue  # not a share path, or gone meanwhile
                if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                    found.append((path, st))
        return found

    def _walk(
        self, path: str, *, recursive: bool, limit: int, files_only: bool
    ) -> list[tuple[str, os.stat_result]]:
        """Entries under ``path``: its children (or every descendant), or
        the file itself; at most ``limit`` (else TooManyFiles)."""
        parts = self._parts(path, root=True)
        try:
            fd = self._open_dir(parts)
        except NotADirectoryError:
            opened = self.open(path)
            opened.close()
            return [(path, opened.stat)]
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP):
                raise _not_found(path) from None
            raise
        out: list[tuple[str, os.stat_result]] = []
        todo = [(fd, path)]
        try:
            while todo:
                dir_fd, prefix = todo.pop()
                try:
                    for child, st in self._children(dir_fd, prefix):
                        is_dir = stat.S_ISDIR(st.st_mode)
                        if not (files_only and is_dir):
                            out.append((child, st))
                            if len(out) > limit:
                                raise TooManyFiles(path)
                        if is_dir and recursive:
                            with contextlib.suppress(OSError):
                                sub = os.open(
                                    child.rsplit("/", 1)[-1], _DIR, dir_fd=dir_fd
                                )
                                todo.append((sub, child))
                finally:
                    os.close(dir_fd)
        finally:
            for dir_fd, _ in todo:
                os.close(dir_fd)
        return out

    def listing(self, path: str = "", *, recursive: bool = False) -> list[ShareEntry]:
        """The entries of ``path`` (a directory's children, every
        descendant when ``recursive``, or the file itself), as shared now.

        Raises:
            FileNotFoundError: ``path`` is not in the share.
            TooManyFiles: more than :data:`MAX_LISTED` entries.
        """
        entries = []
        for child, st in self._walk(
            path, recursive=recursive, limit=MAX_LISTED, files_only=False
        ):
            mtime = max(0, int(st.st_mtime))
            if stat.S_ISDIR(st.st_mode):
                entries.append(
                    ShareEntry(path=child, type=EntryType.DIRECTORY, mtime=mtime)
                )
                continue
            known = self.cache.get(child, _Seen.of(st)) if self.cache else None
            entries.append(
                ShareEntry(
                    path=child,
                    type=EntryType.FILE,
                    size=st.st_size,
                    mtime=mtime,
                    media_type=media_type(child),
                    sha256=known,
                )
            )
        return entries

    def files(self, path: str = "") -> list[tuple[str, int]]:
        """The files a get of ``path`` fetches: (path, size), in order.

        Raises:
            FileNotFoundError: ``path`` is not in the share.
            TooManyFiles: more than :data:`MAX_GET_FILES` files.
        """
        found = self._walk(path, recursive=True, limit=MAX_GET_FILES, files_only=True)
        return sorted(
            ((p, st.st_size) for p, st in found if within(p, path)),
            key=lambda f: f[0].encode("utf-8"),
        )

    def hash(self, path: str, stop: Callable[[], bool] = lambda: False) -> bytes | None:
        """Hash the file ``path`` into the cache (None if it changed while
        it was read, is gone, or ``stop()`` said so between two pieces)."""
        try:
            opened = self.open(path)
        except OSError:
            return None
        try:
            digest = hashlib.sha256()
            offset = 0
            while piece := os.pread(opened.fd, 1 << 20, offset):
                if stop():
                    return None
                digest.update(piece)
                offset += len(piece)
            opened.check_unchanged()
        except OSError:
            return None
        finally:
            opened.close()
        if self.cache is not None:
            self.cache.put(path, opened.seen(), digest.digest())
        return digest.digest()


class HashCache:
    """SHA-256 hashes of shared files, kept in a JSON file (mode 0600)."""

    def __init__(self, file: str | os.PathLike[str] | None) -> None:
        self.file = Path(file) if file is not None else None
        self._hashes: dict[str, tuple[list[int], str]] = {}
        self._dirty = False
        if self.file is not None:
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                data = json.loads(self.file.read_text("utf-8"))
                if data.get("version") == 1:
                    for key, (seen, digest) in data["hashes"].items():
                        self._hashes[str(key)] = ([int(v) for v in seen], str(digest))

    def get(self, path: str, seen: _Seen) -> bytes | None:
        found = self._hashes.get(path)
        if found is None or found[0] != _fields(seen):
            return None
        try:
            raw = bytes.fromhex(found[1])
        except ValueError:
            return None
        return raw if len(raw) == 32 else None

    def put(self, path: str, seen: _Seen, sha256: bytes) -> None:
        self._hashes.pop(path, None)
        self._hashes[path] = (_fields(seen), sha256.hex())
        while len(self._hashes) > MAX_CACHED:
            del self._hashes[next(iter(self._hashes))]
        self._dirty = True

    def save(self) -> None:
        """Write the cache (atomically), if it changed."""
        if self.file is None or not self._dirty:
            return
        data = json.dumps({"version": 1, "hashes": self._hashes, "saved": time.time()})
        tmp = self.file.with_name(f".{self.file.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(data)
        tmp.replace(self.file)
        self._dirty = False


def _fields(seen: _Seen) -> list[int]:
    return [seen.dev, seen.ino, seen.size, seen.mtime_ns, seen.ctime_ns]


def fetch_destination(directory: Path, path: str, overwrite: bool) -> Path:
    """Where a fetched share path lands under ``directory``: its components
    made safe (:func:`xfer.names.safe_parts`), parent directories created
    (never through a symbolic link or over a file); the name as it is when
    free or ``overwrite``, else numbered.

    Raises:
        DestinationExists: a component is in the way (not a plain directory).
    """
    parts = safe_parts(path)
    root = directory.resolve()
    parent = root
    for part in parts[:-1]:
        parent = parent / part
        if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
            raise DestinationExists(parent)
        parent.mkdir(mode=0o755, exist_ok=True)
    target = free_name(parent, parts[-1], overwrite)
    if target.is_dir() or target.is_symlink():
        target = free_name(parent, parts[-1], False)
    if not target.resolve().is_relative_to(root):  # pragma: no cover (safe_parts)
        raise DestinationExists(target)
    return target
