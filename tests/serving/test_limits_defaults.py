"""The server's admission limits come from what it serves unless the operator sets them; `/v1/status` says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import lightning_client as lc
from lightning_client.generator import Generator
from lightning_client.serving.app import create_app
from lightning_client.serving.limits import HOSTED_IN_FLIGHT, HOSTED_QUEUE
from lightning_client.serving.runner import ServerThread
from lightning_client.serving.settings import ServerSettings
from lightning_client.testing import Sandbox
from tests.serving.conftest import ServeProcess, start_serve


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        yield sandbox


def _local(batch: int) -> lc.LocalGenerator:
    return lc.LocalGenerator(base_model="base", lightning_repo="lightning", max_batch_size=batch)


def _limits(generator: Generator, **settings: Any) -> dict[str, Any]:
    """The `limits` of `/v1/status` of a server on `generator`, read over HTTP."""
    app = create_app(generator, settings=ServerSettings(warmup=False, **settings))
    with ServerThread(app) as url:
        status = httpx.get(f"{url}/v1/status", timeout=30).json()
    assert status["max_concurrency"] == status["limits"]["max_concurrency"]["value"]
    assert status["max_queue"] == status["limits"]["max_queue"]["value"]
    limits: dict[str, Any] = status["limits"]
    return limits


def _values(limits: dict[str, Any]) -> tuple[int, str, int, str]:
    c, q = limits["max_concurrency"], limits["max_queue"]
    return c["value"], c["source"], q["value"], q["source"]


def test_a_local_generator_sets_them_from_its_batch_capacity() -> None:
    limits = _limits(_local(3))
    assert _values(limits) == (6, "generator", 48, "generator")
    assert "max_batch_size=3" in limits["max_concurrency"]["reason"]
    assert limits["rate_limits"] == {}


def test_a_hosted_generator_is_generous_unless_rate_limited(sb: Sandbox) -> None:
    assert _values(_limits(lc.FalGenerator.for_sandbox(sb))) == (
        HOSTED_IN_FLIGHT,
        "generator",
        HOSTED_QUEUE,
        "generator",
    )
    fal = lc.FalGenerator.for_sandbox(sb)
    fal.rate_limit.configure(requests_per_s=5)
    limits = _limits(fal)
    # 5 requests per second of jobs of fal's 1.5 s latency prior; a minute of them queued.
    assert _values(limits) == (8, "generator", 300, "generator")
    assert "requests_per_s=5" in limits["max_concurrency"]["reason"]
    assert limits["rate_limits"]["fal"]["requests_per_s"] == 5.0
    fal = lc.FalGenerator.for_sandbox(sb)
    fal.rate_limit.configure(requests_per_s=5, max_in_flight=3)
    assert _values(_limits(fal))[:2] == (3, "generator")


def test_a_router_sums_its_members_in_flight_and_takes_the_largest_queue(sb: Sandbox) -> None:
    fal = lc.FalGenerator.for_sandbox(sb)
    fal.rate_limit.configure(requests_per_s=5)
    limits = _limits(lc.Router([_local(2), fal]))
    assert _values(limits) == (4 + 8, "generator", 300, "generator")
    assert set(limits["rate_limits"]) == {"fal"}


def test_the_operator_overrides_each_limit(sb: Sandbox) -> None:
    limits = _limits(lc.FalGenerator.for_sandbox(sb), max_concurrency=3)
    assert _values(limits) == (3, "operator", HOSTED_QUEUE, "generator")
    limits = _limits(_local(1), max_queue=5)
    assert _values(limits) == (2, "generator", 5, "operator")


def test_serve_takes_them_from_what_it_serves_and_from_its_options(
    tmp_path: Path, serve_process: list[ServeProcess]
) -> None:
    config = tmp_path / "lightning.toml"
    config.write_text(
        '[[generators]]\nkind = "fal"\napi_key = "fal-test"\nbase_url = "http://127.0.0.1:9"\n'
        "requests_per_s = 2\n\n[server]\nmax_queue = 7\n"
    )
    serve_process.append(server := start_serve("--config", str(config)))
    status = httpx.get(f"{server.url}/v1/status", timeout=30).json()
    assert _values(status["limits"]) == (3, "generator", 7, "operator")
    serve_process.append(server := start_serve("--config", str(config), "--max-concurrency", "5", "--max-queue", "9"))
    status = httpx.get(f"{server.url}/v1/status", timeout=30).json()
    assert _values(status["limits"]) == (5, "operator", 9, "operator")
