"""The specs name code and tests by path (``xmpp/otr.py:XferOTR.send_offer``,
``tests/unit/otr/test_account.py``); every such name must exist, so that a move
or a rename cannot leave the threat model pointing at nothing."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "spec").glob("*.md"))
CODE = re.compile(r"`((?:[a-z_]+/)*[a-z_]+\.py):([A-Za-z_][A-Za-z0-9_.]*)`")
TESTS = re.compile(r"`(tests/[a-z0-9_/]+\.py)`")
PATHS = re.compile(r"`((?:xfer|cli|benchmarks|spec)/[a-z0-9_/.-]*)`")


def _code_references() -> list[tuple[str, str, str]]:
    found = []
    for spec in SPECS:
        for path, name in CODE.findall(spec.read_text(encoding="utf-8")):
            found.append((spec.name, path, name))
    return sorted(set(found))


def _test_references() -> list[tuple[str, str]]:
    found = []
    for spec in SPECS:
        for path in TESTS.findall(spec.read_text(encoding="utf-8")):
            found.append((spec.name, path))
    return sorted(set(found))


def test_the_specs_name_code() -> None:
    assert len(_code_references()) >= 10
    assert len(_test_references()) >= 10


@pytest.mark.parametrize(("spec", "path", "name"), _code_references())
def test_a_named_object_exists(spec: str, path: str, name: str) -> None:
    assert (ROOT / "xfer" / path).is_file(), f"{spec} names xfer/{path}"
    dotted = path.removesuffix(".py").replace("/", ".")
    target: object = importlib.import_module("xfer." + dotted)
    for part in name.split("."):
        assert hasattr(target, part), f"{spec} names {path}:{name}"
        target = getattr(target, part)


def _path_references() -> list[tuple[str, str]]:
    found = []
    for spec in SPECS:
        for path in PATHS.findall(spec.read_text(encoding="utf-8")):
            found.append((spec.name, path))
    return sorted(set(found))


@pytest.mark.parametrize(("spec", "path"), _path_references())
def test_a_named_path_exists(spec: str, path: str) -> None:
    assert (ROOT / path).exists(), f"{spec} names {path}"


@pytest.mark.parametrize(("spec", "path"), _test_references())
def test_a_named_test_file_exists(spec: str, path: str) -> None:
    assert (ROOT / path).is_file(), f"{spec} names {path}"
