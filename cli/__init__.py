"""The xfer command line (installed as the import package ``xfer_cli``)."""

from __future__ import annotations
