"""A shared folder on disk: only regular files and directories inside it,
resolved afresh and safely at every request."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from xfer.aio.shared import (
    HashCache,
    SharedFolder,
    SourceChanged,
    TooManyFiles,
    fetch_destination,
)
from xfer.errors import DestinationExists
from xfer.transfer.share import EntryType


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    (root / "2024" / "jan").mkdir(parents=True)
    (root / "2024" / "jan" / "a.jpg").write_bytes(b"jpeg")
    (root / "2024" / "b.txt").write_text("text")
    (root / "top.pdf").write_bytes(b"%PDF")
    (root / ".hidden").write_text("secret")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("secret")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0")
    (root / "out.txt").symlink_to(outside / "passwd")
    (root / "outdir").symlink_to(outside)
    (root / "in.txt").symlink_to(root / "top.pdf")
    os.mkfifo(root / "fifo")
    return root


def test_lists_only_regular_files_and_directories(tree: Path):
    folder = SharedFolder(tree)
    top = folder.listing()
    assert {(e.path, e.type) for e in top} == {
        ("2024", EntryType.DIRECTORY),
        ("top.pdf", EntryType.FILE),
    }
    pdf = next(e for e in top if e.path == "top.pdf")
    assert (pdf.size, pdf.media_type, pdf.sha256) == (4, "application/pdf", None)
    deep = {e.path for e in folder.listing(recursive=True)}
    assert deep == {"2024", "2024/jan", "2024/jan/a.jpg", "2024/b.txt", "top.pdf"}
    assert [e.path for e in folder.listing("2024/jan")] == ["2024/jan/a.jpg"]
    assert [e.path for e in folder.listing("top.pdf")] == ["top.pdf"]


@pytest.mark.parametrize(
    "path",
    [
        "out.txt",
        "outdir",
        "outdir/passwd",
        "in.txt",
        "fifo",
        ".hidden",
        ".git/config",
        "../outside/passwd",
        "/etc/passwd",
        "missing",
        "2024/../top.pdf",
        "2024\\b.txt",
    ],
)
def test_nothing_outside_is_served_or_listed(tree: Path, path: str):
    folder = SharedFolder(tree)
    with pytest.raises(FileNotFoundError):
        folder.open(path)
    with pytest.raises(FileNotFoundError):
        folder.listing(path)
    with pytest.raises(FileNotFoundError):
        folder.files(path)


def test_a_directory_swapped_for_a_symlink_is_not_followed(tree: Path, tmp_path: Path):
    folder = SharedFolder(tree)
    assert folder.files("2024") == [("2024/b.txt", 4), ("2024/jan/a.jpg", 4)]
    (tree / "2024").rename(tmp_path / "moved")
    (tree / "2024").symlink_to(tmp_path / "moved")
    with pytest.raises(FileNotFoundError):
        folder.files("2024")
    with pytest.raises(FileNotFoundError):
        folder.open("2024/b.txt")


def test_an_opened_file_is_read_through_its_descriptor(tree: Path):
    opened = SharedFolder(tree).open("2024/b.txt")
    try:
        opened.check_unchanged()
        (tree / "2024" / "b.txt").rename(tree / "gone.txt")
        (tree / "2024" / "b.txt").write_text("replaced")
        assert opened.source is not None
        assert opened.source.read_text() == "text"
    finally:
        opened.close()


def test_a_write_to_an_opened_file_is_seen(tree: Path):
    opened = SharedFolder(tree).open("2024/b.txt")
    try:
        stamp = opened.stat.st_mtime_ns
        with (tree / "2024" / "b.txt").open("r+") as f:
            f.write("TEXT")  # the same size
        os.utime(tree / "2024" / "b.txt", ns=(stamp, stamp))  # and the same mtime
        with pytest.raises(SourceChanged):
            opened.check_unchanged()  # the change time tells
    finally:
        opened.close()


def test_hashes_are_listed_once_known_and_forgotten_when_the_file_changes(
    tree: Path, tmp_path: Path
):
    cache = HashCache(tmp_path / "hashes.json")
    folder = SharedFolder(tree, cache)
    assert folder.hash("top.pdf") == hashlib.sha256(b"%PDF").digest()
    cache.save()
    again = SharedFolder(tree, HashCache(tmp_path / "hashes.json"))
    (entry,) = again.listing("top.pdf")
    assert entry.sha256 == hashlib.sha256(b"%PDF").digest()
    assert (tmp_path / "hashes.json").stat().st_mode & 0o777 == 0o600
    (tree / "top.pdf").write_bytes(b"%PDF-2")
    (entry,) = again.listing("top.pdf")
    assert entry.sha256 is None


def test_too_many_files(tree: Path, monkeypatch: pytest.MonkeyPatch):
    import xfer.aio.shared as shared

    monkeypatch.setattr(shared, "MAX_GET_FILES", 2)
    with pytest.raises(TooManyFiles):
        SharedFolder(tree).files("")


def test_fetch_destination_is_safe(tmp_path: Path):
    dest = tmp_path / "dest"
    dest.mkdir()
    assert fetch_destination(dest, "2024/jan/a.jpg", False) == dest / "2024/jan/a.jpg"
    assert (dest / "2024" / "jan").is_dir()
    (dest / "2024/jan/a.jpg").write_text("x")
    assert fetch_destination(dest, "2024/jan/a.jpg", False).name == "a (2).jpg"
    (dest / "evil").symlink_to(tmp_path)
    with pytest.raises(DestinationExists):
        fetch_destination(dest, "evil/x", False)


def test_without_proc_a_path_swapped_after_the_open_is_seen(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import xfer.aio.shared as shared

    monkeypatch.setattr(shared, "_PROC_FD", tmp_path / "no-proc")
    opened = SharedFolder(tree).open("2024/b.txt")
    try:
        assert opened.source == tree / "2024" / "b.txt"
        opened.check_unchanged()
        (tmp_path / "other").write_text("text")
        (tmp_path / "other").replace(tree / "2024" / "b.txt")
        with pytest.raises(SourceChanged):
            opened.check_unchanged()
    finally:
        opened.close()
