"""Generate spec/vectors/envelope/{seal,invalid}.json with xfer's own code.

Valid vectors come from xfer's deterministic seam (a fixed salt and transfer
id); invalid ones are valid streams broken in one documented way each, some of
them re-tagged with the right key so that only the rule under test fails.
``verify_envelope_vectors.py`` checks every file with an implementation of its
own that does not import xfer.

    python spec/tools/generate_envelope_vectors.py          # rewrite the files
    python spec/tools/generate_envelope_vectors.py --check  # fail if they differ
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac

from xfer.envelope import HEADER_SIZE, TAG_SIZE, EnvelopeHeader, Suite, derive_keys
from xfer.envelope._parts import seal_from_parts

OUT_DIR = Path(__file__).resolve().parent.parent / "vectors" / "envelope"


def stream(label: str, n: int) -> bytes:
    """Deterministic bytes: SHA-256 in counter mode over a label."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


KEY = stream("key", 32)
OTHER_KEY = stream("other key", 32)
SALT = stream("salt", 32)
OTHER_SALT = stream("other salt", 32)
TID = stream("transfer id", 16)


def seal(
    plaintext: bytes,
    *,
    suite: Suite = Suite.AES256_CTR_HMAC_SHA512,
    chunk_size: int = 1024,
    key: bytes = KEY,
    salt: bytes = SALT,
) -> bytes:
    return seal_from_parts(
        key, plaintext, salt=salt, transfer_id=TID, suite=suite, chunk_size=chunk_size
    )


def chunks(sealed: bytes, chunk_size: int) -> list[bytes]:
    body = sealed[HEADER_SIZE:]
    step = chunk_size + TAG_SIZE
    return [body[i : i + step] for i in range(0, len(body), step)]


def retag(header: bytes, index: int, final: bool, ciphertext: bytes) -> bytes:
    """A correct tag for a chunk, but with the index/flag we choose."""
    parsed = EnvelopeHeader.parse(header)
    keys = derive_keys(KEY, parsed)
    algorithm = (
        hashes.SHA512()
        if parsed.suite is Suite.AES256_CTR_HMAC_SHA512
        else hashes.SHA256()
    )
    mac = hmac.HMAC(keys.mac_key, algorithm)
    mac.update(header + struct.pack(">QB", index, final) + ciphertext)
    return ciphertext + mac.finalize()[:TAG_SIZE]


def valid_vectors() -> list[dict[str, Any]]:
    cases = [
        ("empty plaintext: header and one empty final chunk", 0, 1024, Suite(1)),
        ("one byte", 1, 1024, Suite(1)),
        ("one byte short of a chunk", 1023, 1024, Suite(1)),
        (
            "exactly one chunk: a full chunk, then an empty final chunk",
            1024,
            1024,
            Suite(1),
        ),
        ("one chunk and one byte", 1025, 1024, Suite(1)),
        ("three full chunks and a partial one", 3 * 1024 + 500, 1024, Suite(1)),
        ("chunk size not a multiple of 16", 2 * 1500 + 7, 1500, Suite(1)),
        ("HMAC-SHA256 suite, several chunks", 2 * 1024 + 100, 1024, Suite(2)),
        ("HMAC-SHA256 suite, empty", 0, 4096, Suite(2)),
        ("CryptoCat's IBB chunk size 64511, two chunks", 64511 + 5, 64511, Suite(1)),
    ]
    out = []
    for desc, n, chunk_size, suite in cases:
        plaintext = stream(f"plaintext {n}", n)
        sealed = seal(plaintext, suite=suite, chunk_size=chunk_size)
        out.append(
            {
                "desc": desc,
                "suite": suite.label,
                "chunk_size": chunk_size,
                "key": KEY.hex(),
                "salt": SALT.hex(),
                "transfer_id": TID.hex(),
                "plaintext": plaintext.hex(),
                "sealed": sealed.hex(),
            }
        )
    return out


