"""Subcommands; each module is imported only when its command runs.

The networked ones (``send``, ``receive``, ``verify``) connect the account
with :func:`xfer_cli.account.connect`, do their job through the library
(:mod:`xfer.api`) and disconnect. Errors are left to the one place that words
them (:func:`xfer_cli.main.report`).

Every string a peer or a server chose (JIDs and resources, file names, media
types, verification questions, reasons) is hostile: it goes through
:func:`xfer.display.shown` (through :func:`xfer_cli.output.quoted` for names)
before it is shown.
"""

from __future__ import annotations
