"""What the benchmark scripts share: the ``--json`` option of their command
line and the JSON report they write (``benchmarks/results/<name>.json`` by
default), each report naming its benchmark and the time it was made."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

RESULTS = Path(__file__).resolve().parent / "results"


def add_json_option(parser: argparse.ArgumentParser, name: str) -> None:
    """``--json PATH``: where the report goes, by default results/<name>.json."""
    parser.add_argument("--json", type=Path, default=RESULTS / f"{name}.json")


def write_report(path: Path, name: str, fields: dict[str, Any], lead: str = "") -> None:
    """Write the report of benchmark ``name`` (its ``fields`` after the name
    and the date) to ``path`` and say so, ``lead`` first."""
    report = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **fields,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{lead}wrote {path}")