def invalid_vectors() -> list[dict[str, Any]]:
    cs = 1024
    plaintext = stream("invalid base", 3 * cs + 100)
    good = seal(plaintext, chunk_size=cs)
    header, body = good[:HEADER_SIZE], good[HEADER_SIZE:]
    c = chunks(good, cs)  # 3 full chunks and a final one
    other = chunks(seal(plaintext, chunk_size=cs, salt=OTHER_SALT), cs)
    exact = seal(stream("exact", 2 * cs), chunk_size=cs)
    exact_chunks = chunks(exact, cs)

    def flip(data: bytes, at: int) -> bytes:
        b = bytearray(data)
        b[at] ^= 0x01
        return bytes(b)

    def with_header(**fields: int) -> bytes:
        h = bytearray(header)
        for offset, value in fields.items():
            h[int(offset[1:])] = value
        return bytes(h) + body

    integrity: list[tuple[str, bytes]] = [
        (
            "one bit flipped in the first chunk's ciphertext",
            flip(good, HEADER_SIZE + 10),
        ),
        ("one bit flipped in the first chunk's tag", flip(good, HEADER_SIZE + cs + 3)),
        ("one bit flipped in the final chunk", flip(good, len(good) - 40)),
        ("one bit flipped in the salt", flip(good, 20)),
        ("one bit flipped in the transfer id", flip(good, 50)),
        (
            "the final chunk removed (truncated at a chunk boundary)",
            header + b"".join(c[:3]),
        ),
        ("truncated in the middle of a full chunk", good[: HEADER_SIZE + cs + 100]),
        ("truncated inside the final chunk's tag", good[:-1]),
        ("header only, no chunk at all", header),
        ("chunks 0 and 1 swapped", header + c[1] + c[0] + c[2] + c[3]),
        ("chunk 1 duplicated", header + c[0] + c[1] + c[1] + c[2] + c[3]),
        ("chunk 1 removed", header + c[0] + c[2] + c[3]),
        (
            "chunk 1 spliced from another transfer (same key, other salt)",
            header + c[0] + other[1] + c[2] + c[3],
        ),
        ("the final chunk of another transfer", header + b"".join(c[:3]) + other[3]),
        ("a byte appended after the final chunk", good + b"\x00"),
        ("a whole extra chunk after the final chunk", good + c[1]),
        (
            "the final chunk re-tagged as not final",
            header + b"".join(c[:3]) + retag(header, 3, False, c[3][:-TAG_SIZE]),
        ),
        (
            "an empty final chunk missing after an exact multiple",
            exact[:HEADER_SIZE] + b"".join(exact_chunks[:2]),
        ),
        (
            "a full-size chunk tagged final ends the stream",
            header + b"".join(c[:2]) + retag(header, 2, True, c[2][:-TAG_SIZE]),
        ),
        (
            "chunk 1 re-tagged with index 5",
            header + c[0] + retag(header, 5, False, c[1][:-TAG_SIZE]) + c[2] + c[3],
        ),
    ]
    out: list[dict[str, Any]] = [
        {"desc": d, "key": KEY.hex(), "sealed": s.hex(), "error": "integrity"}
        for d, s in integrity
    ]
    out.append(
        {
            "desc": "the right stream opened with the wrong key",
            "key": OTHER_KEY.hex(),
            "sealed": good.hex(),
            "error": "integrity",
        }
    )
    out.append(
        {
            "desc": "the opener expects another transfer id",
            "key": KEY.hex(),
            "sealed": good.hex(),
            "expected_transfer_id": stream("other id", 16).hex(),
            "error": "integrity",
        }
    )
    fmt: list[tuple[str, bytes]] = [
        ("empty input", b""),
        ("truncated inside the header", good[: HEADER_SIZE - 1]),
        ("bad magic bytes", with_header(b0=ord("Y"))),
        ("unknown version 2", with_header(b4=2)),
        ("unknown version 0", with_header(b4=0)),
        ("unknown suite 0", with_header(b5=0)),
        ("unknown suite 3", with_header(b5=3)),
        (
            "chunk size 1023, below the minimum",
            header[:6] + struct.pack(">I", 1023) + header[10:] + body,
        ),
        (
            "chunk size 2**24 + 1, above the maximum",
            header[:6] + struct.pack(">I", 2**24 + 1) + header[10:] + body,
        ),
        ("chunk size 0", header[:6] + struct.pack(">I", 0) + header[10:] + body),
    ]
    out += [
        {"desc": d, "key": KEY.hex(), "sealed": s.hex(), "error": "format"}
        for d, s in fmt
    ]
    return out


def render(data: object) -> str:
    return json.dumps(data, indent=1) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    files = {"seal.json": valid_vectors(), "invalid.json": invalid_vectors()}
    status = 0
    for name, data in files.items():
        path = OUT_DIR / name
        text = render(data)
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(
                    f"{path.name}: differs from what the generator makes",
                    file=sys.stderr,
                )
                status = 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.name}: {len(data)} vectors")
    return status


if __name__ == "__main__":
    sys.exit(main())
