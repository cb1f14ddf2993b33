"""Import time of `lightning_client` and of each generator module, in fresh interpreters.

Each module is imported in a new `python -c` process (so nothing is cached in memory) that
reports the seconds the import took and whether it pulled in a heavy package; the median of N
runs is kept. The official clients are measured the same way for reference.

    python benchmarks/import_time.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from typing import Any

from _common import python, write_result

MODULES = (
    "lightning_client",
    "lightning_client.providers.replicate",
    "lightning_client.providers.fal",
    "lightning_client.providers.local",
    "lightning_client.routing",
    "replicate",
    "fal_client",
    "httpx",
)
HEAVY = ("torch", "diffusers", "transformers", "starlette", "uvicorn", "matplotlib")
_PROBE = """
import json, sys, time
started = time.perf_counter()
import {module}
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def _once(module: str) -> tuple[float, list[str]]:
    out = subprocess.run(
        [python(), "-c", _PROBE.format(module=module, heavy=HEAVY)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return float(data["seconds"]), list(data["heavy"])


def run(quick: bool = False) -> dict[str, Any]:
    """Median import milliseconds per module, and which heavy packages each import loaded."""
    repeats = 3 if quick else 11
    report: dict[str, Any] = {"repeats": repeats, "modules": {}}
    for module in MODULES:
        _once(module)  # warm the filesystem cache and bytecode
        runs = [_once(module) for _ in range(repeats)]
        report["modules"][module] = {
            "median_ms": round(statistics.median(seconds for seconds, _ in runs) * 1e3, 1),
            "min_ms": round(min(seconds for seconds, _ in runs) * 1e3, 1),
            "heavy_imports": runs[-1][1],
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs per module")
    args = parser.parse_args()
    report = run(args.quick)
    print(f"import time, median of {report['repeats']} fresh interpreters (ms)")
    for module, row in report["modules"].items():
        heavy = ", ".join(row["heavy_imports"]) or "-"
        print(f"{module:<40}{row['median_ms']:>8.1f}   heavy: {heavy}")
    print(f"wrote {write_result('import_time', report)}")


if __name__ == "__main__":
    main()
