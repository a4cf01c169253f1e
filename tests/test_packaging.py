"""Packaging: every package folder is listed, and no bare `cli` is installed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def declared() -> tuple[list[str], dict[str, str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config["packages"], config["package-dir"]


def test_the_explicit_package_list_covers_every_package_folder():
    packages, package_dir = declared()
    folder_of = {name: folder for name, folder in package_dir.items()}
    expected = set()
    for top, folder in [("xfer", "xfer"), ("xfer_cli", folder_of["xfer_cli"])]:
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            expected.add(".".join([top, *rel.parts]))
    assert set(packages) == expected


def test_no_bare_cli_module_is_importable():
    assert importlib.util.find_spec("cli") is None
    assert importlib.util.find_spec("xfer_cli") is not None


def test_the_console_script_and_module_entry_points_work():
    script = Path(sys.executable).parent / "xfer"
    for cmd in (
        [str(script), "--version"],
        [sys.executable, "-m", "xfer_cli", "--version"],
    ):
        out = subprocess.run(
            cmd, capture_output=True, text=True, check=True, timeout=60
        )
        assert out.stdout.startswith("xfer, version")


@pytest.mark.slow
def test_the_wheel_holds_exactly_xfer_and_xfer_cli(tmp_path: Path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    (wheel,) = tmp_path.glob("xfer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"xfer", "xfer_cli"}
    assert "xfer/py.typed" in names
    assert "xfer_cli/commands/offline.py" in names
