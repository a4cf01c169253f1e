"""Generate spec/vectors/envelope/{seal,invalid}{,_v2}.json with xfer's own code.

Valid vectors come from xfer's deterministic seam (a fixed salt and transfer
id; for format version 2, xfer's one-chunk sealer, chunk by chunk, at the
chunk lengths the vector lists); invalid ones are valid streams broken in one
documented way each, some of them re-tagged with the right key so that only
the rule under test fails.
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

from xfer.envelope import (
    HEADER_SIZE,
    TAG_SIZE,
    EnvelopeHeader,
    Suite,
    derive_keys,
    seal_chunk,
)
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
        ("unknown version 3", with_header(b4=3)),
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


WORD = struct.Struct(">I")
FINAL = 1 << 31


def seal_v2(
    plaintext: bytes,
    lengths: list[int],
    *,
    suite: Suite = Suite.AES256_CTR_HMAC_SHA512,
    chunk_size: int = 1024,
    key: bytes = KEY,
    salt: bytes = SALT,
) -> bytes:
    """A version 2 stream cut at the given chunk lengths (the last one final)."""
    assert sum(lengths) == len(plaintext)
    header = EnvelopeHeader(
        suite=suite, chunk_size=chunk_size, salt=salt, transfer_id=TID, version=2
    )
    keys = derive_keys(key, header)
    out = [keys.header_bytes]
    at = 0
    for i, n in enumerate(lengths):
        final = i == len(lengths) - 1
        out.append(seal_chunk(keys, i, plaintext[at : at + n], final=final))
        at += n
    return b"".join(out)


def chunks_v2(sealed: bytes) -> list[bytes]:
    """Split a version 2 stream's body by its chunk words."""
    body = sealed[HEADER_SIZE:]
    out = []
    while body:
        n = WORD.unpack(body[:4])[0] & (FINAL - 1)
        out.append(body[: 4 + n + TAG_SIZE])
        body = body[4 + n + TAG_SIZE :]
    return out


def retag_v2(
    header: bytes, index: int, final: bool, n: int, ciphertext: bytes
) -> bytes:
    """A correctly tagged version 2 chunk with the index, flag and length we
    choose (whatever the ciphertext's own length)."""
    parsed = EnvelopeHeader.parse(header)
    keys = derive_keys(KEY, parsed)
    word = WORD.pack(n | (FINAL if final else 0))
    mac = hmac.HMAC(keys.mac_key, hashes.SHA512())
    mac.update(header + struct.pack(">QB", index, final) + word + ciphertext)
    return word + ciphertext + mac.finalize()[:TAG_SIZE]


def valid_vectors_v2() -> list[dict[str, Any]]:
    cases: list[tuple[str, list[int], int, Suite]] = [
        ("empty plaintext: header and one empty final chunk", [0], 1024, Suite(1)),
        ("one byte, in the final chunk", [1], 1024, Suite(1)),
        (
            "flushed short chunks between full ones, then a short final chunk",
            [1024, 100, 1024, 7, 500],
            1024,
            Suite(1),
        ),
        (
            "an exact multiple without a flush ends with an empty final chunk",
            [1024, 1024, 0],
            1024,
            Suite(1),
        ),
        ("an empty final chunk right after a flush", [300, 0], 1024, Suite(1)),
        ("a short final chunk after a flush", [300, 50], 1024, Suite(1)),
        (
            "a final chunk of chunk_size bytes (valid in version 2)",
            [1024, 1024],
            1024,
            Suite(1),
        ),
        (
            "many tiny chunks, as a terminal session sends them",
            [1] * 20 + [2, 3] * 5 + [1, 0],
            1024,
            Suite(1),
        ),
        (
            "chunk size not a multiple of 16, with flushes",
            [1500, 17, 1500, 1499, 3],
            1500,
            Suite(1),
        ),
        ("HMAC-SHA256 suite, with flushes", [5, 1024, 1, 1024, 9], 1024, Suite(2)),
    ]
    out = []
    for desc, lengths, chunk_size, suite in cases:
        plaintext = stream(f"v2 plaintext {lengths}", sum(lengths))
        sealed = seal_v2(plaintext, lengths, suite=suite, chunk_size=chunk_size)
        out.append(
            {
                "desc": desc,
                "version": 2,
                "suite": suite.label,
                "chunk_size": chunk_size,
                "key": KEY.hex(),
                "salt": SALT.hex(),
                "transfer_id": TID.hex(),
                "chunks": lengths,
                "plaintext": plaintext.hex(),
                "sealed": sealed.hex(),
            }
        )
    return out


