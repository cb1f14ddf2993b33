"""A CI test using the sandbox pytest fixtures: no network, no keys, real HTTP on loopback.

Installing lightning-client registers the fixtures (`lightning_sandbox`, `replicate_sandbox`,
`fal_sandbox`) with pytest; run it with `pytest examples/test_ci_with_sandbox.py`.
"""

from __future__ import annotations

import pytest

import lightning_client as lc
from lightning_client.testing.sandbox import ProviderHandle, Sandbox

pytestmark = pytest.mark.asyncio  # also runs where pytest-asyncio is in strict mode


def make_app_router(replicate_url: str, fal_url: str, fal_rest_url: str) -> lc.Router:
    """What the application under test builds in production, with base URLs injected."""
    return lc.Router(
        [
            lc.ReplicateGenerator(api_key="r8_ci", base_url=replicate_url),
            lc.FalGenerator(api_key="ci:key", base_url=fal_url, rest_url=fal_rest_url),
        ],
        policy="priority",
    )


@pytest.fixture
def router(lightning_sandbox: Sandbox) -> lc.Router:
    return make_app_router(lightning_sandbox.replicate_url, lightning_sandbox.fal_url, lightning_sandbox.fal_rest_url)


async def test_generates_an_image(router: lc.Router, replicate_sandbox: ProviderHandle) -> None:
    async with router:
        result = await router.agenerate("a cat", width=512, height=512, seed=3)
    assert result.provider == "replicate" and result.seed == 3
    assert result.images[0].to_pil().size == (512, 512)


async def test_fails_over_when_replicate_is_down(
    router: lc.Router, replicate_sandbox: ProviderHandle, fal_sandbox: ProviderHandle
) -> None:
    replicate_sandbox.configure(error_status=503)
    async with router:
        result = await router.agenerate("a cat", width=512, height=512)
    assert result.provider == "fal"
    # A 503 to a create may hide a job: that attempt's outcome is "unknown" and it is never re-sent.
    assert [a.provider for a in result.attempts if not a.succeeded] == ["replicate"]


async def test_reports_when_everything_is_down(
    router: lc.Router, replicate_sandbox: ProviderHandle, fal_sandbox: ProviderHandle
) -> None:
    replicate_sandbox.configure(error_status=503)
    fal_sandbox.configure(error_status=503)
    async with router:
        with pytest.raises(lc.AllProvidersFailedError) as failure:
            await router.agenerate("a cat", width=512, height=512, timeout_s=10)
    assert {a.provider for a in failure.value.attempts} == {"replicate", "fal"}
