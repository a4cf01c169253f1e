"""Check spec/vectors/envelope/*.json against spec/envelope.md, without xfer.

This is a second, deliberately plain implementation of the format, both
versions (whole buffers, no streaming), written from the spec with the
standard library and ``cryptography``'s primitives only. For each valid
vector it seals the plaintext (a version 2 vector lists its chunk lengths)
and must get the sealed bytes exactly, then opens them; for each invalid
vector it must reject the input with the named kind of error.

    python spec/tools/verify_envelope_vectors.py [VECTOR_DIR]

Exit status 0 when every vector checks out.
"""

from __future__ import annotations

import hmac as std_hmac
import json
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Spec section 2.1 and 3.
HEADER = struct.Struct(">4sBBI32s16s")
SUITES = {
    1: ("aes256-ctr-hmac-sha512", hashes.SHA512),
    2: ("aes256-ctr-hmac-sha256", hashes.SHA256),
}
LABEL = b"xfer envelope keys\x00"
TAG = 32
WORD = 4  # section 2.4: the chunk word of version 2
TOP = 2**31


class FormatError(Exception):
    pass


class IntegrityFailure(Exception):
    pass


def keys(
    ikm: bytes, version: int, suite: int, salt: bytes, tid: bytes
) -> tuple[bytes, bytes, bytes, type]:
    hash_cls = SUITES[suite][1]
    h = hash_cls.digest_size
    okm = HKDF(
        hash_cls(), 32 + h + 8, salt, LABEL + bytes([version, suite]) + tid
    ).derive(ikm)
    return okm[:32], okm[32 : 32 + h], okm[32 + h :], hash_cls


def tag(
    mac_key: bytes,
    hash_cls: type,
    header: bytes,
    index: int,
    final: bool,
    ct: bytes,
    word: bytes = b"",
) -> bytes:
    m = hmac.HMAC(mac_key, hash_cls())
    m.update(header + index.to_bytes(8, "big") + bytes([final]) + word + ct)
    return m.finalize()[:TAG]


def ctr(
    enc_key: bytes, nonce: bytes, chunk_size: int, index: int, data: bytes
) -> bytes:
    blocks = (chunk_size + 15) // 16
    counter = nonce + (index * blocks).to_bytes(8, "big")
    return Cipher(algorithms.AES(enc_key), modes.CTR(counter)).encryptor().update(data)


def parse_header(data: bytes) -> tuple[bytes, int, int, int, bytes, bytes]:
    if len(data) < HEADER.size:
        raise FormatError("short header")
    magic, version, suite, chunk_size, salt, tid = HEADER.unpack(data[: HEADER.size])
    if magic != b"XFER":
        raise FormatError("magic")
    if version not in (1, 2):
        raise FormatError("version")
    if suite not in SUITES:
        raise FormatError("suite")
    if not 1024 <= chunk_size <= 16 * 1024 * 1024:
        raise FormatError("chunk size")
    return data[: HEADER.size], version, suite, chunk_size, salt, tid


def open_sealed(ikm: bytes, sealed: bytes, expected_tid: bytes | None = None) -> bytes:
    header, version, suite, chunk_size, salt, tid = parse_header(sealed)
    if expected_tid is not None and tid != expected_tid:
        raise IntegrityFailure("transfer id")
    enc_key, mac_key, nonce, hash_cls = keys(ikm, version, suite, salt, tid)
    body = sealed[HEADER.size :]
    if version == 2:
        return open_v2(header, chunk_size, enc_key, mac_key, nonce, hash_cls, body)
    full = chunk_size + TAG
    # Every chunk of exactly `full` bytes is not final; what remains after them
    # (fewer than `full` bytes, at least a tag) is the final chunk.
    n_full = len(body) // full
    rest = body[n_full * full :]
    if len(rest) < TAG:
        raise IntegrityFailure("no final chunk")
    out = []
    pieces = [(i, body[i * full : (i + 1) * full], False) for i in range(n_full)]
    pieces.append((n_full, rest, True))
    for index, piece, final in pieces:
        ct, t = piece[:-TAG], piece[-TAG:]
        if not std_hmac.compare_digest(
            tag(mac_key, hash_cls, header, index, final, ct), t
        ):
            raise IntegrityFailure(f"chunk {index}")
        out.append(ctr(enc_key, nonce, chunk_size, index, ct))
    return b"".join(out)


