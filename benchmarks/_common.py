"""What the benchmark scripts share: the ``--json`` option of their command
line and the JSON report they write (``benchmarks/results/<name>.json`` by
default), each report naming its benchmark and the time it was made; and
:func:`compile_xfer`, so that xfer starts as an installed copy does."""

from __future__ import annotations

import compileall
import importlib.util
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


def compile_xfer() -> list[str]:
    """Byte-compile xfer's packages (``xfer``, ``xfer_cli``) where they are.

    An installation from a wheel is compiled when installed (pip does), but a
    development checkout in an environment with ``PYTHONDONTWRITEBYTECODE``
    is compiled from source at every start: some 0.3 s of CPU per process,
    which a start-up or latency figure would otherwise charge to xfer (the
    tools it is compared with are installed by pip). Returns the compiled
    package directories."""
    done = []
    for name in ("xfer", "xfer_cli"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for folder in spec.submodule_search_locations:
            compileall.compile_dir(folder, quiet=1)
            done.append(name)
    return done
