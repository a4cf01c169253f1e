"""Helpers shared by the OTR tests of several layers."""

from __future__ import annotations

from xfer.otr import MessageState, Policy, Session
from xfer.otr.crypto import DH_P, PrivateKey


def relay(a: Session, b: Session) -> None:
    """Hand what each side queued to the other until both are quiet."""
    for _ in range(6):
        moved = False
        for text in a.data_to_send():
            moved = True
            b.receive(text)
        for text in b.data_to_send():
            moved = True
            a.receive(text)
        if not moved:
            return


def secure_pair(
    keys: tuple[PrivateKey, PrivateKey], policy: Policy | None = None
) -> tuple[Session, Session]:
    """Alice and bob after an AKE, their conversation encrypted."""
    alice = Session(keys[0], our_tag=0x1111, policy=policy)
    bob = Session(keys[1], our_tag=0x2222, policy=policy)
    alice.start_ake()
    relay(alice, bob)
    assert alice.state is bob.state is MessageState.ENCRYPTED
    return alice, bob


class Pows:
    """Stands in for ``pow`` in the SMP module, checks every call and counts
    them: a modulus other than p or an exponent longer than p is refused."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, base: int, exponent: int, modulus: int) -> int:
        assert modulus == DH_P, "SMP works modulo p only"
        assert exponent.bit_length() <= DH_P.bit_length(), "unbounded exponent"
        self.calls += 1
        return pow(base, exponent, modulus)
