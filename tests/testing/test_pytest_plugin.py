"""The pytest plugin's fixtures, as users get them through the `pytest11` entry point."""

from __future__ import annotations

import importlib.metadata

import httpx

from lightning_client.testing.sandbox import ProviderHandle, Sandbox


def test_entry_point_is_registered() -> None:
    entry_points = importlib.metadata.entry_points(group="pytest11")
    assert any(ep.value == "lightning_client.testing.pytest_plugin" for ep in entry_points)


def test_fixtures_share_one_sandbox(
    lightning_sandbox: Sandbox, replicate_sandbox: ProviderHandle, fal_sandbox: ProviderHandle
) -> None:
    assert replicate_sandbox is lightning_sandbox.replicate and fal_sandbox is lightning_sandbox.fal
    replicate_sandbox.configure(error_status=503)
    response = httpx.get(f"{replicate_sandbox.url}/v1/predictions", headers={"Authorization": "Bearer r8_x"})
    assert response.status_code == 503


def test_handles_are_reset_between_tests(replicate_sandbox: ProviderHandle) -> None:
    # The previous test left error_status=503 behind.
    response = httpx.get(f"{replicate_sandbox.url}/v1/predictions", headers={"Authorization": "Bearer r8_x"})
    assert response.status_code == 200
    assert replicate_sandbox.stats()["requests"] == {"list": 1}
