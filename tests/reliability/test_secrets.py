"""Secrets never leak: with DEBUG logging on, tokens stay out of logs, reprs, exceptions, ledger rows,
CSV/JSON exports and comparison reports, for successes and for every kind of failure."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import lightning_client as lc
from lightning_client.report import rows_for_error, rows_for_result, write_report
from lightning_client.testing.sandbox import Sandbox

REPLICATE_TOKEN = "r8_SeCrEt0replicate0token0123456789"
FAL_KEY_ID = "fal-key-id-0042"
FAL_SECRET = "fAlSeCrEt0key0secret0abcdef987654"
FAL_KEY = f"{FAL_KEY_ID}:{FAL_SECRET}"
#: What must never appear anywhere (the fal key id alone is not secret, its secret half is).
SECRETS = (REPLICATE_TOKEN, FAL_SECRET)


def _assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret leaked into {where}"


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger at DEBUG (ours, httpx, httpcore, asyncio) captured."""
    caplog.set_level(logging.DEBUG)
    for name in ("lightning_client", "httpx", "httpcore", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog


def _all_log_text(caplog: pytest.LogCaptureFixture) -> str:
    lines = []
    for record in caplog.records:
        lines.append(record.getMessage())
        lines.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            lines.append(repr(record.exc_info[1]))
            lines.append(str(record.exc_info[1]))
    return "\n".join(lines) + caplog.text


@pytest.fixture
def echo_server() -> Iterator[str]:
    """An API that answers every request 401 and quotes the credentials it was sent (some providers do)."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            sent = self.headers.get("Authorization", "")
            body = json.dumps({"detail": f"invalid credentials: {sent}", "error_type": "unauthorized"}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_tokens_never_leak_anywhere(
    debug_logs: pytest.LogCaptureFixture, tmp_path: Path, lightning_sandbox: Sandbox
) -> None:
    sb = lightning_sandbox
    sb.replicate.reset()
    sb.fal.reset()
    ledger = lc.Ledger(tmp_path / "ledger.sqlite")
    replicate = lc.ReplicateGenerator(api_key=REPLICATE_TOKEN, base_url=sb.replicate_url)
    fal = lc.FalGenerator(api_key=FAL_KEY, base_url=sb.fal_url, rest_url=sb.fal_rest_url)
    router = lc.Router([replicate, fal], ledger=ledger, retries=0)
    texts: dict[str, str] = {"router repr": repr(router), "replicate repr": repr(replicate), "fal repr": repr(fal)}
    results: list[lc.GenerationResult] = []
    errors: list[lc.LightningError] = []
    request = lc.GenerationRequest(prompt="a red fox", width=256, height=256, seed=7, timeout_s=5)
    try:
        for provider in ("replicate", "fal"):
            results.append(await router.agenerate(request, providers=[provider]))
        # Failures of every kind: faults on both providers, then both rejecting the credentials.
        for fault in ("job_error", "malformed_json", "reset", "truncated_image", "nsfw"):
            sb.replicate.configure(fault=fault)
            sb.fal.configure(fault=fault)
            try:
                results.append(await router.agenerate(request))
            except lc.LightningError as exc:
                errors.append(exc)
        sb.replicate.configure(fault=None, valid_tokens=["r8_someone_else"])
        sb.fal.configure(fault=None, valid_tokens=["someone:else"])
        with pytest.raises(lc.AllProvidersFailedError) as denied:
            await router.agenerate(request)
        errors.append(denied.value)
        assert {a.error_type for a in denied.value.attempts} == {"AuthenticationError"}
    finally:
        await router.aclose()
    assert len(errors) >= 3

    for index, result in enumerate(results):
        texts[f"result {index}"] = result.model_dump_json(exclude={"images"}) + repr(result)
    for index, error in enumerate(errors):
        chain: list[BaseException] = [error]
        if isinstance(error, lc.AllProvidersFailedError):
            chain += [a for a in (error.__cause__,) if a is not None]
            texts[f"error {index} attempts"] = json.dumps([a.model_dump(mode="json") for a in error.attempts])
        for failure in chain:
            texts[f"error {index}"] = texts.get(f"error {index}", "") + str(failure) + repr(failure)
            if isinstance(failure, lc.LightningError):
                texts[f"error {index}"] += json.dumps(failure.to_dict(), default=str)
    texts["ledger records"] = json.dumps([a.model_dump(mode="json") for a in ledger.records()])
    texts["ledger summary"] = json.dumps([s.model_dump(mode="json") for s in ledger.summary()], default=str)
    texts["ledger csv"] = ledger.to_csv(tmp_path / "ledger.csv").read_text()
    texts["ledger json"] = ledger.to_json(tmp_path / "ledger.json").read_text()
    ledger.close()
    texts["ledger sqlite"] = (tmp_path / "ledger.sqlite").read_bytes().decode("latin-1")

    rows = []
    for index, result in enumerate(results):
        rows += rows_for_result(result, job=f"ok-{index}", width=256, height=256)
    for index, error in enumerate(errors):
        rows += rows_for_error(error, job=f"err-{index}", prompt="a red fox", provider="router", steps=4, seed=7)
    files = write_report(rows, tmp_path / "report", contact_sheets=False)
    for path in (files.csv, files.json, files.markdown):
        texts[f"report {path.name}"] = path.read_text()
    texts["logs"] = _all_log_text(debug_logs)

    assert any(r.levelno == logging.DEBUG and r.name.startswith("lightning_client") for r in debug_logs.records)
    for where, text in texts.items():
        _assert_clean(text, where)


@pytest.mark.parametrize("provider", ["replicate", "fal"])
async def test_a_provider_that_quotes_the_token_back_does_not_leak_it(
    debug_logs: pytest.LogCaptureFixture, echo_server: str, provider: str, tmp_path: Path
) -> None:
    generator: lc.ReplicateGenerator | lc.FalGenerator
    if provider == "replicate":
        generator = lc.ReplicateGenerator(api_key=REPLICATE_TOKEN, base_url=echo_server)
    else:
        generator = lc.FalGenerator(api_key=FAL_KEY, base_url=echo_server, rest_url=echo_server)
    ledger = lc.Ledger()
    try:
        with ledger.observe(), pytest.raises(lc.AuthenticationError) as caught:
            await generator.agenerate(lc.GenerationRequest(prompt="x", width=256, height=256, timeout_s=5))
    finally:
        await generator.aclose()
    error = caught.value
    assert error.status_code == 401
    _assert_clean(str(error) + repr(error) + json.dumps(error.to_dict(), default=str), "the exception")
    assert error.attempt is not None
    _assert_clean(error.attempt.model_dump_json(), "the exception's attempt")
    _assert_clean(ledger.to_csv(tmp_path / "l.csv").read_text(), "the ledger CSV")
    _assert_clean(_all_log_text(debug_logs), "the logs")


def test_environment_tokens_stay_out_of_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", REPLICATE_TOKEN)
    monkeypatch.setenv("FAL_KEY", FAL_KEY)
    replicate, fal = lc.ReplicateGenerator(), lc.FalGenerator()
    for obj in (replicate, fal, lc.Router([replicate, fal])):
        _assert_clean(repr(obj) + str(obj), f"repr of {type(obj).__name__}")
        _assert_clean(repr(vars(obj)), f"attributes of {type(obj).__name__}")
