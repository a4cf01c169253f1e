"""xfer against spec/vectors/envelope, and the vectors against the spec."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, vector_params
from xfer.envelope import Opener, Suite
from xfer.envelope._parts import seal_from_parts
from xfer.errors import EnvelopeFormatError, IntegrityError

TOOLS = ROOT / "spec" / "tools"


@pytest.mark.parametrize("vector", vector_params("envelope/seal.json"))
def test_xfer_seals_each_valid_vector_exactly(vector):
    sealed = seal_from_parts(
        bytes.fromhex(vector["key"]),
        bytes.fromhex(vector["plaintext"]),
        salt=bytes.fromhex(vector["salt"]),
        transfer_id=bytes.fromhex(vector["transfer_id"]),
        suite=Suite.from_label(vector["suite"]),
        chunk_size=vector["chunk_size"],
    )
    assert sealed.hex() == vector["sealed"]


@pytest.mark.parametrize("vector", vector_params("envelope/seal.json"))
def test_xfer_opens_each_valid_vector_a_byte_at_a_time(vector):
    sealed = bytes.fromhex(vector["sealed"])
    opener = Opener(bytes.fromhex(vector["key"]))
    if len(sealed) > 20_000:  # the 64511-byte case: whole chunks suffice
        out = opener.update(sealed)
    else:
        out = b"".join(opener.update(sealed[i : i + 1]) for i in range(len(sealed)))
    assert (out + opener.finalize()).hex() == vector["plaintext"]


@pytest.mark.parametrize("vector", vector_params("envelope/invalid.json"))
def test_xfer_rejects_each_invalid_vector(vector):
    expected = {"integrity": IntegrityError, "format": EnvelopeFormatError}[
        vector["error"]
    ]
    tid = vector.get("expected_transfer_id")
    opener = Opener(
        bytes.fromhex(vector["key"]),
        transfer_id=bytes.fromhex(tid) if tid else None,
    )
    sealed = bytes.fromhex(vector["sealed"])
    with pytest.raises(expected):
        opener.update(sealed) + opener.finalize()


def test_the_independent_verifier_accepts_the_vectors():
    result = subprocess.run(
        [sys.executable, str(TOOLS / "verify_envelope_vectors.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failures" in result.stdout


def test_the_independent_verifier_does_not_import_xfer():
    source = (TOOLS / "verify_envelope_vectors.py").read_text()
    assert "import xfer" not in source
    assert "from xfer" not in source


def test_the_vectors_are_what_the_generator_makes():
    result = subprocess.run(
        [sys.executable, str(TOOLS / "generate_envelope_vectors.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
