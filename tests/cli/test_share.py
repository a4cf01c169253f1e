"""'xfer share', 'xfer ls' and 'xfer get': what they say before and after
the network (the commands end to end are in
tests/integration/test_share_cli.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from xfer_cli.commands.share import fetched_summary, listing_lines
from xfer_cli.main import EXIT_USAGE, cli

from xfer.transfer.share import EntryType, ShareEntry
from xfer.xmpp.share import FetchedFile


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["share", ".", "--with", "bob"], "'bob' is not a JID: write user@server"),
        (
            ["share", ".", "--room", "photos"],
            "'photos' is not a JID: write user@server "
            "(photos@conference.example.org, say)",
        ),
        (["get", "alice", "2024/"], "'alice' is not a JID: write user@server"),
        (
            ["ls", "alice/2024"],
            "'alice/2024' does not start with a JID: write user@server, then the "
            "path in the share if any (alice@example.org/2024, say)",
        ),
    ],
)
def test_a_name_without_a_server_says_what_a_jid_looks_like(
    env: Path, args: list[str], shown: str
) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == EXIT_USAGE
    assert result.output.startswith("xfer: error: ")
    assert shown in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_help_shows_how_the_three_commands_go_together(env: Path) -> None:
    runner = CliRunner()
    share = runner.invoke(cli, ["share", "--help"]).output
    assert "alice: xfer share ~/photos --with bob@example.org" in share
    assert "bob:  xfer get alice@example.org 2024/ --dir ~/Downloads" in share
    ls = " ".join(runner.invoke(cli, ["ls", "--help"]).output.split())
    assert "is a path in the shared folder, not an XMPP resource" in ls


def entry(
    path: str, *, sha: bytes | None = None, media: str = "text/plain"
) -> ShareEntry:
    return ShareEntry(
        path=path, type=EntryType.FILE, size=6, mtime=0, media_type=media, sha256=sha
    )


def test_a_listing_keeps_no_room_for_hashes_nobody_has() -> None:
    folder = ShareEntry(path="2024", type=EntryType.DIRECTORY)
    lines = listing_lines([folder, entry("2024/notes.txt")])
    assert lines == [
        "         -  1970-01-01 00:00  directory   -  2024/",
        "       6 B  1970-01-01 00:00  text/plain  -  2024/notes.txt",
    ]


def test_a_listing_lines_up_its_columns() -> None:
    digest = hashlib.sha256(b"hello\n").digest()
    lines = listing_lines(
        [
            entry("a.jpg", media="image/jpeg", sha=digest),
            entry("b.txt"),
        ]
    )
    assert lines[0].endswith(f"  image/jpeg  {digest.hex()}  a.jpg")
    assert lines[1].index("-  ") == lines[0].index(digest.hex())
    assert listing_lines([]) == []


def got(path: str, local: Path) -> FetchedFile:
    return FetchedFile(path=path, local=local, size=1, sha256=b"\0" * 32)


def test_the_end_of_a_fetch_says_how_many_files_and_which_were_renamed(
    tmp_path: Path,
) -> None:
    one = [got("2024/notes.txt", tmp_path / "2024" / "notes.txt")]
    assert fetched_summary(["2024"], one, tmp_path) == f"1 file fetched into {tmp_path}"
    two = [*one, got("2024/sun.jpg", tmp_path / "2024" / "sun (2).jpg")]
    assert fetched_summary(["2024"], two, tmp_path) == (
        f"2 files fetched into {tmp_path}; 1 under another name (the name was "
        "taken, or is not safe here; --overwrite replaces taken names)"
    )
    assert fetched_summary(["empty", ""], [], tmp_path) == (
        "nothing to fetch: 'empty', the shared folder holds no files"
    )


def test_share_names_the_accounts_whose_key_is_not_trusted_yet(env: Path) -> None:
    runner = CliRunner()
    fp = "A0252003 07B27F2D 0EF89428 AE02181D B972498F"
    assert runner.invoke(cli, ["trust", "bob@example.org", fp]).exit_code == 0
    # (No account is set: the command stops there, after the note.)
    result = runner.invoke(
        cli,
        ["share", str(env), "--with", "bob@example.org", "--with", "carol@example.org"],
    )
    assert result.exit_code == EXIT_USAGE
    lines = result.output.splitlines()
    assert lines[0] == (
        "note: you trust no key of carol@example.org yet: its requests are refused "
        "until you do ('xfer trust carol@example.org FINGERPRINT' or 'xfer verify "
        "carol@example.org'; no restart needed)"
    )
    assert "bob@example.org" not in result.output
    as_json = runner.invoke(cli, ["share", str(env), "--with", "carol@x.org", "--json"])
    first = json.loads(as_json.output.splitlines()[0])
    assert (first["event"], first["peer"]) == ("untrusted", "carol@x.org")
