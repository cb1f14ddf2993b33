"""The playground driven in headless Chromium (Debian's `chromium`, through Playwright), started by the test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import lightning_client as lc
from lightning_client.serving.app import create_app
from lightning_client.serving.playground import playground_router
from lightning_client.serving.runner import ServerThread
from lightning_client.serving.settings import ServerSettings
from lightning_client.testing import Sandbox

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is part of the dev environment")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("LIGHTNING_CLIENT_REQUIRE_CHROMIUM") == "1":  # CI installs it: never skip there
    raise RuntimeError("LIGHTNING_CLIENT_REQUIRE_CHROMIUM=1 but no chromium on PATH")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH (CI installs Debian's chromium package; locally: apt-get install chromium)",
)
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
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
        sb.fal.configure(inference_s=0.15)
        with ServerThread(create_app(router, routers=[playground_router()])) as base:
            yield base


def test_typing_a_prompt_shows_images_that_follow_it(url: str, tmp_path: Path) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(f"{url}/")
            expect = sync_api.expect
            expect(page.locator("#status")).to_have_text("connected", timeout=30_000)
            frame = page.locator("#frame")
            page.locator("#prompt").press_sequentially("a lighthouse", delay=40)
            expect(frame).to_have_attribute("data-prompt", "a lighthouse", timeout=30_000)
            first_src = frame.get_attribute("src")
            assert first_src is not None and first_src.startswith("data:image/jpeg;base64,")
            first_send = int(frame.get_attribute("data-send-id") or 0)
            page.locator("#prompt").press_sequentially(" at dusk", delay=40)
            expect(frame).to_have_attribute("data-prompt", "a lighthouse at dusk", timeout=30_000)
            assert frame.get_attribute("src") != first_src
            assert int(frame.get_attribute("data-send-id") or 0) > first_send
            expect(page.locator("#meta-provider")).to_have_text("fal")
            expect(page.locator("#meta-latency")).to_contain_text(" ms")
            expect(page.locator("#meta-steps")).to_have_text("2")
            expect(page.locator("#ledger tbody tr")).to_contain_text(["fal"])
            natural = page.evaluate("() => document.getElementById('frame').naturalWidth")
            assert natural == 512
            shot = tmp_path / "playground.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()


@pytest.fixture(scope="module")
def keyed_url() -> Iterator[str]:
    """The playground of a server started with an API key ("k")."""
    with Sandbox() as sb:
        router = lc.Router(
            [
                lc.FalGenerator(
                    api_key="sandbox:key", base_url=sb.fal_url, run_url=sb.fal_run_url, rest_url=sb.fal_rest_url
                )
            ],
            retries=0,
        )
        app = create_app(router, settings=ServerSettings(api_keys=("k",)), routers=[playground_router()])
        with ServerThread(app) as base:
            yield base


def test_a_server_with_keys_asks_for_one_and_connects_with_it(keyed_url: str) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            icon = page.request.get(f"{keyed_url}/favicon.ico")
            assert icon.status == 200 and icon.headers["content-type"] == "image/x-icon"
            page.goto(f"{keyed_url}/")
            expect = sync_api.expect
            key = page.locator("#api-key")
            expect(key).to_be_visible(timeout=30_000)
            expect(page.locator("#status")).to_contain_text("needs an API key")
            key.fill("wrong")
            page.locator("#key-form button").click()
            expect(page.locator("#status")).to_contain_text("refused this API key (401", timeout=30_000)
            expect(page.locator("#error")).to_contain_text("invalid or missing API key")
            key.fill("k")
            page.locator("#key-form button").click()
            expect(page.locator("#status")).to_have_text("connected", timeout=30_000)
            expect(key).to_be_hidden()
            assert page.evaluate("() => sessionStorage.getItem('lightning-client.api-key')") == "k"
            page.locator("#prompt").press_sequentially("a lighthouse", delay=40)
            expect(page.locator("#frame")).to_have_attribute("data-prompt", "a lighthouse", timeout=30_000)
        finally:
            browser.close()
