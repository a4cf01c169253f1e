"""The README's Python examples run as written."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.conftest import ROOT, require_or_skip
from xfer.testing.prosody import prosody_available

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code):
    if "LocalProsody" in code:
        require_or_skip(prosody_available(), "Prosody (Debian package prosody)")
    # A block that builds a slixmpp client without running it takes the
    # thread's event loop; give it one and close it here, or the loop and its
    # sockets are collected (and reported) in whichever test comes next.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        exec(compile(code, "README.md", "exec"), {})  # our own README
    finally:
        asyncio.set_event_loop(None)
        loop.close()
