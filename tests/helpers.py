"""Helpers shared by tests of several layers."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

from xfer.transfer.offer import TransferOffer


def make_offer(
    *,
    zeroed: bool = False,
    transfer_id: bytes | None = None,
    salt: bytes | None = None,
    sha256: bytes | None = None,
    file_id: bytes | None = None,
    chunk_size: int = 65536,
    size: int = 1,
    name: str = "a",
    **extra: Any,
) -> TransferOffer:
    """A valid suite 1 offer: version 1 if ``sha256`` is given, else version
    2 (what xfer sends). The transfer id, salt and file id are random (all
    zero bytes if ``zeroed``) unless given; ``extra``: the other fields."""
    fill = bytes if zeroed else os.urandom
    ids: dict[str, bytes] = (
        {"sha256": sha256}
        if sha256 is not None
        else {"file_id": fill(32) if file_id is None else file_id}
    )
    return TransferOffer(
        transfer_id=fill(16) if transfer_id is None else transfer_id,
        salt=fill(32) if salt is None else salt,
        suite=1,
        chunk_size=chunk_size,
        size=size,
        name=name,
        **ids,
        **extra,
    )


#: The last commit before streams (issue 16): what an older xfer peer runs.
BEFORE_STREAMS = "665f97d002962b848f12d853ae66e452bca8513a"


def old_module(path: str, commit: str = BEFORE_STREAMS) -> types.ModuleType:
    """The module at ``path`` as it was at ``commit`` (read from git),
    loaded under a private name: to test what an older peer does with a
    newer peer's message. Its imports resolve to today's modules."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "-C", str(root), "show", f"{commit}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    name = "_old_" + path.replace("/", "_").removesuffix(".py")
    module = types.ModuleType(name)
    module.__file__ = f"{commit}:{path}"
    sys.modules[name] = module  # dataclasses look their module up
    try:
        exec(compile(source, module.__file__, "exec"), module.__dict__)
    finally:
        del sys.modules[name]
    return module
