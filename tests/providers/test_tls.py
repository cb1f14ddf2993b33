"""Both hosted generators against the HTTPS sandbox: trusted through `SSL_CERT_FILE`, refused without it."""

from __future__ import annotations

import pytest

import lightning_client as lc
from lightning_client.testing.sandbox import Sandbox

REQUEST = lc.GenerationRequest(prompt="a lighthouse", width=512, height=512, seed=4)


def _generators(sb: Sandbox) -> list[lc.Generator]:
    return [
        lc.ReplicateGenerator(api_key="r8_test", base_url=sb.replicate_url),
        lc.FalGenerator(api_key="id:secret", base_url=sb.fal_url, run_url=sb.fal_run_url, rest_url=sb.fal_rest_url),
    ]


async def test_generators_trust_the_sandbox_through_ssl_cert_file(
    lightning_sandbox_tls: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", lightning_sandbox_tls.ca_bundle)
    for generator in _generators(lightning_sandbox_tls):
        async with generator:
            result = await generator.agenerate(REQUEST)
        assert result.images[0].width == 512 and result.images[0].height == 512
    assert lightning_sandbox_tls.replicate.stats()["requests"]["file"] == 1
    assert lightning_sandbox_tls.fal.stats()["requests"]["file"] == 1


async def test_an_untrusted_sandbox_certificate_is_refused(
    lightning_sandbox_tls: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    for generator in _generators(lightning_sandbox_tls):
        async with generator:
            with pytest.raises(lc.LightningError):
                await generator.agenerate(REQUEST)
    assert lightning_sandbox_tls.replicate.stats()["created"] == 0
    assert lightning_sandbox_tls.fal.stats()["created"] == 0
