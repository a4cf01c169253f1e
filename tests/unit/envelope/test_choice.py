from __future__ import annotations

from xfer.envelope import Suite
from xfer.envelope.choice import fastest_suite, mac_seconds
from xfer.xmpp.transfer.context import Settings


def test_the_choice_is_a_suite_and_made_once() -> None:
    chosen = fastest_suite()
    assert chosen in set(Suite)
    assert fastest_suite() is chosen
    assert fastest_suite.cache_info().misses == 1


def test_each_mac_is_timed() -> None:
    for suite in Suite:
        seconds = mac_seconds(suite, size=1 << 16, rounds=2)
        assert 0 < seconds < 1


def test_the_setting_takes_auto_a_label_or_a_suite() -> None:
    assert Settings({"suite": "auto"}).suite is fastest_suite()
    for suite in Suite:
        assert Settings({"suite": suite.label}).suite is suite
        assert Settings({"suite": suite}).suite is suite
        assert Settings({"suite": int(suite)}).suite is suite
