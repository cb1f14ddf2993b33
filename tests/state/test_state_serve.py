"""Two `lightning-client serve --ledger postgresql://...` processes behind one budget hold it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

import lightning_client as lc
from lightning_client.testing import Sandbox


def _serve(config: Path, ledger: str) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "lightning_client", "serve", "--port", "0", "--config", str(config)]
    process = subprocess.Popen(
        [*command, "--ledger", ledger],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        match = re.search(r"serving on (http://\S+)", line)
        if match:
            return process, match.group(1)
        if not line:
            break
    process.kill()
    raise AssertionError(f"serve did not start: {process.communicate()[1][-3000:]}")


def test_two_servers_share_one_budget(pg_url: str, sb: Sandbox, tmp_path: Path) -> None:
    config = tmp_path / "lightning.toml"
    config.write_text(
        f'[[generators]]\nkind = "fal"\napi_key = "fal-test"\nbase_url = "{sb.fal_url}"\n\n'
        '[router]\nbudget_usd = 0.02\nbudget_name = "gateway"\nretries = 0\n'
    )
    servers = [_serve(config, pg_url) for _ in range(2)]
    try:

        def send(i: int) -> int:
            url = servers[i % 2][1]
            body = {"prompt": f"request {i}", "seed": i, "width": 512, "height": 512}
            return httpx.post(f"{url}/v1/generations", json=body, timeout=120).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(send, range(40)))
    finally:
        for process, _ in servers:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=60)
    assert set(statuses) <= {200, 402} and 200 in statuses and 402 in statuses
    with lc.Ledger(pg_url) as ledger, lc.FalGenerator(api_key="k", base_url=sb.fal_url) as fal:
        largest = lc.Router([fal]).expected_cost(lc.GenerationRequest(prompt="x", width=512, height=512), "fal")
        assert largest is not None
        assert ledger.cost().known_usd <= 0.02 + largest + 1e-9
        assert sum(s.succeeded for s in ledger.summary()) == statuses.count(200)