def open_v2(
    header: bytes,
    chunk_size: int,
    enc_key: bytes,
    mac_key: bytes,
    nonce: bytes,
    hash_cls: type,
    body: bytes,
) -> bytes:
    """Section 5, steps 8 and 9: chunk by chunk, by the chunk words."""
    out = []
    at = 0
    index = 0
    while True:
        if len(body) - at < WORD:
            raise IntegrityFailure("cut before a chunk word, or inside one")
        word = body[at : at + WORD]
        value = int.from_bytes(word, "big")
        final, n = value >= TOP, value % TOP
        if n > chunk_size or (n == 0 and not final):
            raise FormatError("chunk word")
        if index >= 2**32 or (not final and index == 2**32 - 1):
            raise IntegrityFailure("too many chunks")
        if len(body) - at < WORD + n + TAG:
            raise IntegrityFailure("cut inside a chunk")
        ct = body[at + WORD : at + WORD + n]
        t = body[at + WORD + n : at + WORD + n + TAG]
        if not std_hmac.compare_digest(
            tag(mac_key, hash_cls, header, index, final, ct, word), t
        ):
            raise IntegrityFailure(f"chunk {index}")
        out.append(ctr(enc_key, nonce, chunk_size, index, ct))
        at += WORD + n + TAG
        index += 1
        if final:
            if at != len(body):
                raise IntegrityFailure("bytes after the final chunk")
            return b"".join(out)


def seal_v2(
    ikm: bytes,
    suite: int,
    chunk_size: int,
    salt: bytes,
    tid: bytes,
    plaintext: bytes,
    lengths: list[int],
) -> bytes:
    """Section 4 for version 2, cutting the plaintext at the given lengths."""
    header = HEADER.pack(b"XFER", 2, suite, chunk_size, salt, tid)
    enc_key, mac_key, nonce, hash_cls = keys(ikm, 2, suite, salt, tid)
    out = [header]
    at = 0
    for index, n in enumerate(lengths):
        final = index == len(lengths) - 1
        assert n <= chunk_size
        assert final or n > 0
        word = (TOP * final + n).to_bytes(WORD, "big")
        ct = ctr(enc_key, nonce, chunk_size, index, plaintext[at : at + n])
        out.append(word + ct + tag(mac_key, hash_cls, header, index, final, ct, word))
        at += n
    assert at == len(plaintext)
    return b"".join(out)


def seal(
    ikm: bytes, suite: int, chunk_size: int, salt: bytes, tid: bytes, plaintext: bytes
) -> bytes:
    header = HEADER.pack(b"XFER", 1, suite, chunk_size, salt, tid)
    enc_key, mac_key, nonce, hash_cls = keys(ikm, 1, suite, salt, tid)
    out = [header]
    n_full = len(plaintext) // chunk_size  # the final chunk is always shorter
    for index in range(n_full + 1):
        final = index == n_full
        p = (
            plaintext[index * chunk_size : (index + 1) * chunk_size]
            if not final
            else plaintext[n_full * chunk_size :]
        )
        ct = ctr(enc_key, nonce, chunk_size, index, p)
        out.append(ct + tag(mac_key, hash_cls, header, index, final, ct))
    return b"".join(out)


def main() -> int:
    folder = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parent.parent / "vectors" / "envelope"
    )
    failures = n_valid = n_invalid = 0
    for name in ("seal.json", "seal_v2.json"):
        valid = json.loads((folder / name).read_text())
        n_valid += len(valid)
        for i, v in enumerate(valid):
            failures += check_valid(f"{name}[{i}]", v)
    for name in ("invalid.json", "invalid_v2.json"):
        invalid = json.loads((folder / name).read_text())
        n_invalid += len(invalid)
        for i, v in enumerate(invalid):
            failures += check_invalid(f"{name}[{i}]", v)
    print(
        f"{n_valid} valid and {n_invalid} invalid vectors checked, {failures} failures"
    )
    return 1 if failures else 0


def check_valid(where: str, v: dict) -> int:
    """1 if a valid vector does not seal to its bytes and open to its plaintext."""
    suite = next(k for k, (name, _) in SUITES.items() if name == v["suite"])
    key, pt = bytes.fromhex(v["key"]), bytes.fromhex(v["plaintext"])
    params = (
        key,
        suite,
        v["chunk_size"],
        bytes.fromhex(v["salt"]),
        bytes.fromhex(v["transfer_id"]),
        pt,
    )
    if v.get("version", 1) == 2:
        sealed = seal_v2(*params, v["chunks"])
    else:
        sealed = seal(*params)
    if sealed.hex() != v["sealed"]:
        print(f"{where} ({v['desc']}): sealing gives different bytes")
        return 1
    if open_sealed(key, sealed) != pt:
        print(f"{where} ({v['desc']}): opening gives different plaintext")
        return 1
    return 0


def check_invalid(where: str, v: dict) -> int:
    """1 unless opening an invalid vector fails with the error it names."""
    expected = {"integrity": IntegrityFailure, "format": FormatError}[v["error"]]
    tid = (
        bytes.fromhex(v["expected_transfer_id"])
        if "expected_transfer_id" in v
        else None
    )
    try:
        open_sealed(bytes.fromhex(v["key"]), bytes.fromhex(v["sealed"]), tid)
    except expected:
        return 0
    except (IntegrityFailure, FormatError) as exc:
        print(f"{where} ({v['desc']}): wrong error {type(exc).__name__}")
    else:
        print(f"{where} ({v['desc']}): accepted")
    return 1


if __name__ == "__main__":
    sys.exit(main())
