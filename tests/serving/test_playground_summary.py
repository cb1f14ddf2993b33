"""The playground's summary comes from the socket's own attempts as they end, never from the ledger file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from websockets.sync.client import connect

import lightning_client as lc
from lightning_client.result import Attempt, Cost, Timings
from lightning_client.serving.app import create_app
from lightning_client.serving.playground import SocketSummary, playground_router
from lightning_client.serving.runner import ServerThread
from lightning_client.testing import Sandbox


def test_a_frame_never_reads_the_ledger_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with lc.Ledger(path) as history:  # an operator's file with a long history
        for i in range(5000):
            history.record("end", Attempt(provider="history", outcome="succeeded", cost=Cost(usd=0.001), seed=i))
    with Sandbox() as sb:
        fal = lc.FalGenerator(
            api_key="sandbox:key", base_url=sb.fal_url, run_url=sb.fal_run_url, rest_url=sb.fal_rest_url
        )
        router = lc.Router([fal], retries=0, ledger=lc.Ledger(path))
        with (
            ServerThread(create_app(router, routers=[playground_router()])) as url,
            connect("ws" + url.removeprefix("http") + "/v1/realtime") as ws,
        ):
            for prompt in ("a fox", "a fox in the snow"):
                ws.send(json.dumps({"type": "send", "prompt": prompt, "steps": 2, "width": 256, "height": 256}))
                while (frame := json.loads(ws.recv(timeout=60)))["type"] != "frame":
                    assert frame["type"] != "error", frame
        assert len(router.ledger) == 5002
    rows = frame["ledger"]
    assert [(r["provider"], r["count"], r["succeeded"]) for r in rows] == [("fal", 2, 2)]
    assert rows[0]["p50_s"] > 0 and rows[0]["images"] == 2


def test_the_summary_folds_in_each_attempt_once_and_later_cost_updates() -> None:
    summary = SocketSummary()
    ok = Attempt(provider="fal", outcome="succeeded", num_images=1, cost=Cost(usd=0.002, basis="units"))
    ok.timings = Timings(total_s=0.5, inference_s=0.2)
    summary.observe("start", ok)
    summary.observe("end", ok)
    loser = Attempt(provider="replicate", outcome="canceled", cost=Cost(usd=0.0))
    summary.observe("end", loser)
    first = summary.rows()
    assert summary.rows() is first  # nothing changed: not rebuilt
    loser.cost = Cost(usd=0.0005, basis="predict_time x $/s")  # its cancellation's cost, known later
    summary.observe("update", loser)
    unknown = Attempt(provider="replicate", outcome="unknown", cost=Cost.unknown("create outcome unknown"))
    summary.observe("end", unknown)
    fal, replicate = summary.rows()
    assert (fal["count"], fal["succeeded"], fal["p50_s"], fal["total_cost"]) == (1, 1, 0.5, 0.002)
    assert (replicate["count"], replicate["canceled"], replicate["unknown"]) == (2, 1, 1)
    assert replicate["known_cost"] == pytest.approx(0.0005)
    assert replicate["total_cost"] is None and replicate["unknown_costs"] == 1