def invalid_vectors_v2() -> list[dict[str, Any]]:
    cs = 1024
    lengths = [1024, 100, 1024, 7, 300]
    plaintext = stream("v2 invalid base", sum(lengths))
    good = seal_v2(plaintext, lengths)
    header = good[:HEADER_SIZE]
    c = chunks_v2(good)  # full, flushed 100, full, flushed 7, final 300
    other = chunks_v2(seal_v2(plaintext, lengths, salt=OTHER_SALT))
    v1 = seal(plaintext, chunk_size=cs)  # same key, salt, transfer id
    v1_chunks = chunks(v1, cs)
    start_1 = HEADER_SIZE + len(c[0])  # where chunk 1 (flushed, 100 bytes) starts

    def flip(data: bytes, at: int, mask: int = 0x01) -> bytes:
        b = bytearray(data)
        b[at] ^= mask
        return bytes(b)

    def body(*parts: bytes) -> bytes:
        return header + b"".join(parts)

    def ct(chunk: bytes) -> bytes:
        return chunk[4:-TAG_SIZE]

    integrity: list[tuple[str, bytes]] = [
        ("one bit flipped in a flushed chunk's ciphertext", flip(good, start_1 + 10)),
        ("one bit flipped in a flushed chunk's tag", flip(good, start_1 + 4 + 100 + 3)),
        (
            "a flipped length byte: the flushed chunk's length 100 becomes 101",
            flip(good, start_1 + 3),
        ),
        (
            "a flipped length byte: the flushed chunk's length 100 becomes 96",
            flip(good, start_1 + 3, 0x04),
        ),
        (
            "the final bit set on a flushed chunk",
            flip(good, start_1, 0x80),
        ),
        (
            "the final bit cleared on the final chunk",
            flip(good, len(good) - len(c[4]), 0x80),
        ),
        ("truncated right after a flushed chunk", body(*c[:4])),
        ("truncated after the first flushed chunk", body(*c[:2])),
        ("truncated inside a chunk word", body(*c[:4]) + c[4][:2]),
        ("truncated inside a flushed chunk", body(*c[:3]) + c[3][:20]),
        ("truncated inside the final chunk's tag", good[:-1]),
        ("header only, no chunk at all", header),
        ("flushed chunks 1 and 3 swapped", body(c[0], c[3], c[2], c[1], c[4])),
        ("full chunks 0 and 2 swapped", body(c[2], c[1], c[0], c[3], c[4])),
        ("a flushed chunk duplicated", body(c[0], c[1], c[1], c[2], c[3], c[4])),
        ("a flushed chunk removed", body(c[0], c[2], c[3], c[4])),
        (
            "a flushed chunk moved from another stream (same key, other salt)",
            body(c[0], other[1], *c[2:]),
        ),
        ("the final chunk of another stream", body(*c[:4], other[4])),
        (
            "a version 1 chunk spliced into a version 2 stream (same key, salt, id)",
            body(WORD.pack(cs) + v1_chunks[0], *c[1:]),
        ),
        (
            "a version 2 chunk spliced into a version 1 stream (same key, salt, id)",
            v1[:HEADER_SIZE] + b"".join(v1_chunks[:3]) + ct(c[4]) + c[4][-TAG_SIZE:],
        ),
        (
            "version 1 header on a version 2 stream",
            good[:4] + b"\x01" + good[5:],
        ),
        ("a byte after the final chunk", good + b"\x00"),
        (
            "a correctly tagged chunk after the final chunk",
            good + retag_v2(header, 5, False, 5, bytes(5)),
        ),
        (
            "the final chunk re-tagged as not final: no final chunk",
            body(*c[:4], retag_v2(header, 4, False, 300, ct(c[4]))),
        ),
        (
            "a flushed chunk re-tagged as final, chunks after it",
            body(c[0], retag_v2(header, 1, True, 100, ct(c[1])), *c[2:]),
        ),
        (
            "a flushed chunk re-tagged with index 3",
            body(c[0], retag_v2(header, 3, False, 100, ct(c[1])), *c[2:]),
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
    # A version 1 stream under a version 2 header: its first 4 ciphertext
    # bytes are read as a chunk word. Which error follows depends on them;
    # section 5, step 8.1 says which.
    relabelled = v1[:4] + b"\x02" + v1[5:]
    first = WORD.unpack(relabelled[HEADER_SIZE : HEADER_SIZE + 4])[0]
    bad_word = (first & (FINAL - 1)) > cs or first == 0
    fmt: list[tuple[str, bytes]] = [
        (
            "a flipped length byte: the flushed chunk's length 100 becomes 2**16 + 100",
            flip(good, start_1 + 1),
        ),
        (
            "a chunk length of 1025, above the chunk size (re-tagged)",
            body(c[0], retag_v2(header, 1, False, 1025, bytes(1025)), *c[2:]),
        ),
        (
            "a final chunk of 1025 bytes, above the chunk size (re-tagged)",
            body(*c[:4], retag_v2(header, 4, True, 1025, bytes(1025))),
        ),
        (
            "a chunk length of 2**31 - 1, before that many bytes arrive",
            body(c[0]) + WORD.pack(2**31 - 1) + bytes(40),
        ),
        (
            "an empty chunk that is not final (re-tagged)",
            body(c[0], retag_v2(header, 1, False, 0, b""), *c[1:]),
        ),
        ("truncated inside the header", good[: HEADER_SIZE - 1]),
    ]
    out += [
        {"desc": d, "key": KEY.hex(), "sealed": s.hex(), "error": "format"}
        for d, s in fmt
    ]
    out.append(
        {
            "desc": "version 2 header on a version 1 stream: its first ciphertext "
            + (
                "bytes read as a chunk length above the chunk size"
                if bad_word
                else "bytes read as a chunk word, and the tag fails"
            ),
            "key": KEY.hex(),
            "sealed": relabelled.hex(),
            "error": "format" if bad_word else "integrity",
        }
    )
    return out


def render(data: object) -> str:
    return json.dumps(data, indent=1) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    files = {
        "seal.json": valid_vectors(),
        "invalid.json": invalid_vectors(),
        "seal_v2.json": valid_vectors_v2(),
        "invalid_v2.json": invalid_vectors_v2(),
    }
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
