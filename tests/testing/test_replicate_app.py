"""The Replicate emulator over real HTTP: lifecycle, sync mode, deadlines, errors, retention, faults."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from lightning_client.testing import Latency
from lightning_client.testing._replicate_schema import VERSION
from lightning_client.testing.sandbox import ProviderHandle

INPUT = {"prompt": "a lighthouse at dusk", "seed": 7}


def create(rep: httpx.Client, input: dict[str, Any] | None = None, /, **headers: str) -> httpx.Response:
    return rep.post("/v1/predictions", json={"version": VERSION, "input": input or INPUT}, headers=headers)


def wait_terminal(rep: httpx.Client, prediction_id: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = rep.get(f"/v1/predictions/{prediction_id}").json()
        if body["status"] in ("succeeded", "failed", "canceled", "aborted"):
            return body
        time.sleep(0.02)
    raise AssertionError(f"prediction {prediction_id} did not finish")


def test_create_is_201_starting_with_urls_location_and_ratelimit(rep: httpx.Client) -> None:
    response = create(rep)
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "starting"
    assert body["version"] == VERSION and body["model"] == "bytedance/sdxl-lightning-4step"
    assert len(body["id"]) == 26 and body["id"].isalnum()
    assert body["output"] is None and body["data_removed"] is False and body["error"] is None
    assert set(body["urls"]) == {"get", "cancel", "web"} and all(isinstance(v, str) for v in body["urls"].values())
    assert body["urls"]["web"] == f"https://replicate.com/p/{body['id']}"
    assert response.headers["location"] == body["urls"]["get"]
    assert response.headers["ratelimit-remaining"] == "599" and response.headers["ratelimit-reset"] == "1"
    assert body["created_at"].endswith("Z")


def test_lifecycle_starting_processing_succeeded(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(inference_s=0.8)
    created = create(rep).json()
    time.sleep(0.15)
    running = rep.get(f"/v1/predictions/{created['id']}")
    assert running.headers["ratelimit-remaining"] == "59999"
    assert running.json()["status"] == "processing"
    assert running.json()["logs"].startswith("Using seed: 7\n")
    assert "started_at" in running.json()
    done = wait_terminal(rep, created["id"])
    assert done["status"] == "succeeded"
    assert done["output"] == [f"{replicate_sandbox.url}/files/{created['id']}/out-0.png"]
    assert done["metrics"]["predict_time"] >= 0.75 and done["metrics"]["total_time"] >= done["metrics"]["predict_time"]
    assert done["completed_at"] >= done["started_at"] >= done["created_at"]
    stats = replicate_sandbox.stats()
    assert stats["created"] == 1 and stats["succeeded"] == 1 and stats["running"] == 0
    assert stats["requests"]["create"] == 1 and stats["requests"]["get"] >= 2


def test_seed_is_drawn_and_logged_when_absent(rep: httpx.Client) -> None:
    body = create(rep, {"prompt": "no seed"}, Prefer="wait").json()
    seed = body["input"].get("seed")
    assert seed is None  # the input is echoed as sent
    assert body["logs"].startswith("Using seed: ")
    assert int(body["logs"].split("\n")[0].removeprefix("Using seed: ")) >= 0


def test_prefer_wait_answers_when_the_job_completes(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(inference_s=0.3)
    started = time.monotonic()
    response = create(rep, Prefer="wait")
    elapsed = time.monotonic() - started
    assert response.status_code == 201
    assert response.headers["preference-applied"] == "wait"
    assert response.json()["status"] == "succeeded" and len(response.json()["output"]) == 1
    assert 0.29 <= elapsed < 0.9  # answered on completion, not on a polling tick


def test_prefer_wait_that_runs_out_answers_starting(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(inference_s=3)
    started = time.monotonic()
    response = create(rep, Prefer="wait=1")
    assert 0.95 <= time.monotonic() - started < 1.8
    assert response.headers["preference-applied"] == "wait=1"
    body = response.json()
    assert body["status"] == "starting" and body["output"] is None
    assert rep.get(f"/v1/predictions/{body['id']}").json()["status"] == "processing"


def test_cancel_after_aborts_before_start_and_cancels_while_running(
    rep: httpx.Client, replicate_sandbox: ProviderHandle
) -> None:
    replicate_sandbox.configure(queue_s=1.0, cancel_after_min_s=0)
    aborted = create(rep, **{"Cancel-After": "200ms"}).json()
    assert aborted["deadline"].endswith("Z")
    replicate_sandbox.configure(queue_s=0, inference_s=1.0)
    canceled = create(rep, **{"Cancel-After": "0.2"}).json()
    first, second = wait_terminal(rep, aborted["id"]), wait_terminal(rep, canceled["id"])
    assert first["status"] == "aborted" and "metrics" not in first and "started_at" not in first
    assert second["status"] == "canceled" and 0.1 < second["metrics"]["predict_time"] < 0.8
    stats = replicate_sandbox.stats()
    assert stats["aborted"] == 1 and stats["canceled"] == 1


def test_cancel_after_minimum_and_bad_value(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(inference_s=1.0)
    body = create(rep, **{"Cancel-After": "1s"}).json()  # raised to the documented 5 s minimum
    assert wait_terminal(rep, body["id"])["status"] == "succeeded"
    bad = create(rep, **{"Cancel-After": "soon"})
    assert bad.status_code == 400 and "Cancel-After" in bad.json()["detail"]


def test_cancel(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(inference_s=2)
    body = create(rep).json()
    time.sleep(0.1)
    canceled = rep.post(f"/v1/predictions/{body['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert rep.post(f"/v1/predictions/{body['id']}/cancel").json()["status"] == "canceled"
    missing = rep.post("/v1/predictions/nope/cancel")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "The requested resource could not be found.", "status": 404}
    assert replicate_sandbox.stats()["canceled"] == 1


def test_list_is_newest_first_and_paginated(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(inference_s=0)
    ids = [create(rep).json()["id"] for _ in range(101)]
    page = rep.get("/v1/predictions").json()
    assert [p["id"] for p in page["results"]] == ids[::-1][:100] and page["previous"] is None
    following = rep.get(page["next"]).json()
    assert [p["id"] for p in following["results"]] == [ids[0]] and following["next"] is None


def test_version_route(rep: httpx.Client) -> None:
    body = rep.get(f"/v1/models/bytedance/sdxl-lightning-4step/versions/{VERSION}").json()
    assert body["id"] == VERSION and body["cog_version"]
    inputs = body["openapi_schema"]["components"]["schemas"]["Input"]["properties"]
    assert inputs["width"]["maximum"] == 1280 and inputs["num_outputs"]["maximum"] == 4
    assert body["openapi_schema"]["components"]["schemas"]["Output"]["type"] == "array"
    assert rep.get(f"/v1/models/bytedance/sdxl-lightning-4step/versions/{'0' * 64}").status_code == 404


def test_model_route_and_unknown_model(rep: httpx.Client) -> None:
    ok = rep.post(
        "/v1/models/bytedance/sdxl-lightning-4step/predictions", json={"input": INPUT}, headers={"Prefer": "wait"}
    )
    assert ok.status_code == 201 and ok.json()["status"] == "succeeded"
    assert rep.post("/v1/models/someone/else/predictions", json={"input": INPUT}).status_code == 404


@pytest.mark.parametrize(
    ("input", "field", "kind", "description"),
    [
        ({"width": 2000}, "input.width", "number_lte", "Must be less than or equal to 1280"),
        ({"height": 128}, "input.height", "number_gte", "Must be greater than or equal to 256"),
        ({"num_outputs": 5}, "input.num_outputs", "number_lte", "Must be less than or equal to 4"),
        ({"num_inference_steps": 0}, "input.num_inference_steps", "number_gte", "Must be greater than or equal to 1"),
        ({"guidance_scale": 51}, "input.guidance_scale", "number_lte", "Must be less than or equal to 50"),
        ({"width": "big"}, "input.width", "invalid_type", "Invalid type. Expected: integer, given: string"),
        ({"seed": None}, "input.seed", "invalid_type", "Invalid type. Expected: integer, given: null"),
    ],
)
def test_input_validation_422(
    rep: httpx.Client, input: dict[str, Any], field: str, kind: str, description: str
) -> None:
    response = create(rep, {"prompt": "x", **input})
    assert response.status_code == 422
    body = response.json()
    assert body["title"] == "Input validation failed" and body["status"] == 422
    assert body["invalid_fields"] == [{"type": kind, "field": field, "description": description}]
    assert body["detail"] == f"- {field}: {description}\n"


def test_unknown_inputs_are_ignored_with_a_warning_in_the_logs(rep: httpx.Client) -> None:
    """As on Replicate (cog PR #2943): an input the schema does not have is ignored, not a 422."""
    created = create(rep, {"prompt": "x", "size": "768x512", "aspect_ratio": "16:9"}, Prefer="wait")
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "succeeded" and body["input"] == {"prompt": "x", "size": "768x512", "aspect_ratio": "16:9"}
    image = Image.open(io.BytesIO(rep.get(body["output"][0]).content))
    assert image.size == (1024, 1024)  # the model's default size: `size` did nothing
    lines = body["logs"].splitlines()
    assert lines[:2] == [
        "Warning: ignoring input 'size': it is not in this model's input schema",
        "Warning: ignoring input 'aspect_ratio': it is not in this model's input schema",
    ]
    assert lines[2].startswith("Using seed: ")


def test_known_inputs_are_still_validated_beside_unknown_ones(rep: httpx.Client) -> None:
    response = create(rep, {"prompt": "x", "size": "768x512", "width": "768"})
    assert response.status_code == 422
    assert response.json()["invalid_fields"] == [
        {
            "type": "invalid_type",
            "field": "input.width",
            "description": "Invalid type. Expected: integer, given: string",
        }
    ]


def test_unknown_top_level_property_is_still_422(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    response = rep.post("/v1/predictions", json={"version": VERSION, "input": INPUT, "size": "768x512"})
    assert response.status_code == 422
    assert response.json()["invalid_fields"] == [
        {
            "type": "additional_property_not_allowed",
            "field": "(root)",
            "description": "Additional property size is not allowed",
        }
    ]
    assert replicate_sandbox.stats()["created"] == 0


def test_scheduler_enum_and_invalid_version(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    body = create(rep, {"scheduler": "EULER"}).json()
    assert body["invalid_fields"][0]["type"] == "enum"
    assert body["invalid_fields"][0]["description"].startswith('scheduler must be one of the following: "DDIM", ')
    bad = rep.post("/v1/predictions", json={"version": "f" * 64, "input": INPUT})
    assert bad.status_code == 422 and bad.json()["title"] == "Invalid version or not permitted"
    assert replicate_sandbox.stats()["created"] == 0


def test_authentication(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    anonymous = httpx.post(f"{replicate_sandbox.url}/v1/predictions", json={"version": VERSION, "input": INPUT})
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert anonymous.json() == {
        "title": "Unauthenticated",
        "detail": "You did not pass an authentication token",
        "status": 401,
    }
    replicate_sandbox.configure(valid_tokens=["r8_good"])
    wrong = create(rep)
    assert wrong.status_code == 401 and wrong.json()["detail"] == "You did not pass a valid authentication token"
    right = rep.get("/v1/predictions", headers={"Authorization": "Token r8_good"})
    assert right.status_code == 200
    assert replicate_sandbox.stats()["created"] == 0


@pytest.mark.parametrize(
    ("status", "detail"),
    [
        (402, "You need to set up billing"),
        (404, "The requested resource could not be found."),
        (429, "Request was throttled. Your rate limit resets in ~30s."),
        (500, "The sandbox answered 500"),
    ],
)
def test_error_status(rep: httpx.Client, replicate_sandbox: ProviderHandle, status: int, detail: str) -> None:
    replicate_sandbox.configure(error_status=status)
    response = create(rep)
    assert response.status_code == status and response.json()["detail"].startswith(detail)
    assert response.headers["content-type"] == "application/problem+json"
    assert rep.get("/v1/predictions/any").status_code == status
    if status == 429:
        assert response.headers["ratelimit-remaining"] == "0"
    replicate_sandbox.configure(error_status=None)
    assert create(rep).status_code == 201
    assert replicate_sandbox.stats()["created"] == 1


def test_error_rate(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(error_rate=1.0)
    response = create(rep)
    assert response.status_code == 503 and response.json()["status"] == 503
    replicate_sandbox.configure(error_rate=0.5)
    codes = [create(rep).status_code for _ in range(40)]
    assert 5 < codes.count(503) < 35 and codes.count(201) == replicate_sandbox.stats()["created"]


def test_data_removed_after_retention(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(retention_s=0.3)
    body = create(rep, Prefer="wait").json()
    assert body["output"] and body["data_removed"] is False
    time.sleep(0.35)
    later = rep.get(f"/v1/predictions/{body['id']}").json()
    assert later["data_removed"] is True and later["output"] is None and later["status"] == "succeeded"
    assert httpx.get(body["output"][0]).status_code == 404


def test_images_are_served_deterministic_and_sized(rep: httpx.Client) -> None:
    spec = {"prompt": "a red fox", "seed": 11, "width": 768, "height": 512, "num_outputs": 2}
    first = create(rep, spec, Prefer="wait").json()["output"]
    second = create(rep, spec, Prefer="wait").json()["output"]
    other_seed = create(rep, {**spec, "seed": 12}, Prefer="wait").json()["output"]
    assert [u.rsplit("/", 1)[1] for u in first] == ["out-0.png", "out-1.png"]
    files = [httpx.get(url) for url in (*first, *second, *other_seed)]
    assert all(f.status_code == 200 and f.headers["content-type"] == "image/png" for f in files)
    assert files[0].content == files[2].content and files[1].content == files[3].content
    assert files[0].content != files[1].content and files[0].content != files[4].content
    assert Image.open(io.BytesIO(files[0].content)).size == (768, 512)
    assert httpx.get(first[0], headers={"Authorization": "Bearer r8_test"}).status_code == 200


def test_workers_bound_concurrency(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(workers=1, inference_s=1.0)
    a, b = create(rep).json(), create(rep).json()
    time.sleep(0.1)
    assert rep.get(f"/v1/predictions/{b['id']}").json()["status"] == "starting"
    stats = replicate_sandbox.stats()
    assert stats["running"] == 1 and stats["queued"] == 1
    replicate_sandbox.configure(workers=2)
    time.sleep(0.1)
    assert rep.get(f"/v1/predictions/{b['id']}").json()["status"] == "processing"
    assert wait_terminal(rep, a["id"])["status"] == wait_terminal(rep, b["id"])["status"] == "succeeded"


def test_latency_distribution_is_used(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(inference_s=Latency.uniform(0.05, 0.1, seed=3))
    times = [create(rep, Prefer="wait").json()["metrics"]["predict_time"] for _ in range(3)]
    assert all(0.04 < t < 0.2 for t in times)


# -- faults ---------------------------------------------------------------------------------------


def test_fault_reset_creates_the_job_but_closes_the_connection(
    rep: httpx.Client, replicate_sandbox: ProviderHandle
) -> None:
    replicate_sandbox.configure(fault="reset")
    with pytest.raises(httpx.RemoteProtocolError):
        create(rep)
    jobs = replicate_sandbox.jobs()
    assert len(jobs) == 1
    replicate_sandbox.configure(fault=None)
    assert wait_terminal(rep, jobs[0]["id"])["status"] == "succeeded"


def test_fault_hang_holds_the_response_until_the_client_gives_up(
    rep: httpx.Client, replicate_sandbox: ProviderHandle
) -> None:
    replicate_sandbox.configure(fault="hang")
    with pytest.raises(httpx.ReadTimeout):
        rep.post("/v1/predictions", json={"version": VERSION, "input": INPUT}, timeout=0.5)
    assert replicate_sandbox.stats()["created"] == 1


def test_fault_malformed_json(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(fault="malformed_json")
    response = create(rep)
    assert response.status_code == 201
    with pytest.raises(ValueError):
        response.json()
    assert replicate_sandbox.stats()["created"] == 1


def test_fault_truncated_image(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(fault="truncated_image")
    body = create(rep, Prefer="wait").json()
    assert body["status"] == "succeeded"
    data = httpx.get(body["output"][0]).content
    replicate_sandbox.configure(fault=None)
    whole = httpx.get(create(rep, Prefer="wait").json()["output"][0]).content
    assert len(data) == len(whole) // 2 and whole.startswith(data)
    with pytest.raises(OSError):
        Image.open(io.BytesIO(data)).load()


def test_fault_job_error(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(fault="job_error")
    body = create(rep, Prefer="wait").json()
    assert body["status"] == "failed" and "job_error" in body["error"] and body["output"] is None
    assert replicate_sandbox.stats()["failed"] == 1


def test_fault_nsfw_drops_flagged_images(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(fault="nsfw")
    single = create(rep, Prefer="wait").json()
    assert single["status"] == "failed"
    assert (
        single["error"] == "All generated images contained NSFW content. Try running it again with a different prompt."
    )
    assert "NSFW content detected in image 0" in single["logs"]
    several = create(rep, {**INPUT, "num_outputs": 3}, Prefer="wait").json()
    assert several["status"] == "succeeded" and [u.rsplit("/", 1)[1] for u in several["output"]] == ["out-1.png"]
    unchecked = create(rep, {**INPUT, "disable_safety_checker": True}, Prefer="wait").json()
    assert unchecked["status"] == "succeeded" and len(unchecked["output"]) == 1


def test_fault_aborted(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    replicate_sandbox.configure(fault="aborted")
    body = create(rep, Prefer="wait").json()
    assert body["status"] == "aborted" and "metrics" not in body and "started_at" not in body
    assert replicate_sandbox.stats()["aborted"] == 1


def test_fault_probabilities_are_deterministic(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    def run() -> list[str]:
        replicate_sandbox.reset()
        replicate_sandbox.configure(faults={"job_error": 0.5}, inference_s=0)
        return [create(rep, Prefer="wait").json()["status"] for _ in range(12)]

    first = run()
    assert first == run()
    assert 0 < first.count("failed") < 12
