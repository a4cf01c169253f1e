"""A file written so that it appears whole, or not at all: :class:`AtomicWriter`.

The plaintext of a transfer, or of a file opened with :mod:`xfer.aio.files`,
goes to a temporary file beside the destination (same directory, so the
final rename is atomic), mode 0600. Only on :meth:`AtomicWriter.commit`,
once the caller has verified everything, is it flushed, fsynced, checked and
renamed into place, and the directory fsynced; on any failure it is removed
(or, for a resumable transfer, kept with its verified prefix), and an
existing destination is left untouched.

Files are opened, synced and renamed in worker threads, so that the event
loop never waits for the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import os
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

import aiofiles.os
from aiofiles.threadpool.binary import AsyncBufferedIOBase

from xfer.aio.partial import Partial, adoptable, create_private, temp_name
from xfer.errors import DestinationExists, IntegrityError

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

__all__ = ["SYNC_EVERY", "AtomicWriter", "hash_prefix"]

#: An :class:`AtomicWriter` starts writing back to the disk after this many
#: bytes, in the background, rather than all at the final fsync.
SYNC_EVERY = 32 * 1024 * 1024
#: Bytes of a kept prefix read at a time when it is hashed.
_PREFIX_PIECE = 4 * 1024 * 1024


_F = TypeVar("_F", bound=BinaryIO)


async def _opened(opener: Callable[[], _F], undo: Callable[[], None]) -> _F:
    """Run the blocking ``opener`` in a thread and return the file it opened.

    Cancelled while the thread runs, the thread still finishes: the file it
    opens is then closed and ``undo`` run (for instance, removing a file
    just created), instead of leaving an orphaned file object whose
    collection would close a descriptor number that may by then be reused.
    """
    task = asyncio.ensure_future(asyncio.to_thread(opener))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            (await task).close()
            undo()
        raise


def hash_prefix(fd: int, length: int, digest: hashlib._Hash) -> None:
    """Feed the first ``length`` bytes of the open file ``fd`` to ``digest``
    (blocking; ``pread``, so the file's offset does not move).

    Raises:
        IntegrityError: the file holds fewer bytes.
    """
    done = 0
    while done < length:
        piece = os.pread(fd, min(length - done, _PREFIX_PIECE), done)
        if not piece:
            raise IntegrityError  # the file lost its prefix
        digest.update(piece)
        done += len(piece)


def _hash_and_write(
    file: BinaryIO | None, data: bytes | bytearray | memoryview, digest: hashlib._Hash
) -> None:
    """Feed ``data`` to ``digest`` and write all of it to ``file`` (blocking;
    both release the GIL for large data)."""
    assert file is not None
    digest.update(data)
    file.write(data)


#: Which file a descriptor or a name is: (device, inode).
_Identity = tuple[int, int]


def _identity(st: os.stat_result) -> _Identity:
    return st.st_dev, st.st_ino


def _unlink_if(path: Path, ident: _Identity | None) -> None:
    """Remove ``path`` if it is still the file ``ident`` (blocking): the
    name may have been given to another file meanwhile, not ours to remove."""
    with contextlib.suppress(OSError):
        if ident is not None and _identity(path.lstat()) == ident:
            path.unlink()


class AtomicWriter:
    """Write a file so that it appears whole, or not at all.

    Use as an async context manager; call :meth:`commit` once everything is
    written and verified. Leaving the block without a commit (an exception,
    a cancellation) removes the temporary file.

    A resumed temporary file (a ``partial`` with verified bytes) is opened
    once, without following a symlink, and taken up only if it is one made
    here (:func:`~xfer.aio.partial.adoptable`). Its prefix is read through
    that descriptor, which then writes the rest (:meth:`prefix_digest` is
    the SHA-256 of what was read), and before the rename the prefix is read
    once more, through it again, and must hash the same; the file must hold
    exactly the bytes written and still be the one under the temporary name.

    Args:
        dest: the final path.
        overwrite: replace an existing ``dest``; otherwise committing raises
            :class:`DestinationExists` if ``dest`` exists by then (checked
            atomically, with ``link``).

    Raises:
        DestinationExists: on entry or on commit, if ``dest`` exists and
            ``overwrite`` is false.
        IntegrityError: on entry, a resumed temporary file is not one made
            here or lacks its prefix; on commit, it changed meanwhile
            (nothing is renamed into place).
    """

    def __init__(
        self,
        dest: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        partial: Partial | None = None,
        keep: Callable[[BaseException | None], bool] | None = None,
    ) -> None:
        self.dest = Path(dest)
        self.overwrite = overwrite
        #: With a partial record, the temporary file can outlive a failure:
        #: its state file is updated after every background sync, and
        #: ``keep(exc)`` decides on the way out whether to leave both for a
        #: later resume (they are removed otherwise, or once committed).
        self.partial = partial
        self._keep = keep
        self.temp_path = partial.part if partial is not None else temp_name(self.dest)
        #: Bytes in the temporary file (a resumed one starts with its prefix).
        self.written = 0
        self._file: AsyncBufferedIOBase | None = None
        self._raw: BinaryIO | None = None  # the file under _file
        self._committed = False
        self._kept_partial = False
        self._unsynced = 0
        self._sync: asyncio.Future[None] | None = None
        self._committing: asyncio.Future[None] | None = None
        #: The temporary file we opened (to tell it from one put in its place).
        self._ident: _Identity | None = None
        #: SHA-256 of the resumed prefix, as read through our descriptor,
        #: and its length.
        self._prefix = hashlib.sha256()
        self._start = 0

    async def __aenter__(self) -> AtomicWriter:
        if not self.overwrite and self.dest.exists():
            raise DestinationExists(self.dest)
        start = self.partial.state.verified if self.partial is not None else 0
        self._start = start  # (the partial's count moves on as data is kept)
        temp = self.temp_path
        made: list[_Identity] = []  # by the opener thread, once it has a file

        def undo() -> None:  # a fresh temporary file goes; a kept prefix stays
            if not start:
                _unlink_if(temp, made[0] if made else None)

        def opener() -> BinaryIO:  # blocking
            fd = _open_prefix(temp, start) if start else create_private(temp)
            try:
                made.append(_identity(os.fstat(fd)))
                if start:  # the verified prefix, through this very descriptor
                    hash_prefix(fd, start, self._prefix)
                    os.lseek(fd, start, os.SEEK_SET)
                return open(fd, "wb")
            except BaseException:  # failed: leave nothing behind
                os.close(fd)
                undo()
                raise

        raw = await _opened(opener, undo)
        self._raw = raw
        self._file = AsyncBufferedIOBase(raw, asyncio.get_running_loop(), None)
        self._ident = made[0]
        self.written = start
        return self

    def prefix_digest(self) -> hashlib._Hash:
        """A SHA-256 context that has seen the resumed prefix (nothing for a
        fresh file), as read through the descriptor that writes the rest:
        continue it with the new data to hash the whole file."""
        return self._prefix.copy()

    async def write(
        self,
        data: bytes | bytearray | memoryview,
        *,
        digest: hashlib._Hash | None = None,
    ) -> None:
        """Append to the temporary file; with ``digest``, feed ``data`` to it
        too, in the same worker thread (one hop for both, off the event loop).

        Every :data:`SYNC_EVERY` bytes, the data written so far starts going
        to the disk in the background (``fdatasync`` in a thread), so that the
        fsync before the rename has little left to do; with a partial record,
        its state file is updated once that sync is done.
        """
        assert self._file is not None, "use AtomicWriter as an async context manager"
        if digest is None:
            await self._file.write(data)
        else:
            await asyncio.to_thread(_hash_and_write, self._raw, data, digest)
        self.written += len(data)
        self._unsynced += len(data)
        if self._unsynced >= SYNC_EVERY and (self._sync is None or self._sync.done()):
            if self._sync is not None:
                self._sync.result()  # a failed background sync fails the write
            self._unsynced = 0
            await self._file.flush()
            self._sync = asyncio.ensure_future(
                self._durable(self._file.fileno(), self.written)
            )

    async def _durable(self, fd: int, upto: int) -> None:
        await asyncio.to_thread(os.fdatasync, fd)
        if self.partial is not None:
            await asyncio.to_thread(self.partial.save, upto)

    async def _settle_sync(self) -> None:
        if self._sync is not None:
            sync, self._sync = self._sync, None
            await sync

    @property
    def committed(self) -> bool:
        """Whether the file is in place (:meth:`commit` finished)."""
        return self._committed

    async def commit(self) -> None:
        """Flush, fsync, and move the temporary file into place.

        Once begun, committing finishes even if the caller is cancelled
        meanwhile (then the cancellation follows; :attr:`committed` says
        whether the file went into place): a half-done commit would leave
        the caller unsure whether the file is there.
        """
        assert self._file is not None, "use AtomicWriter as an async context manager"
        self._committing = asyncio.ensure_future(self._commit())
        await asyncio.shield(self._committing)

    async def _commit(self) -> None:
        assert self._file is not None
        await self._settle_sync()
        await self._file.flush()
        await asyncio.to_thread(os.fsync, self._file.fileno())
        await asyncio.to_thread(self._check, self._file.fileno())
        await self._file.close()
        self._file = None
        if self.overwrite:
            await aiofiles.os.replace(self.temp_path, self.dest)
        else:
            try:
                await aiofiles.os.link(self.temp_path, self.dest)
            except FileExistsError:
                raise DestinationExists(self.dest) from None
            await aiofiles.os.remove(self.temp_path)
        self._committed = True
        if self.partial is not None:
            await asyncio.to_thread(self.partial.remove)
        await asyncio.to_thread(_fsync_dir, self.dest.parent)

    def _check(self, fd: int) -> None:
        """Before the rename (blocking): the file under the temporary name is
        still ours, holds exactly what was written, and its prefix is still
        what was read (and hashed) when it was opened."""
        st = os.fstat(fd)
        if st.st_size != self.written or st.st_nlink != 1:
            raise IntegrityError
        start = self._start
        if start:
            again = hashlib.sha256()
            hash_prefix(fd, start, again)
            if not hmac.compare_digest(again.digest(), self._prefix.digest()):
                raise IntegrityError
        try:
            named = _identity(self.temp_path.lstat())
        except OSError:
            raise IntegrityError from None
        if named != self._ident:
            raise IntegrityError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._committing is not None and not self._committing.done():
                # Cancelled while committing: let the commit finish first.
                with contextlib.suppress(Exception):
                    await self._committing
            try:
                with contextlib.suppress(OSError):
                    await self._settle_sync()  # a thread: let it end first
            finally:  # even when cancelled while waiting for it
                if self._file is not None:
                    file, self._file = self._file, None
                    # Closing flushes: on a full disk that fails again. The
                    # temporary file goes regardless (the first error wins).
                    # Closing runs in a thread, which finishes even if we
                    # are cancelled meanwhile.
                    with contextlib.suppress(OSError):
                        await asyncio.shield(file.close())
            if not self._committed and await self._kept(exc):
                return
        finally:
            if not self._committed and not self._kept_partial:
                await asyncio.to_thread(_unlink_if, self.temp_path, self._ident)
                if self.partial is not None:
                    await asyncio.to_thread(self.partial.remove)

    async def _kept(self, exc: BaseException | None) -> bool:
        """Leave the verified prefix for a resume, if ``keep`` says so."""
        partial = self.partial
        if partial is None or self._keep is None or self.written == 0:
            return False
        if not self._keep(exc):
            return False
        try:
            if not await asyncio.to_thread(_sync_if, self.temp_path, self._ident):
                return False  # not the file we wrote any more
            await asyncio.to_thread(partial.save, self.written)
        except OSError:
            return False
        self._kept_partial = True
        return True


#: Why a kept temporary file may fail to open: it is not one to go on with.
_NOT_A_PREFIX = frozenset(
    {errno.ENOENT, errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EACCES, errno.EPERM}
)


def _open_prefix(path: Path, start: int) -> int:
    """Open a kept temporary file to go on with it after ``start`` bytes, if
    it is one made here; cut off whatever follows the prefix (blocking)."""
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in _NOT_A_PREFIX:  # gone, a symlink now, not a file
            raise IntegrityError from None
        raise
    try:
        st = os.fstat(fd)
        if not adoptable(st) or st.st_size < start:  # not ours, or too short
            raise IntegrityError
        os.ftruncate(fd, start)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _sync_if(path: Path, ident: _Identity | None) -> bool:
    """fsync ``path`` if it is still the file ``ident``; whether it was."""
    flags = os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        if _identity(os.fstat(fd)) != ident:
            return False
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
