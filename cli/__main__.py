"""``python -m xfer_cli``: the same as the ``xfer`` command."""

from __future__ import annotations

from xfer_cli.main import cli

if __name__ == "__main__":
    cli(prog_name="xfer")
