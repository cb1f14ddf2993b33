"""BaseGenerator: validation before sending, deadline, attempts, observers, sync/async use."""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest
from PIL import Image

import lightning_client as lc
from lightning_client._sync import PerLoop
from lightning_client.generator import AttemptContext, observe_attempts
from lightning_client.images import download_image
from lightning_client.result import Attempt
from tests.conftest import FileServer, Route


def _png(colour: tuple[int, int, int] = (0, 128, 255)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, format="PNG")
    return buf.getvalue()


class FileGenerator(lc.BaseGenerator):
    """Downloads a fixed image over real HTTP after an optional delay."""

    name = "files"
    model = "files/v1"

    def __init__(self, url: str, delay: float = 0.0) -> None:
        self.url = url
        self.delay = delay
        self.calls = 0
        self._clients: PerLoop[httpx.AsyncClient] = PerLoop(lambda: httpx.AsyncClient(timeout=5))

    @property
    def capabilities(self) -> lc.Capabilities:
        return lc.Capabilities(native_steps=frozenset({4}), emulated_steps=frozenset({2}), max_side=1024, max_images=2)

    async def _generate(self, ctx: AttemptContext) -> lc.GenerationResult:
        self.calls += 1
        ctx.job_started(f"job-{self.calls}")
        await asyncio.sleep(self.delay)
        image, download_s = await download_image(
            self._clients.get(), self.url, provider=self.name, allow_loopback_http=True
        )
        images = [image.to_generated(url=self.url)] * ctx.request.num_images
        ctx.add_cost(lc.Cost(usd=0.001, basis="flat", estimated=False))
        return ctx.result(images, model=self.model, timings=lc.Timings(download_s=download_s))

    async def _close(self) -> None:
        client = self._clients.pop_current()
        if client is not None:
            await client.aclose()

    def _close_all(self) -> None:
        self._clients.pop_all()


@pytest.fixture
def gen(file_server: FileServer) -> FileGenerator:
    file_server.routes["/img.png"] = Route(body=_png(), headers={"Content-Type": "image/png"})
    return FileGenerator(file_server.url + "/img.png")


def test_sync_generate_returns_a_complete_result(gen: FileGenerator) -> None:
    result = gen.generate("a cat", seed=3, width=512, height=512)
    assert result.provider == "files" and result.model == "files/v1"
    assert result.seed == 3 and result.steps == 4 and result.prompt == "a cat"
    assert result.request_id == "job-1"
    assert result.images[0].width == 64
    assert result.timings.total_s is not None and result.timings.total_s >= result.timings.download_s  # type: ignore[operator]
    assert result.cost.usd == 0.001
    (attempt,) = result.attempts
    assert attempt.outcome == "succeeded" and attempt.remote_ids == ["job-1"] and attempt.num_images == 1


async def test_sync_inside_a_running_loop_then_async_then_sync_again(gen: FileGenerator) -> None:
    first = gen.generate(lc.GenerationRequest(prompt="x"))
    second = await gen.agenerate(lc.GenerationRequest(prompt="x"))
    third = gen.generate("x")
    results = await asyncio.gather(*(gen.agenerate("x") for _ in range(20)))
    assert {r.images[0].data for r in (first, second, third, *results)} == {first.images[0].data}
    await gen.aclose()
    gen.close()


def test_capability_problems_raise_before_anything_is_sent(gen: FileGenerator) -> None:
    with pytest.raises(lc.InvalidRequestError) as info:
        gen.generate("x", steps=8)
    assert "steps=8" in str(info.value) and info.value.provider == "files"
    with pytest.raises(lc.InvalidRequestError, match=r"width=2048 outside 64\.\.1024"):
        gen.generate("x", width=2048)
    with pytest.raises(lc.InvalidRequestError, match="num_images=3 above 2"):
        gen.generate("x", num_images=3)
    with pytest.raises(lc.InvalidRequestError, match="allow_emulation=False"):
        gen.generate("x", steps=2, allow_emulation=False)
    assert gen.calls == 0


def test_emulated_steps_and_ignored_settings_are_warned(gen: FileGenerator) -> None:
    result = gen.generate("x", steps=2, negative_prompt="ugly", guidance_scale=2.0)
    kinds = {(w.kind, w.setting) for w in result.warnings}
    assert kinds == {("emulated", "steps"), ("unsupported", "negative_prompt"), ("unsupported", "guidance_scale")}


def test_deadline_raises_timeout_with_the_remote_id(gen: FileGenerator) -> None:
    gen.delay = 2.0
    events: list[tuple[str, Attempt]] = []
    with (
        observe_attempts(lambda event, attempt: events.append((event, attempt.model_copy()))),
        pytest.raises(lc.GenerationTimeoutError) as info,
    ):
        gen.generate("x", timeout_s=0.2)
    err = info.value
    assert err.provider == "files" and err.request_id == "job-1" and err.retryable
    assert err.attempt is not None and err.attempt.outcome == "failed"
    assert err.attempt.error_type == "GenerationTimeoutError"
    # The sync wrapper carries the caller's context to the background loop, so observers see it.
    assert [e for e, _ in events] == ["start", "job", "end"]
    assert events[-1][1].outcome == "failed"


async def test_observers_see_start_job_and_end(gen: FileGenerator) -> None:
    events: list[tuple[str, str | None, str | None]] = []
    with observe_attempts(lambda event, attempt: events.append((event, attempt.request_id, attempt.outcome))):
        await gen.agenerate("x")
    assert events == [("start", None, None), ("job", "job-1", None), ("end", "job-1", "succeeded")]


async def test_cancelling_the_task_records_a_canceled_attempt(gen: FileGenerator) -> None:
    gen.delay = 5.0
    ends: list[Attempt] = []
    with observe_attempts(lambda event, attempt: ends.append(attempt) if event == "end" else None):
        task = asyncio.create_task(gen.agenerate("x"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [a.outcome for a in ends] == ["canceled"]


async def test_bad_images_and_unexpected_errors_become_provider_response_errors(file_server: FileServer) -> None:
    file_server.routes["/bad.png"] = Route(body=b"not an image", headers={"Content-Type": "image/png"})
    gen = FileGenerator(file_server.url + "/bad.png")
    with pytest.raises(lc.ProviderResponseError, match="not a PNG") as info:
        await gen.agenerate("x")
    assert info.value.attempt is not None and info.value.attempt.outcome == "failed"
    assert info.value.request_id == "job-1" and info.value.provider == "files"
    gen.url = 42  # type: ignore[assignment] - a bug inside a provider
    with pytest.raises(lc.ProviderResponseError, match="unexpected") as bug:
        await gen.agenerate("x")
    assert bug.value.attempt is not None and bug.value.attempt.error_type == "ProviderResponseError"


def test_generators_satisfy_the_protocol(gen: FileGenerator) -> None:
    assert isinstance(gen, lc.Generator)
    with gen as same:
        assert same is gen
    assert "FileGenerator" in repr(gen)
