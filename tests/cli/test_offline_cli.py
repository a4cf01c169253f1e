"""The offline commands: with click's runner, and as a real process."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from xfer_cli.main import (
    COMMANDS,
    EXIT_EXISTS,
    EXIT_FORMAT,
    EXIT_INTEGRITY,
    EXIT_USAGE,
    cli,
)
from xfer_cli.progress import Progress, format_bytes


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def keyfile(tmp_path: Path, runner: CliRunner) -> Path:
    path = tmp_path / "k.key"
    result = runner.invoke(cli, ["keygen", str(path)])
    assert result.exit_code == 0, result.output
    return path


def run_xfer(
    *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "xfer_cli", *args],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=120,
    )


def test_keygen_makes_a_private_32_byte_key(keyfile: Path, runner: CliRunner):
    assert keyfile.stat().st_size == 32
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    before = keyfile.read_bytes()
    result = runner.invoke(cli, ["keygen", str(keyfile)])
    assert result.exit_code == EXIT_EXISTS
    assert keyfile.read_bytes() == before


def test_encrypt_decrypt_round_trip(tmp_path: Path, keyfile: Path, runner: CliRunner):
    src, sealed, out = tmp_path / "a.bin", tmp_path / "a.xfer", tmp_path / "a.out"
    src.write_bytes(os.urandom(200_000))
    args = ["-k", str(keyfile)]
    assert runner.invoke(cli, ["encrypt", *args, str(src), str(sealed)]).exit_code == 0
    assert runner.invoke(cli, ["decrypt", *args, str(sealed), str(out)]).exit_code == 0
    assert out.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("suite", ["aes256-ctr-hmac-sha256", "aes256-ctr-hmac-sha512"])
def test_suite_and_chunk_size_options(tmp_path, keyfile, runner, suite):
    src, sealed, out = tmp_path / "a.bin", tmp_path / "a.xfer", tmp_path / "a.out"
    src.write_bytes(os.urandom(70_000))
    k = ["-k", str(keyfile)]
    opts = ["--suite", suite, "--chunk-size", "64511", "-j", "1"]
    assert (
        runner.invoke(cli, ["encrypt", *k, *opts, str(src), str(sealed)]).exit_code == 0
    )
    assert sealed.read_bytes()[5] == (1 if suite.endswith("512") else 2)
    assert runner.invoke(cli, ["decrypt", *k, str(sealed), str(out)]).exit_code == 0
    assert out.read_bytes() == src.read_bytes()


def test_tampered_input_exits_3_and_writes_nothing(tmp_path, keyfile, runner):
    src, sealed, out = tmp_path / "a.bin", tmp_path / "a.xfer", tmp_path / "a.out"
    src.write_bytes(os.urandom(300_000))
    runner.invoke(cli, ["encrypt", "-k", str(keyfile), str(src), str(sealed)])
    data = bytearray(sealed.read_bytes())
    data[200_000] ^= 4
    sealed.write_bytes(data)
    result = runner.invoke(cli, ["decrypt", "-k", str(keyfile), str(sealed), str(out)])
    assert result.exit_code == EXIT_INTEGRITY
    assert "integrity check failed" in result.output
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if "xfer-part" in p.name] == []


def test_foreign_input_exits_4(tmp_path, keyfile, runner):
    src = tmp_path / "plain.txt"
    src.write_text("not sealed at all, but long enough to hold a header" * 3)
    out = tmp_path / "out"
    result = runner.invoke(cli, ["decrypt", "-k", str(keyfile), str(src), str(out)])
    assert result.exit_code == EXIT_FORMAT
    assert "not an xfer envelope" in result.output
    assert not out.exists()


def test_existing_output_needs_force(tmp_path, keyfile, runner):
    src, sealed = tmp_path / "a.bin", tmp_path / "a.xfer"
    src.write_bytes(b"data")
    sealed.write_bytes(b"keep me")
    result = runner.invoke(cli, ["encrypt", "-k", str(keyfile), str(src), str(sealed)])
    assert result.exit_code == EXIT_EXISTS
    assert "--force" in result.output
    assert sealed.read_bytes() == b"keep me"
    args = ["encrypt", "--force", "-k", str(keyfile), str(src), str(sealed)]
    assert runner.invoke(cli, args).exit_code == 0
    assert sealed.read_bytes() != b"keep me"


def test_in_and_out_must_differ(tmp_path, keyfile, runner):
    src = tmp_path / "a.bin"
    src.write_bytes(b"data")
    args = ["encrypt", "-f", "-k", str(keyfile), str(src), str(src)]
    result = runner.invoke(cli, args)
    assert result.exit_code == EXIT_USAGE
    assert src.read_bytes() == b"data"


@pytest.mark.parametrize("size", [0, 31, 33])
def test_a_bad_key_file_is_a_usage_error(tmp_path, runner, size):
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"k" * size)
    (tmp_path / "a").write_bytes(b"x")
    result = runner.invoke(cli, ["encrypt", "-k", str(bad), str(tmp_path / "a"), "-"])
    assert result.exit_code == EXIT_USAGE
    assert "exactly 32 bytes" in result.output


def test_a_readable_key_file_gets_a_warning(tmp_path, keyfile, runner):
    keyfile.chmod(0o644)
    (tmp_path / "a").write_bytes(b"x")
    result = runner.invoke(
        cli, ["encrypt", "-k", str(keyfile), str(tmp_path / "a"), str(tmp_path / "b")]
    )
    assert result.exit_code == 0
    assert "readable by others" in result.output


def test_missing_input_is_a_clear_error(tmp_path, keyfile, runner):
    result = runner.invoke(
        cli,
        ["encrypt", "-k", str(keyfile), str(tmp_path / "nope"), str(tmp_path / "o")],
    )
    assert result.exit_code != 0
    assert "nope" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [[], *[[name] for name in COMMANDS]])
def test_every_command_has_help(runner, command):
    result = runner.invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    if not command:
        assert "Exit codes" in result.output


def test_a_real_process_pipes_stdin_to_stdout(tmp_path, keyfile):
    data = os.urandom(2_500_000)
    sealed = run_xfer("encrypt", "-q", "-k", str(keyfile), "-", "-", stdin=data)
    assert sealed.returncode == 0, sealed.stderr
    opened = run_xfer("decrypt", "-k", str(keyfile), "-", "-", stdin=sealed.stdout)
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout == data
    assert opened.stderr == b""  # stderr is not a terminal: no progress


def test_a_real_process_reports_truncation_in_one_line(tmp_path, keyfile):
    src, sealed, out = tmp_path / "a", tmp_path / "a.xfer", tmp_path / "a.out"
    src.write_bytes(os.urandom(100_000))
    assert (
        run_xfer("encrypt", "-k", str(keyfile), str(src), str(sealed)).returncode == 0
    )
    sealed.write_bytes(sealed.read_bytes()[:-10])
    result = run_xfer("decrypt", "-k", str(keyfile), str(sealed), str(out))
    assert result.returncode == EXIT_INTEGRITY
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("xfer: error: integrity check failed")
    assert not out.exists()


def test_progress_line_shows_bytes_rate_and_eta():
    progress = Progress("sending", enabled=True)
    line = progress.line(512 * 1024, 2 * 1024 * 1024, progress._start + 1.0)
    assert "25%" in line
    assert "512.0 KiB / 2.0 MiB" in line
    assert "512.0 KiB/s" in line
    assert "ETA 0:03" in line
    assert format_bytes(0) == "0 B"
    assert format_bytes(3 * 1024**3) == "3.0 GiB"


def test_progress_is_silent_when_not_a_terminal(tmp_path):
    with (tmp_path / "log").open("w") as stream:
        progress = Progress("x", stream=stream)
        progress(10, 100)
        progress.close()
    assert (tmp_path / "log").read_text() == ""
