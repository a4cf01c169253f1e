"""xfer against spec/vectors/envelope, and the vectors against the spec."""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys

import pytest

from tests.conftest import ROOT, vector_params
from xfer.envelope import EnvelopeHeader, Opener, Suite, derive_keys, seal_chunk
from xfer.envelope._parts import seal_from_parts, sealer_from_parts
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


@pytest.mark.parametrize("vector", vector_params("envelope/seal_v2.json"))
def test_xfer_seals_each_v2_vector_chunk_by_chunk(vector):
    header = EnvelopeHeader(
        suite=Suite.from_label(vector["suite"]),
        chunk_size=vector["chunk_size"],
        salt=bytes.fromhex(vector["salt"]),
        transfer_id=bytes.fromhex(vector["transfer_id"]),
        version=2,
    )
    keys = derive_keys(bytes.fromhex(vector["key"]), header)
    plaintext = bytes.fromhex(vector["plaintext"])
    out = [keys.header_bytes]
    at = 0
    for i, n in enumerate(vector["chunks"]):
        final = i == len(vector["chunks"]) - 1
        out.append(seal_chunk(keys, i, plaintext[at : at + n], final=final))
        at += n
    assert b"".join(out).hex() == vector["sealed"]


V2_STREAMABLE = [
    p
    for p in vector_params("envelope/seal_v2.json")
    if p.values[0]["chunks"][-1] < p.values[0]["chunk_size"]
]


@pytest.mark.parametrize("vector", V2_STREAMABLE)
def test_the_streaming_sealer_flushes_each_v2_vector_exactly(vector):
    """Update and flush where the vector's chunks end; a full chunk comes
    out of update alone, as data arrives."""
    chunk_size = vector["chunk_size"]
    sealer = sealer_from_parts(
        bytes.fromhex(vector["key"]),
        salt=bytes.fromhex(vector["salt"]),
        transfer_id=bytes.fromhex(vector["transfer_id"]),
        suite=Suite.from_label(vector["suite"]),
        chunk_size=chunk_size,
        version=2,
    )
    plaintext = bytes.fromhex(vector["plaintext"])
    out = b""
    at = 0
    for n in vector["chunks"][:-1]:
        out += sealer.update(plaintext[at : at + n])
        at += n
        if n < chunk_size:
            out += sealer.flush()
        assert sealer.buffered == 0
    out += sealer.update(plaintext[at:]) + sealer.finalize()
    assert out.hex() == vector["sealed"]


def test_one_v2_vector_has_a_final_chunk_the_streaming_sealer_never_makes():
    assert len(V2_STREAMABLE) == len(vector_params("envelope/seal_v2.json")) - 1


@pytest.mark.parametrize("vector", vector_params("envelope/seal_v2.json"))
def test_xfer_opens_each_v2_vector_releasing_each_chunk_when_whole(vector):
    sealed = bytes.fromhex(vector["sealed"])
    plaintext = bytes.fromhex(vector["plaintext"])
    opener = Opener(bytes.fromhex(vector["key"]))
    out = b""
    ends = []
    for i in range(len(sealed)):
        got = opener.update(sealed[i : i + 1])
        if got:
            ends.append(len(out) + len(got))
        out += got
    assert opener.finished
    assert out + opener.finalize() == plaintext
    sizes = [n for n in vector["chunks"] if n]
    assert ends == list(itertools.accumulate(sizes))


@pytest.mark.parametrize(
    "vector",
    vector_params("envelope/invalid.json") + vector_params("envelope/invalid_v2.json"),
)
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


@pytest.mark.parametrize("vector", vector_params("envelope/invalid_v2.json"))
def test_xfer_releases_only_a_verified_prefix_of_an_invalid_v2_vector(vector):
    """Fed a byte at a time, whatever came out before the failure is whole
    chunks of the stream the vector was made from."""
    tid = vector.get("expected_transfer_id")
    opener = Opener(
        bytes.fromhex(vector["key"]),
        transfer_id=bytes.fromhex(tid) if tid else None,
    )
    sealed = bytes.fromhex(vector["sealed"])
    released: list[bytes] = []
    with pytest.raises((IntegrityError, EnvelopeFormatError)):
        feed_byte_by_byte(opener, sealed, released)
    out = b"".join(released)
    assert opener.released == len(out)
    assert out in PREFIXES


def feed_byte_by_byte(opener: Opener, sealed: bytes, released: list[bytes]) -> None:
    for i in range(len(sealed)):
        released.append(opener.update(sealed[i : i + 1]))
    released.append(opener.finalize())


def _vector_stream(label: str, n: int) -> bytes:
    """The generator's deterministic bytes (SHA-256 in counter mode)."""
    out = b"".join(
        hashlib.sha256(f"{label}/{counter}".encode()).digest()
        for counter in range(n // 32 + 1)
    )
    return out[:n]


def _v2_invalid_base_prefixes() -> set[bytes]:
    """The plaintext prefixes at chunk ends of the stream the invalid v2
    vectors break (``invalid_vectors_v2`` in the generator: chunks of 1024,
    100, 1024, 7 and 300 bytes), and of the version 1 stream of the same
    plaintext that some of them splice from."""
    base = _vector_stream("v2 invalid base", 1024 + 100 + 1024 + 7 + 300)
    v2_ends = itertools.accumulate([1024, 100, 1024, 7, 300])
    v1_ends = [1024, 2048, 3072]
    return {b""} | {base[:end] for end in (*v2_ends, *v1_ends)}


PREFIXES = _v2_invalid_base_prefixes()


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
