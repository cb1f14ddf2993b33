"""The result cache: explicit-seed requests served again without a provider call, one call per key in flight."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

import lightning_client as lc
from lightning_client.testing import Sandbox


def _router(sb: Sandbox, cache: lc.ResultCache, ledger: lc.Ledger | None = None) -> lc.Router:
    return lc.Router([lc.FalGenerator(api_key="fal-test", base_url=sb.fal_url)], cache=cache, ledger=ledger)


def test_the_same_explicit_seed_request_is_served_from_the_cache(sb: Sandbox, tmp_path: Path) -> None:
    cache = lc.ResultCache(tmp_path / "cache")
    with _router(sb, cache) as router:
        first = router.generate("a red fox", seed=7, width=512, height=512)
        second = router.generate("a red fox", seed=7, width=512, height=512)
        assert (first.cached, second.cached) == (False, True)
        assert sb.fal.stats()["created"] == 1
        assert [i.data for i in second.images] == [i.data for i in first.images]
        assert second.cost.usd == 0.0 and second.cost.basis and second.request_id == first.request_id
        [attempt] = second.attempts
        assert attempt.outcome == "cached" and attempt.cost.usd == 0.0
        assert [a.outcome for a in router.ledger.records()] == ["succeeded", "cached"]
        [summary] = router.ledger.summary()
        assert (summary.count, summary.cached) == (1, 1)
        # any image-changing field, a random seed, or cache="off" / "refresh": a provider call
        router.generate("a red fox", seed=8, width=512, height=512)
        router.generate("a red fox", seed=7, width=512, height=512, steps=2)
        router.generate("a red fox", width=512, height=512)
        router.generate("a red fox", width=512, height=512)
        assert not router.generate("a red fox", seed=7, width=512, height=512, cache="off").cached
        assert not router.generate("a red fox", seed=7, width=512, height=512, cache="refresh").cached
        assert router.generate("a red fox", seed=7, width=512, height=512).cached
        assert sb.fal.stats()["created"] == 7
    cache.close()


def test_the_cache_bounds_its_size_and_entries_expire(sb: Sandbox, tmp_path: Path) -> None:
    cache = lc.ResultCache(tmp_path / "cache", max_entries=2, ttl_s=3600)
    with _router(sb, cache) as router:
        for seed in (1, 2, 3):
            router.generate("bounded", seed=seed, width=256, height=256)
        assert router.generate("bounded", seed=3, width=256, height=256).cached
        assert not router.generate("bounded", seed=1, width=256, height=256).cached  # evicted first
    assert len(list((tmp_path / "cache" / "images").rglob("*.png"))) == 2
    cache.close()
    with pytest.raises(ValueError, match="ttl_s"):
        lc.ResultCache(tmp_path / "other", ttl_s=0)


async def test_ten_identical_concurrent_requests_create_one_job(sb: Sandbox, tmp_path: Path) -> None:
    sb.fal.configure(inference_s=0.5)
    cache = lc.ResultCache(tmp_path / "cache")
    async with _router(sb, cache) as router:
        results = await asyncio.gather(
            *(router.agenerate("together", seed=5, width=256, height=256) for _ in range(10))
        )
    assert sb.fal.stats()["created"] == 1
    assert sorted(r.cached for r in results) == [False] + [True] * 9
    cache.close()


_CHILD = """
import json, sys
import lightning_client as lc

url, fal_url, folder = sys.argv[1], sys.argv[2], sys.argv[3]
cache = lc.ResultCache(url, folder=folder)
with lc.Router([lc.FalGenerator(api_key="fal-test", base_url=fal_url)], cache=cache) as router:
    print(json.dumps({"cached": router.generate("shared", seed=9, width=256, height=256).cached}))
"""


def test_two_processes_sharing_a_postgresql_cache_create_one_job(pg_url: str, sb: Sandbox, tmp_path: Path) -> None:
    sb.fal.configure(inference_s=2.0)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, pg_url, sb.fal_url, str(tmp_path / "images")],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [json.loads(child.communicate(timeout=180)[0].strip().splitlines()[-1]) for child in children]
    assert sb.fal.stats()["created"] == 1
    assert sorted(o["cached"] for o in outputs) == [False, True]


def test_cache_and_budget_name_from_a_configuration_file(pg_url: str, sb: Sandbox, tmp_path: Path) -> None:
    router = lc.load_config(
        {
            "generators": [{"kind": "fal", "api_key": "fal-test", "base_url": sb.fal_url}],
            "router": {"budget_usd": 1.0, "budget_name": "team-a"},
            "ledger": {"path": pg_url},
            "cache": {"path": str(tmp_path / "cache"), "max_entries": 10},
        }
    )
    with router:
        assert router.budget_name == "team-a" and router.ledger.url == pg_url
        assert router.cache is not None and router.cache.max_entries == 10
        router.generate("configured", seed=1, width=256, height=256)
        assert router.generate("configured", seed=1, width=256, height=256).cached
        assert router.budget.spent_usd > 0
    router.ledger.close()
    assert router.cache is not None
    router.cache.close()
    with lc.Ledger(pg_url) as ledger:
        assert {a.budget for a in ledger.records()} == {"team-a"}
