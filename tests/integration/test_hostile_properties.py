"""Random sequences of what a hostile server does, around real transfers.

Each example makes a fresh alice (behind the hostile server) and bob (straight
to Prosody) who trust each other, arms a random list of server actions (drop,
delay, duplicate or reorder stanzas of some kind, forge bob's presence or his
Jingle verdicts, answer alice's AKEs in bob's name with the server's own key,
send verdicts under that key), and has alice send bob a file. Whatever
happens, these hold:

- the server's OTR identity never receives an offer or a key from alice;
- bob's directory holds nothing but byte-identical copies of the file (no
  unverified plaintext is ever renamed into place);
- alice reports the file delivered only if bob sent her a ``stored`` verdict
  inside OTR for that very transfer (and then bob has it);
- a transfer that does not succeed fails with a typed error, within a bound
  set by its timeouts: nothing hangs.

``XFER_HOSTILE_EXAMPLES=N`` runs N examples (CI: a short run).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import bob_direct, introduce, through
from tests.integration.test_attacks import NS_JINGLE, BackToBack, otr_type
from xfer.errors import XferError
from xfer.testing.hostile import ForgedOTRPeer, HostileServer, body
from xfer.testing.prosody import LocalProsody
from xfer.transfer.offer import XFER_USE, TransferVerdict
from xfer.xmpp.client import XferClient
from xfer.xmpp.transfer import RESTARTED

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

EXAMPLES = int(os.environ.get("XFER_HOSTILE_EXAMPLES", "0") or 0) or (
    20 if os.environ.get("CI") else 10
)
#: Short timeouts, so that a broken example ends soon; the bound below is
#: what "nothing hangs" means here.
CONFIG: dict[str, object] = {
    "connect_timeout": 3.0,
    "offer_timeout": 8.0,
    "stall_timeout": 3.0,
    "otr_offer_wait": 2.0,
    "resume_attempts": 1,
    "resume_backoff": 0.2,
    "resume_wait": 4.0,
}
BOUND = 90.0
SIZE = 50_000

#: Kinds of stanza an action aims at.
KINDS: dict[str, Callable[[ET.Element], bool]] = {
    "otr": lambda e: (body(e) or "").startswith("?OTR"),
    "otr-data": lambda e: otr_type(e) == 0x03,
    "otr-ake": lambda e: otr_type(e) in (0x02, 0x0A, 0x11, 0x12),
    "jingle": lambda e: e.find(f"{{{NS_JINGLE}}}jingle") is not None,
    "iq-result": lambda e: e.tag == "{jabber:client}iq" and e.get("type") == "result",
    "ibb": lambda e: any(
        c.tag.startswith("{http://jabber.org/protocol/ibb}") for c in e
    ),
}
DIRECTIONS = ("to_client", "to_server")


@dataclass(frozen=True)
class Action:
    """One thing the server does: ``what`` to the ``nth`` (from 1) stanza of
    ``kind`` going ``direction`` (``arg``: seconds, or a reason)."""

    what: str
    kind: str = "otr"
    direction: str = "to_client"
    nth: int = 1
    arg: str = ""


actions = st.one_of(
    st.builds(
        Action,
        what=st.sampled_from(["drop", "delay", "duplicate", "reorder"]),
        kind=st.sampled_from(sorted(KINDS)),
        direction=st.sampled_from(DIRECTIONS),
        nth=st.integers(1, 6),
        arg=st.sampled_from(["0.05", "0.5", "2"]),
    ),
    st.builds(
        Action,
        what=st.just("forge-terminate"),
        nth=st.integers(1, 3),
        arg=st.sampled_from(["success", "restart", "failed-transport", "decline"]),
    ),
    st.builds(Action, what=st.just("forge-unavailable"), nth=st.integers(1, 8)),
    st.builds(Action, what=st.sampled_from(["forged-ake", "forged-verdicts"])),
)


class Armed:
    """The actions, installed on the server for one example."""

    def __init__(
        self,
        server: HostileServer,
        alice: XferClient,
        bob_full: str,
        plan: list[Action],
    ) -> None:
        self.server = server
        self.alice = alice
        self.bob = bob_full
        self.forger: ForgedOTRPeer | None = None
        self.tasks: list[asyncio.TimerHandle] = []
        loop = asyncio.get_running_loop()
        for action in plan:
            if action.what in ("drop", "delay", "duplicate", "reorder"):
                server.on_stanza(self._stanza_rule(action), action.direction)
            elif action.what == "forge-terminate":
                server.on_stanza(self._terminate_rule(action), "to_client")
            elif action.what == "forge-unavailable":
                self.tasks.append(
                    loop.call_later(
                        0.1 * action.nth,
                        self._inject,
                        f"<presence type='unavailable' from='{bob_full}'/>",
                    )
                )
            elif self.forger is None:  # forged-ake, forged-verdicts
                self.forger = ForgedOTRPeer(server, bob_full, swallow=False)
                if action.what == "forged-ake":
                    BackToBack(server, self.forger, bob_full)
                else:
                    server.on_stanza(self._verdict_rule(), "to_client")

    def _inject(self, xml: str | ET.Element) -> None:
        with contextlib.suppress(RuntimeError):  # the client is gone already
            self.server.inject_to_client(xml)

    def _stanza_rule(
        self, action: Action
    ) -> Callable[[str, ET.Element], list[ET.Element] | None]:
        wanted = KINDS[action.kind]
        seen = [0]
        held: list[ET.Element] = []

        def rule(_d: str, element: ET.Element) -> list[ET.Element] | None:
            if not wanted(element):
                return None
            seen[0] += 1
            n = seen[0]
            if action.what == "reorder":
                if n in (action.nth, action.nth + 1):
                    held.append(element)
                    return [] if n == action.nth else list(reversed(held))
                return None
            if n != action.nth:
                return None
            if action.what == "drop":
                return []
            if action.what == "duplicate":
                return [element, copy.deepcopy(element)]
            # delay: send it later, after whatever comes meanwhile
            later = copy.deepcopy(element)
            send = (
                self.server.inject_to_client
                if action.direction == "to_client"
                else self.server.inject_to_server
            )

            def deliver() -> None:
                with contextlib.suppress(RuntimeError):  # the client is gone
                    send(later)

            self.tasks.append(
                asyncio.get_running_loop().call_later(float(action.arg), deliver)
            )
            return []

        return rule

    def _terminate_rule(
        self, action: Action
    ) -> Callable[[str, ET.Element], list[ET.Element] | None]:
        """After the nth Jingle stanza bob sends alice, a session-terminate
        in his name with the chosen reason."""
        seen = [0]

        def rule(_d: str, element: ET.Element) -> list[ET.Element] | None:
            jingle = element.find(f"{{{NS_JINGLE}}}jingle")
            if jingle is None or element.get("from") != self.bob:
                return None
            seen[0] += 1
            if seen[0] != action.nth:
                return None
            reason = {
                "restart": "<security-error/><text>no matching offer inside OTR; "
                f"{RESTARTED}</text>",
            }.get(action.arg, f"<{action.arg}/>")
            forged = ET.fromstring(
                f"<iq xmlns='jabber:client' type='set' id='forged-{seen[0]}' "
                f"from='{self.bob}' to='{self.alice.boundjid.full}'>"
                f"<jingle xmlns='{NS_JINGLE}' action='session-terminate' "
                f"sid='{jingle.get('sid')}'><reason>{reason}</reason></jingle></iq>"
            )
            return [element, forged]

        return rule

    def _verdict_rule(self) -> Callable[[str, ET.Element], list[ET.Element] | None]:
        """Once the server's OTR session with alice stands, verdicts under
        its key for every transfer id it sees in Jingle."""

        def rule(_d: str, element: ET.Element) -> list[ET.Element] | None:
            forger = self.forger
            found = element.find(".//{urn:xfer:jingle:otr:1}encrypted")
            if forger is None or found is None:
                return None
            if forger.session is None:
                forger.start_ake()
                return None
            tid = bytes.fromhex(found.get("transfer-id") or "")
            for stored in (True, False):
                forger.send_symmetric_key(
                    XFER_USE,
                    TransferVerdict(transfer_id=tid, stored=stored).encode(),
                )
            return None

        return rule

    def disarm(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.server.clear_rules()
        if self.forger is not None:
            self.forger.close()


async def _example(
    prosody: LocalProsody, plan: list[Action], home: Path
) -> tuple[BaseException | None, list[bytes], list[TransferVerdict]]:
    """One transfer under ``plan``: alice's error (None: delivered), the
    files in bob's directory, and the verdicts bob sent alice."""
    clients: list[XferClient] = []
    async with HostileServer("127.0.0.1", prosody.c2s_port) as server:
        alice = await through(server, prosody, clients, home / "alice-id", **CONFIG)
        bob = await bob_direct(prosody, clients, home / "bob-id", **CONFIG)
        try:
            introduce(alice, bob)
            verdicts: list[TransferVerdict] = []
            bob_otr = bob.plugin["xfer_otr"]
            sending = bob_otr.send_verdict

            def record(got: object, verdict: TransferVerdict) -> None:
                verdicts.append(verdict)
                sending(got, verdict)

            bob_otr.send_verdict = record
            armed = Armed(server, alice, bob.boundjid.full, plan)
            source = home / "file.bin"
            source.write_bytes(os.urandom(SIZE))
            into = home / "in"
            into.mkdir()

            async def receive() -> None:
                plugin = bob.plugin["xfer_transfer"]
                while True:  # every offer that makes it through is accepted
                    offer = await plugin.next_offer()
                    with_errors = asyncio.ensure_future(offer.accept(into))
                    with_errors.add_done_callback(
                        lambda f: f.cancelled() or f.exception()
                    )

            receiving = asyncio.ensure_future(receive())
            error: BaseException | None = None
            try:
                await asyncio.wait_for(
                    alice.plugin["xfer_transfer"].send_file(bob.boundjid.full, source),
                    BOUND,
                )
            except XferError as exc:
                error = exc
            except TimeoutError:
                pytest.fail(f"the transfer hung past {BOUND} s under {plan}")
            finally:
                receiving.cancel()
                await asyncio.gather(receiving, return_exceptions=True)
                armed.disarm()
            if armed.forger is not None:
                assert armed.forger.offers() == [], plan
                assert armed.forger.symmetric_keys() == [], plan
            await asyncio.sleep(0.3)  # a receipt that ends now ends in place
            files = [
                p.read_bytes()
                for p in into.iterdir()
                if p.is_file() and not p.name.startswith(".")
            ]
            assert all(f == source.read_bytes() for f in files), plan
            return error, files, verdicts
        finally:
            for c in clients:
                await c.stop()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(plan=st.lists(actions, max_size=4))
async def test_no_server_action_breaks_the_invariants(
    prosody: LocalProsody, plan: list[Action]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        error, files, verdicts = await _example(prosody, plan, Path(tmp))
        digest = hashlib.sha256(files[0]).digest() if files else b""
    for action in plan:
        event(f"action: {action.what}")
    event(f"outcome: {'delivered' if error is None else type(error).__name__}")
    if error is None:
        # Delivered: bob stored it, and said so inside OTR.
        assert files, plan
        assert any(v.stored and v.sha256 == digest for v in verdicts), plan
