"""Check spec/vectors/envelope/*.json against spec/envelope.md, without xfer.

This is a second, deliberately plain implementation of the format (whole
buffers, no streaming), written from the spec with the standard library and
``cryptography``'s primitives only. For each valid vector it seals the
plaintext and must get the sealed bytes exactly, then opens them; for each
invalid vector it must reject the input with the named kind of error.

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
    mac_key: bytes, hash_cls: type, header: bytes, index: int, final: bool, ct: bytes
) -> bytes:
    m = hmac.HMAC(mac_key, hash_cls())
    m.update(header + index.to_bytes(8, "big") + bytes([final]) + ct)
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
    if version != 1:
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
    failures = 0
    valid = json.loads((folder / "seal.json").read_text())
    for i, v in enumerate(valid):
        suite = next(k for k, (name, _) in SUITES.items() if name == v["suite"])
        key, pt = bytes.fromhex(v["key"]), bytes.fromhex(v["plaintext"])
        sealed = seal(
            key,
            suite,
            v["chunk_size"],
            bytes.fromhex(v["salt"]),
            bytes.fromhex(v["transfer_id"]),
            pt,
        )
        if sealed.hex() != v["sealed"]:
            print(f"seal.json[{i}] ({v['desc']}): sealing gives different bytes")
            failures += 1
        elif open_sealed(key, sealed) != pt:
            print(f"seal.json[{i}] ({v['desc']}): opening gives different plaintext")
            failures += 1
    invalid = json.loads((folder / "invalid.json").read_text())
    for i, v in enumerate(invalid):
        expected = {"integrity": IntegrityFailure, "format": FormatError}[v["error"]]
        tid = (
            bytes.fromhex(v["expected_transfer_id"])
            if "expected_transfer_id" in v
            else None
        )
        try:
            open_sealed(bytes.fromhex(v["key"]), bytes.fromhex(v["sealed"]), tid)
        except expected:
            continue
        except (IntegrityFailure, FormatError) as exc:
            print(f"invalid.json[{i}] ({v['desc']}): wrong error {type(exc).__name__}")
        else:
            print(f"invalid.json[{i}] ({v['desc']}): accepted")
        failures += 1
    print(
        f"{len(valid)} valid and {len(invalid)} invalid vectors checked, "
        f"{failures} failures"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
