"""The shared-folder decoders fed arbitrary and near-valid bytes: they
decode, or raise RemoteProtocolError - never anything else; and whatever
decodes encodes back to the same bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from xfer.errors import RemoteProtocolError
from xfer.transfer.share import (
    EntryType,
    FileComing,
    Operation,
    ShareEntry,
    ShareListing,
    ShareRequest,
    decode_share,
    encode_reply,
)

RID = bytes(16)
VALID = [
    ShareRequest(request_id=RID, op=Operation.LIST, path="a/b", after="a").encode(),
    ShareRequest(request_id=RID, op=Operation.GET, path="x").encode(),
    encode_reply(
        ShareListing(
            request_id=RID,
            entries=(
                ShareEntry(path="a", type=EntryType.DIRECTORY),
                ShareEntry(
                    path="a/b",
                    type=EntryType.FILE,
                    size=3,
                    media_type="text/plain",
                    sha256=bytes(32),
                ),
            ),
        )
    ),
    encode_reply(FileComing(request_id=RID, path="a/b", size=3)),
]


def check(data: bytes) -> None:
    try:
        decoded = decode_share(data)
    except RemoteProtocolError:
        return
    again = (
        decoded.encode() if isinstance(decoded, ShareRequest) else encode_reply(decoded)
    )
    assert again == data


@given(st.binary(max_size=400))
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_after_a_valid_head(tail: bytes) -> None:
    for head in (bytes([1, 4]) + RID, bytes([1, 5]) + RID + bytes([1])):
        check(head + tail)


@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    st.integers(0, 10_000),
    st.binary(max_size=8),
)
def test_near_valid(
    data: bytes, flips: list[tuple[int, int]], cut: int, extra: bytes
) -> None:
    mutated = bytearray(data)
    for where, value in flips:
        mutated[where % len(mutated)] = value
    check(bytes(mutated))
    check(bytes(mutated[: cut % (len(mutated) + 1)]) + extra)
