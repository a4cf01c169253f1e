"""Long-term keys, fingerprints, the trust store, the identity files and the offer."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xfer.errors import LocalProtocolError, RemoteProtocolError
from xfer.otr import trust
from xfer.otr.crypto import PrivateKey
from xfer.otr.fingerprint import format_fingerprint, parse_fingerprint
from xfer.otr.trust import SMPResult, TrustStore, Verification, bare_jid
from xfer.store import IdentityStore
from xfer.transfer.offer import XFER_USE, TransferOffer

FP = bytes(range(20))


def test_fingerprint_text_round_trip():
    text = format_fingerprint(FP)
    assert text == "00010203 04050607 08090A0B 0C0D0E0F 10111213"
    assert parse_fingerprint(text) == FP
    assert parse_fingerprint(text.lower().replace(" ", ":")) == FP
    for bad in ["", "00010203", "zz" * 20, FP.hex() + "00"]:
        with pytest.raises(LocalProtocolError):
            parse_fingerprint(bad)


def test_trust_still_exports_the_fingerprint_text():
    assert trust.format_fingerprint is format_fingerprint
    assert trust.parse_fingerprint is parse_fingerprint


def test_trust_store_round_trips_and_uses_bare_jids():
    store = TrustStore()
    store.trust("Alice@Example.org/phone", FP, Verification.SMP, now=100)
    store.trust("alice@example.org", b"\x01" * 20, Verification.MANUAL, now=200)
    assert store.is_trusted("alice@example.org/laptop", FP)
    assert not store.is_trusted("bob@example.org", FP)
    again = TrustStore.from_json(store.to_json())
    assert again.entries() == store.entries()
    assert again.entry("alice@example.org", FP).how is Verification.SMP
    assert again.untrust("alice@example.org", FP) == 1
    assert again.untrust("alice@example.org") == 1
    assert again.entries() == []
    assert bare_jid("a@b/c") == "a@b"


@pytest.mark.parametrize("how", [None, Verification.MANUAL, Verification.SMP])
def test_smp_outcomes_and_trust(how: Verification | None):
    """spec/otr.md section 3: a success trusts by SMP, a failure untrusts
    however the fingerprint was trusted, an abort changes nothing."""
    other = b"\x01" * 20

    def store() -> TrustStore:
        s = TrustStore()
        s.trust("carol@example.org", FP, Verification.MANUAL, now=5)
        s.trust("alice@example.org", other, Verification.MANUAL, now=5)
        if how is not None:
            s.trust("alice@example.org", FP, how, now=10)
        return s

    before = store().to_json()
    aborted = store()
    assert not aborted.record_smp("alice@example.org/x", FP, SMPResult.ABORTED, now=20)
    assert aborted.to_json() == before
    failed = store()
    changed = failed.record_smp("alice@example.org/x", FP, SMPResult.FAILED, now=20)
    assert changed is (how is not None)
    assert not failed.is_trusted("alice@example.org", FP)
    # Only that fingerprint of that peer.
    assert failed.is_trusted("alice@example.org", other)
    assert failed.is_trusted("carol@example.org", FP)
    won = store()
    assert won.record_smp("alice@example.org/x", FP, SMPResult.SUCCEEDED, now=20)
    entry = won.entry("alice@example.org", FP)
    assert entry is not None
    assert (entry.how, entry.since) == (Verification.SMP, 20)


def test_an_smp_result_is_true_only_for_a_success():
    assert [bool(r) for r in SMPResult] == [True, False, False]


@pytest.mark.parametrize(
    "raw", [b"", b"[]", b'{"version": 9}', b'{"version": 1, "peers": 3}']
)
def test_a_damaged_trust_store_is_a_clear_error(raw):
    with pytest.raises(LocalProtocolError):
        TrustStore.from_json(raw)


def test_identity_files_are_private_and_stable(tmp_path: Path):
    store = IdentityStore(tmp_path / "id")
    key = store.private_key()
    assert stat.S_IMODE(store.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert store.private_key().public == key.public
    trust = store.trust_store()
    trust.trust("bob@example.org", key.public.fingerprint, Verification.MANUAL, now=1)
    store.save_trust_store(trust)
    assert stat.S_IMODE(store.trust_path.stat().st_mode) == 0o600
    assert store.trust_store().is_trusted("bob@example.org", key.public.fingerprint)
    assert [p.name for p in store.directory.iterdir() if p.name.startswith(".")] == []
    # The PEM holds the secret; nothing else does.
    secret = str(key.x)
    assert secret not in repr(key)
    assert secret not in store.trust_path.read_text()


def test_a_damaged_key_file_is_a_clear_error(tmp_path: Path):
    store = IdentityStore(tmp_path)
    store.key_path.write_bytes(
        b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(LocalProtocolError, match="not a usable key"):
        store.private_key()
    with pytest.raises(FileNotFoundError):
        IdentityStore(tmp_path / "none").private_key(create=False)


def test_pem_round_trip_keeps_the_key():
    key = PrivateKey.generate()
    again = PrivateKey.from_pem(key.to_pem())
    assert again.public == key.public
    assert again.public.verify(b"m" * 32, key.sign(b"m" * 32))
    assert not again.public.verify(b"n" * 32, key.sign(b"m" * 32))


OFFER = TransferOffer(
    transfer_id=os.urandom(16),
    salt=os.urandom(32),
    suite=1,
    chunk_size=65536,
    size=123456789,
    sha256=os.urandom(32),
    name="Résumé 2026.pdf",
    media_type="application/pdf",
    mtime=1_790_000_000,
)


def test_offer_round_trip_and_use_value():
    assert XFER_USE.to_bytes(4, "big") == b"xfer"
    assert TransferOffer.decode(OFFER.encode()) == OFFER


@given(cut=st.integers(0, 200), junk=st.binary(max_size=300))
def test_offer_decoding_rejects_anything_else(cut, junk):
    raw = OFFER.encode()
    for candidate in (raw[: cut % len(raw)], raw + b"x", junk):
        if candidate == raw:
            continue
        with pytest.raises(RemoteProtocolError):
            TransferOffer.decode(candidate)


@pytest.mark.parametrize(
    "change",
    [
        {"name": ""},
        {"name": "a\x00b"},
        {"name": "x" * 1025},
        {"salt": b"s"},
        {"media_type": "é"},
        {"size": -1},
    ],
)
def test_offers_are_checked_when_built(change):
    fields = {f: getattr(OFFER, f) for f in OFFER.__dataclass_fields__}
    with pytest.raises(LocalProtocolError):
        TransferOffer(**{**fields, **change})
