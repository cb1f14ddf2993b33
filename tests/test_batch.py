"""Resumable batches: items, manifest, limits and the runner, against the sandbox over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import lightning_client as lc
from lightning_client.batching import (
    BatchFileError,
    LimitedGenerator,
    Manifest,
    ManifestEntry,
    RateLimiter,
    file_stem,
    load_items,
    parse_items,
    parse_rate,
    run_batch,
    run_pool,
)
from lightning_client.testing.sandbox import ProviderHandle, Sandbox


def _router(sandbox: Sandbox, *, fal_only: bool = False) -> lc.Router:
    fal = lc.FalGenerator(api_key="sandbox:key", base_url=sandbox.fal_url, rest_url=sandbox.fal_rest_url)
    if fal_only:
        return lc.Router([fal])
    rep = lc.ReplicateGenerator(api_key="r8_sandbox", base_url=sandbox.replicate_url)
    return lc.Router([rep, fal])


# -- items ---------------------------------------------------------------------------------------


def test_items_validate_every_line_and_name_the_bad_one(tmp_path: Path) -> None:
    good = [
        '{"prompt": "a cat", "steps": 2}',
        "",
        "# comment",
        '"a dog"',
        '{"id": "x", "prompt": "a fox", "provider": "fal"}',
    ]
    items = parse_items(good, defaults={"width": 256, "height": 256})
    assert [i.request.prompt for i in items] == ["a cat", "a dog", "a fox"]
    assert items[0].request.steps == 2 and items[1].request.width == 256
    assert items[2].id == "x" and items[2].providers == ("fal",)
    assert [i.line for i in items] == [1, 4, 5]
    # Ids come from the content: the same file gives the same ids, a repeated line gets its own.
    again = parse_items(good, defaults={"width": 256, "height": 256})
    assert [i.id for i in again] == [i.id for i in items]
    twice = parse_items(['"same"', '"same"'])
    assert len({i.id for i in twice}) == 2
    with pytest.raises(lc.InvalidRequestError, match=r"batch>:2: .*steps=3.*1, 2, 4 or 8") as info:
        parse_items(['"ok"', '{"prompt": "bad", "steps": 3}'])
    assert info.value.field == "steps"
    with pytest.raises(lc.InvalidRequestError, match=r":1: not valid JSON"):
        parse_items(["{oops"])
    with pytest.raises(lc.InvalidRequestError, match="already used on line 1"):
        parse_items(['{"id": 1, "prompt": "a"}', '{"id": 1, "prompt": "b"}'])
    # A line's aspect ratio replaces a default size instead of clashing with it.
    (wide,) = parse_items(['{"prompt": "p", "aspect_ratio": "16:9"}'], defaults={"width": 256, "height": 256})
    assert wide.request.width > wide.request.height
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n# nothing\n")
    with pytest.raises(lc.InvalidRequestError, match="no prompts"):
        load_items(empty)


def test_items_report_every_bad_line_and_resolve_provider_names() -> None:
    def lookup(name: str) -> str:
        if name.lower() not in ("replicate", "fal"):
            raise ValueError(f"provider {name!r} is unknown")
        return name.lower()

    lines = ['{"prompt": "a", "steps": 3}', '"fine"', '{"prompt": "b", "provider": "nope"}', "{oops"]
    with pytest.raises(BatchFileError) as info:
        parse_items(lines, providers=lookup)
    assert [p.split(": ", 1)[0] for p in info.value.problems] == ["<batch>:1", "<batch>:3", "<batch>:4"]
    assert info.value.field == "steps" and info.value.hint is None
    (item,) = parse_items(['{"prompt": "c", "providers": ["FAL", "fal"]}'], providers=lookup)
    assert item.providers == ("fal",)


def test_file_stems_are_safe_and_distinct() -> None:
    ids = ["../../escape", "/etc/passwd", "..", ".hidden", "a/b", "a_b", "nul", "x" * 300, "plain-id_1.v2"]
    stems = [file_stem(i) for i in ids]
    assert len(set(stems)) == len(stems)
    for stem in stems:
        assert stem and "/" not in stem and "\\" not in stem and not stem.startswith(".") and len(stem) <= 90
    assert file_stem("plain-id_1.v2") == "plain-id_1.v2"


# -- manifest ------------------------------------------------------------------------------------


def test_manifest_keeps_valid_lines_after_a_corrupt_one_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    with Manifest(path) as manifest:
        for name in "abc":
            manifest.record(ManifestEntry(id=name, status="done"))
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "not json at all", lines[1], '{"id": 5}', lines[2]]) + "\n")
    with Manifest(path) as manifest:
        assert all(manifest.is_done(name) for name in "abc")
        assert [s.split(": ")[0] for s in manifest.skipped] == [f"{path}:2", f"{path}:4"]
        manifest.record(ManifestEntry(id="d", status="done"))
    with Manifest(path) as manifest:
        assert all(manifest.is_done(name) for name in "abcd")


def test_manifest_drops_a_torn_last_line_and_keeps_the_latest_entry(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    with Manifest(path) as manifest:
        manifest.record(ManifestEntry(id="a", status="failed", error="boom"))
        manifest.record(ManifestEntry(id="a", status="done", images=["images/a.png"]))
        manifest.record(ManifestEntry(id="b", status="canceled"))
    with path.open("a") as handle:
        handle.write('{"id": "c", "status": "do')  # killed mid-write
    with Manifest(path) as manifest:
        assert manifest.is_done("a") and manifest.status("b") == "canceled" and manifest.status("c") is None
        manifest.record(ManifestEntry(id="c", status="done"))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "a", "b", "c"]


# -- limits and pool -----------------------------------------------------------------------------


async def test_rate_limiter_spaces_starts() -> None:
    limiter = RateLimiter(parse_rate("20/s"))
    started = time.monotonic()
    for _ in range(4):
        await limiter.acquire()
    assert time.monotonic() - started >= 0.14  # 3 gaps of 50 ms


async def test_pool_cancels_the_others_when_one_fails() -> None:
    finished: list[int] = []

    async def work(n: int) -> None:
        if n == 0:
            raise RuntimeError("bad item")
        await asyncio.sleep(5)
        finished.append(n)

    with pytest.raises(RuntimeError, match="bad item"):
        await asyncio.wait_for(run_pool(range(4), work, 4), timeout=2)
    assert finished == []


async def test_provider_concurrency_limit_holds(
    lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle, tmp_path: Path
) -> None:
    fal_sandbox.configure(inference_s=0.2)
    fal = lc.FalGenerator(
        api_key="sandbox:key", base_url=lightning_sandbox.fal_url, rest_url=lightning_sandbox.fal_rest_url
    )
    limited = LimitedGenerator(fal, concurrency=2)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, fal_sandbox.stats()["running"] + fal_sandbox.stats()["queued"])
            await asyncio.sleep(0.01)

    items = parse_items([f'"prompt {i}"' for i in range(6)], defaults={"width": 256, "height": 256})
    watcher = asyncio.ensure_future(watch())
    async with lc.Router([limited]) as router:
        summary = await run_batch(router, items, tmp_path, concurrency=6)
    watcher.cancel()
    assert summary.done == 6 and 1 <= peak <= 2


# -- the runner: interrupted and resumed -------------------------------------------------------


def _entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_batch_interrupted_and_resumed_does_each_item_once(
    lightning_sandbox: Sandbox, replicate_sandbox: ProviderHandle, fal_sandbox: ProviderHandle, tmp_path: Path
) -> None:
    for handle in (replicate_sandbox, fal_sandbox):
        handle.configure(inference_s=0.1)
    prompts = [f"batch prompt {i}" for i in range(8)]
    items = parse_items([json.dumps(p) for p in prompts], defaults={"width": 256, "height": 256})
    manifest = tmp_path / "manifest.jsonl"

    async with _router(lightning_sandbox) as router:
        task = asyncio.ensure_future(run_batch(router, items, tmp_path, concurrency=2))
        deadline = time.monotonic() + 20
        while sum(e["status"] == "done" for e in (_entries(manifest) if manifest.exists() else [])) < 3:
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.02)
        # From now on jobs run long, so the cancel surely lands while one is in flight remotely.
        for handle in (replicate_sandbox, fal_sandbox):
            handle.configure(inference_s=30)
        while not any(
            j["status"] == "running" and time.time() - j["started_at"] > 0.2
            for j in replicate_sandbox.jobs() + fal_sandbox.jobs()
        ):
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    first = _entries(manifest)
    done_first = {e["id"] for e in first if e["status"] == "done"}
    assert 3 <= len(done_first) < 8
    assert any(e["status"] == "canceled" for e in first)  # in-flight items were recorded as such
    for entry in first:
        for image in entry["images"]:
            with Image.open(tmp_path / image) as opened:
                opened.verify()
    jobs = lightning_sandbox.replicate.jobs() + lightning_sandbox.fal.jobs()
    assert any(j["status"] == "canceled" for j in jobs)  # the abandoned remote jobs were cancelled
    assert not any(j["status"] in ("queued", "running") for j in jobs)

    for handle in (replicate_sandbox, fal_sandbox):
        handle.configure(inference_s=0.05)
    async with _router(lightning_sandbox) as router:
        summary = await run_batch(router, items, tmp_path, concurrency=2)
    assert summary.skipped == len(done_first) and summary.done == 8 - len(done_first) and summary.failed == 0

    final = Manifest(tmp_path / "manifest.jsonl")
    final.close()
    assert all(final.is_done(item.id) for item in items)
    done_lines = Counter(e["id"] for e in _entries(manifest) if e["status"] == "done")
    assert set(done_lines.values()) == {1}  # each item finished exactly once
    succeeded = Counter(
        j["input"]["prompt"]
        for j in lightning_sandbox.replicate.jobs() + lightning_sandbox.fal.jobs()
        if j["status"] == "succeeded"
    )
    by_id = {item.id: item.request.prompt for item in items}
    for item_id in done_first:
        assert succeeded[by_id[item_id]] == 1  # finished items were never generated again
    assert len(list((tmp_path / "images").glob("*.png"))) >= 8
