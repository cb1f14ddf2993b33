"""Shared state: ledger writes per second and budget-reservation latency, PostgreSQL vs SQLite, and the
budget overrun of several processes sharing one budget.

Starts a throwaway PostgreSQL server (Debian's `postgresql` package; `--postgres URL` uses one
already running) and a sandbox. Measures, for each store:

- ledger writes/s: attempt events recorded (start and end of each attempt) until all are written;
- reservation p50/p95: one `SharedBudget.reserve` (check + hold, atomic in the store) and its release;

then the overrun: N processes, each `Router([fal], ledger=Ledger(url), budget_usd=0.05, budget_name=...)`
sending M concurrent requests; the overrun is the known cost above the limit (goal: 0 beyond the
reservations in flight, at most one request's expected cost per process).

    python benchmarks/state.py            # 5000 writes, 500 reservations, 4 processes x 250 requests
    python benchmarks/state.py --quick    # 500, 100, 4 x 25
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import percentile, python, write_result

import lightning_client as lc
from lightning_client.result import Attempt, Cost
from lightning_client.routing.budget import SharedBudget
from lightning_client.testing import Sandbox
from lightning_client.testing.postgres import PostgresServer

_CHILD = """
import asyncio, json, sys
import lightning_client as lc

async def main() -> None:
    url, fal_url, count, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    fal = lc.FalGenerator(api_key="bench:key", base_url=fal_url)
    largest = 0.0
    async with lc.Router([fal], ledger=lc.Ledger(url), budget_usd=0.05, budget_name=name, retries=0) as router:
        async def one(i: int) -> bool:
            nonlocal largest
            request = lc.GenerationRequest(prompt=f"overrun {i}", seed=i, width=256, height=256)
            largest = max(largest, router.expected_cost(request, "fal") or 0.0)
            try:
                await router.agenerate(request)
            except lc.BudgetExceededError:
                return False
            return True
        served = await asyncio.gather(*(one(i) for i in range(count)))
        router.ledger.close()
    print(json.dumps({"served": sum(served), "refused": count - sum(served), "largest": largest}))

asyncio.run(main())
"""


def _writes(where: str, n: int) -> float:
    """Attempt events per second, from the first record to the last row written."""
    with lc.Ledger(where) as ledger:
        attempts = [Attempt(provider="bench", seed=i) for i in range(n)]
        started = time.perf_counter()
        for attempt in attempts:
            ledger.record("start", attempt)
            attempt.outcome = "succeeded"
            attempt.cost = Cost(usd=0.001, basis="bench", estimated=False)
            ledger.record("end", attempt)
        ledger.flush(timeout=600)
        return 2 * n / (time.perf_counter() - started)


def _reservations(where: str, n: int) -> dict[str, float]:
    with lc.Ledger(where) as ledger:
        budget = SharedBudget(ledger, "bench-reserve", 1e9, None)
        seconds = []
        for _ in range(n):
            started = time.perf_counter()
            hold = budget.reserve(0.001, what="bench")
            seconds.append(time.perf_counter() - started)
            hold.release()
        ledger.flush()
    return {"p50_ms": round(percentile(seconds, 50) * 1e3, 3), "p95_ms": round(percentile(seconds, 95) * 1e3, 3)}


def _overrun(where: str, fal_url: str, processes: int, requests: int, name: str) -> dict[str, Any]:
    children = [
        subprocess.Popen(
            [python(), "-c", _CHILD, where, fal_url, str(requests), name], stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    reports = [json.loads(child.communicate(timeout=1800)[0].strip().splitlines()[-1]) for child in children]
    with lc.Ledger(where) as ledger:
        spent = sum(a.cost.known_usd for a in ledger.records() if a.budget == name)
    largest = max(r["largest"] for r in reports)
    return {
        "processes": processes,
        "requests_each": requests,
        "served": sum(r["served"] for r in reports),
        "refused": sum(r["refused"] for r in reports),
        "limit_usd": 0.05,
        "spent_usd": round(spent, 6),
        "overrun_usd": round(max(0.0, spent - 0.05), 6),
        "largest_reservation_usd": round(largest, 6),
        "overrun_beyond_reservations_in_flight_usd": round(max(0.0, spent - 0.05 - processes * largest), 6),
    }


@contextlib.contextmanager
def _postgres(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    with PostgresServer() as server:
        yield server.create_database()


def run(quick: bool = False, postgres: str | None = None) -> dict[str, Any]:
    writes, reserves = (500, 100) if quick else (5000, 500)
    processes, requests = (4, 25) if quick else (4, 250)
    report: dict[str, Any] = {"quick": quick}
    with tempfile.TemporaryDirectory() as folder, _postgres(postgres) as url, Sandbox() as sb:
        stores = {"sqlite": str(Path(folder) / "bench.sqlite"), "postgresql": url}
        for store, where in stores.items():
            report[store] = {
                "ledger_writes_per_s": round(_writes(where, writes)),
                "reservation": _reservations(where, reserves),
                "overrun": _overrun(where, sb.fal_url, processes, requests, f"overrun-{store}"),
            }
    report["ratios_postgresql_to_sqlite"] = {
        "ledger_writes_per_s": round(
            report["postgresql"]["ledger_writes_per_s"] / report["sqlite"]["ledger_writes_per_s"], 3
        ),
        "reservation_p50": round(
            report["postgresql"]["reservation"]["p50_ms"] / report["sqlite"]["reservation"]["p50_ms"], 3
        ),
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer writes, reservations and requests")
    parser.add_argument(
        "--postgres", help="a postgresql:// URL of an empty database to use instead of a throwaway server"
    )
    args = parser.parse_args()
    report = run(args.quick, args.postgres)
    print(json.dumps(report, indent=2))
    if not args.quick:
        print(f"wrote {write_result('state', report)}", file=sys.stderr)


if __name__ == "__main__":
    main()
