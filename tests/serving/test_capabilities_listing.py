"""/v1/capabilities lists every set sorted, and a format some generator serves natively only under `formats`."""

from __future__ import annotations

import httpx

import lightning_client as lc
from lightning_client.serving.app import create_app
from lightning_client.serving.runner import ServerThread
from lightning_client.testing import Sandbox


def test_capabilities_are_sorted_and_no_format_is_listed_twice() -> None:
    with Sandbox() as sb:
        router = lc.Router(
            [
                lc.FalGenerator(
                    api_key="sandbox:key", base_url=sb.fal_url, run_url=sb.fal_run_url, rest_url=sb.fal_rest_url
                ),
                lc.ReplicateGenerator(api_key="r8_sandbox", base_url=sb.replicate_url),
            ],
            retries=0,
        )
        with ServerThread(create_app(router)) as url:
            caps = httpx.get(f"{url}/v1/capabilities", timeout=30).json()["capabilities"]
    assert caps["native_steps"] == [1, 2, 4, 8]
    assert caps["formats"] == sorted(caps["formats"]) and "jpeg" in caps["formats"]
    assert not set(caps["formats"]) & set(caps["converted_formats"])
    assert caps["converted_formats"] == ["webp"]
