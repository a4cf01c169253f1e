"""The rules between the layers (ARCHITECTURE.md), checked on the source."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import xfer

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "xfer"
#: The sans-I/O cores. Packages not written yet are checked once they exist.
CORES = [
    "envelope",
    "otr",
    "jingle",
    "framing",
    "errors.py",
    "_buffer.py",
    "names.py",
    "display.py",
]
FORBIDDEN_IN_CORES = {
    "asyncio",
    "aiofiles",
    "slixmpp",
    "click",
    "xfer.aio",
    "xfer.xmpp",
    "socket",
    "selectors",
    "threading",
    "xfer_cli",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def python_files(target: Path) -> list[Path]:
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


def core_files() -> list[Path]:
    return [
        f
        for core in CORES
        if (LIBRARY / core).exists()
        for f in python_files(LIBRARY / core)
    ]


def violates(module: str, forbidden: set[str]) -> bool:
    return any(module == f or module.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_cores_do_no_io(path: Path):
    bad = {m for m in imported_modules(path) if violates(m, FORBIDDEN_IN_CORES)}
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize(
    "path",
    python_files(LIBRARY / "envelope"),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_the_envelope_needs_only_cryptography_and_the_standard_library(path: Path):
    for module in imported_modules(path):
        top = module.split(".")[0]
        assert (
            top in {"cryptography", "xfer", "__future__"}
            or top in sys.stdlib_module_names
        ), module
        if top == "xfer":
            assert module.startswith(("xfer.envelope", "xfer.errors")), module


@pytest.mark.parametrize(
    "path", python_files(LIBRARY), ids=lambda p: str(p.relative_to(ROOT))
)
def test_the_library_never_imports_the_command_line(path: Path):
    assert not {m for m in imported_modules(path) if violates(m, {"xfer_cli", "click"})}


def test_public_api_is_sorted_and_complete():
    assert list(xfer.__all__) == sorted(xfer.__all__)
    public = {n for n in vars(xfer) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(xfer.__all__)
    for name in xfer.__all__:
        assert hasattr(xfer, name)
