"""One budget across processes: holds in the shared ledger's store, checked and taken atomically."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lightning_client as lc
from lightning_client.routing.budget import SharedBudget
from lightning_client.state import Store
from lightning_client.state.store import STALE_S
from lightning_client.testing import Sandbox

_CHILD = """
import asyncio, json, sys
import lightning_client as lc

async def main() -> None:
    url, fal_url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fal = lc.FalGenerator(api_key="fal-test", base_url=fal_url)
    largest = 0.0
    served = refused = 0
    async with lc.Router([fal], ledger=lc.Ledger(url), budget_usd=0.05, budget_name="t", retries=0) as router:
        async def one(i: int) -> str:
            nonlocal largest
            request = lc.GenerationRequest(prompt=f"budget {i}", seed=i)
            largest = max(largest, router.expected_cost(request, "fal") or 0.0)
            try:
                await router.agenerate(request)
            except lc.BudgetExceededError:
                return "refused"
            return "served"
        outcomes = await asyncio.gather(*(one(i) for i in range(count)))
        router.ledger.close()
    print(json.dumps({"served": outcomes.count("served"), "refused": outcomes.count("refused"), "largest": largest}))

asyncio.run(main())
"""


def _run_children(where: str, sb: Sandbox, processes: int, requests: int) -> list[dict[str, float]]:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, where, sb.fal_url, str(requests)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    outputs = [child.communicate(timeout=240)[0] for child in children]
    assert [child.returncode for child in children] == [0] * processes, outputs
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


@pytest.mark.parametrize("store", ["postgresql", "sqlite"])
def test_four_processes_share_one_budget(
    store: str, request: pytest.FixtureRequest, sb: Sandbox, tmp_path: Path
) -> None:
    where = request.getfixturevalue("pg_url") if store == "postgresql" else str(tmp_path / "shared.sqlite")
    reports = _run_children(where, sb, processes=4, requests=50)
    assert all(r["served"] + r["refused"] == 50 for r in reports)  # every request served or refused
    with lc.Ledger(where) as ledger:
        total = ledger.cost()
        largest = max(r["largest"] for r in reports)
        assert total.usd is not None and largest > 0
        assert total.known_usd <= 0.05 + largest + 1e-9
        served = sum(r["served"] for r in reports)
        assert served == sum(s.succeeded for s in ledger.summary()) and served > 0
        assert sum(r["refused"] for r in reports) > 0  # 200 requests are far more than $0.05
        assert ledger.store.totals("t").reserved == 0.0  # every hold ended with its request


def _foreign_hold(store: Store, owner: str, host: str, pid: int, heartbeat_age_s: float, usd: float) -> None:
    now = time.time()
    store._execute(
        "INSERT INTO owners (owner, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
        (owner, host, pid, now, now - heartbeat_age_s),
    )
    store._execute(
        "INSERT INTO budget_holds (hold_id, budget, owner, usd, created_at, expires_at) VALUES (?, 't', ?, ?, ?, ?)",
        (owner, owner, usd, now, now + 600),
    )


def test_holds_of_processes_that_are_gone_no_longer_count(pg_url: str, fal: lc.FalGenerator) -> None:
    with lc.Ledger(pg_url) as ledger:
        store = ledger.store
        budget = SharedBudget(ledger, "t", 0.01, None)
        mine = budget.reserve(0.002, what="test")
        _foreign_hold(store, "elsewhere-alive", "other-host", 1, 1.0, 0.003)
        _foreign_hold(store, "here-dead", store.host, 99_999_999, 1.0, 0.004)  # no such pid on this host
        _foreign_hold(store, "elsewhere-silent", "other-host", 1, STALE_S + 5, 0.004)
        assert budget.left() == pytest.approx(0.005)
        mine.release()
        ledger.flush()
        assert budget.left() == pytest.approx(0.007)
        router = lc.Router([fal], ledger=ledger, budget_usd=0.01, budget_name="t")
        assert isinstance(router.budget, SharedBudget)
        router.generate("after the dead holds", seed=1)
        router.close()
