from __future__ import annotations

import csv
import json
from pathlib import Path

from lightning_client._log import register_secret
from lightning_client.errors import AllProvidersFailedError, InvalidRequestError
from lightning_client.report import ResultRow, read_rows, rows_for_error, rows_for_result, write_rows
from lightning_client.result import Attempt, Cost, GeneratedImage, GenerationResult, Timings


def _attempt(provider: str, outcome: str, **extra: object) -> Attempt:
    return Attempt.model_validate({"provider": provider, "outcome": outcome, "seed": 5, "steps": 4, **extra})


def test_rows_for_result_one_row_per_attempt_images_on_the_winner() -> None:
    failed = _attempt(
        "replicate", "failed", error_type="ProviderUnavailableError", error_message="boom", status_code=503
    )
    won = _attempt(
        "fal",
        "succeeded",
        num_images=1,
        request_id="req-1",
        timings=Timings(queue_s=0.1, inference_s=0.5, download_s=0.05, total_s=0.8),
        cost=Cost(usd=0.002, basis="1 image x $0.002", estimated=False),
    )
    result = GenerationResult(
        images=[GeneratedImage(data=b"x", width=64, height=64, content_type="image/png")],
        seed=5,
        provider="fal",
        model="m",
        prompt="a cat",
        steps=4,
        attempts=[failed, won],
    )
    rows = rows_for_result(result, job="j", repeat=2, width=64, height=64, images=["images/a.png"])
    assert [(r.provider, r.outcome, r.attempt) for r in rows] == [("replicate", "failed", 1), ("fal", "succeeded", 2)]
    assert rows[0].images == [] and rows[0].status_code == 503 and rows[0].error_type == "ProviderUnavailableError"
    assert rows[1].images == ["images/a.png"]
    assert (rows[1].queue_s, rows[1].inference_s, rows[1].total_s, rows[1].cost_usd) == (0.1, 0.5, 0.8, 0.002)
    assert rows[1].cost_estimated is False and rows[1].request_id == "req-1" and rows[1].repeat == 2


def test_rows_for_error_uses_the_attempts_or_one_skipped_row() -> None:
    error = AllProvidersFailedError(
        "all failed", attempts=[_attempt("fal", "failed", error_type="RateLimitError")], provider="router"
    )
    rows = rows_for_error(error, job="j", prompt="p", provider="fal", steps=4, seed=5)
    assert [(r.provider, r.outcome, r.error_type) for r in rows] == [("fal", "failed", "RateLimitError")]
    skipped = rows_for_error(
        InvalidRequestError("steps=2 not supported", provider="router"),
        job="j",
        prompt="p",
        provider="replicate",
        steps=2,
        seed=5,
    )
    assert [(r.provider, r.outcome, r.error_type, r.steps) for r in skipped] == [
        ("router", "skipped", "InvalidRequestError", 2)
    ]


def test_csv_and_json_round_trip(tmp_path: Path, run_rows: list[ResultRow]) -> None:
    csv_path, json_path = write_rows(run_rows, tmp_path / "out")
    with csv_path.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == len(run_rows) == 7
    assert {
        "provider",
        "steps",
        "prompt",
        "seed",
        "queue_s",
        "inference_s",
        "download_s",
        "total_s",
        "cost_usd",
        "outcome",
    } <= set(records[0])
    assert records[0]["images"] == run_rows[0].images[0]
    assert {r["provider"] for r in records} == {"replicate", "fal"}
    assert len(json.loads(json_path.read_text())) == 7
    assert read_rows(json_path) == run_rows


def test_rows_never_carry_registered_secrets() -> None:
    secret = "r8_row-secret-token-99"
    register_secret(secret)
    attempt = _attempt(
        "replicate", "failed", error_type="AuthenticationError", error_message=f"token {secret} rejected"
    )
    error = AllProvidersFailedError("all failed", attempts=[attempt], provider="router")
    (row,) = rows_for_error(error, job="j", prompt="p", provider="replicate", steps=4, seed=5)
    assert row.error_message == "token ********** rejected"
