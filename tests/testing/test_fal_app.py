"""The fal emulator over real HTTP: queue lifecycle, SSE status stream, result, cancel, run, pricing, faults."""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from PIL import Image

from lightning_client.testing.sandbox import ProviderHandle, Sandbox

APP = "fal-ai/fast-lightning-sdxl"
INPUT = {"prompt": "a lighthouse at dusk", "seed": 7}


def submit(fal: httpx.Client, input: dict[str, Any] | None = None, /, **headers: str) -> httpx.Response:
    return fal.post(f"/{APP}", json=INPUT if input is None else input, headers=headers)


def wait_completed(fal: httpx.Client, status_url: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = fal.get(status_url).json()
        if body["status"] == "COMPLETED":
            return body
        time.sleep(0.02)
    raise AssertionError("request did not complete")


def test_submit_body_and_request_id_header(fal: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    response = submit(fal)
    assert response.status_code == 200
    body = response.json()
    rid = body["request_id"]
    base = f"{fal_sandbox.url}/{APP}/requests/{rid}"
    assert body == {
        "status": "IN_QUEUE",
        "request_id": rid,
        "response_url": base,
        "status_url": f"{base}/status",
        "cancel_url": f"{base}/cancel",
        "queue_position": 0,
    }
    assert response.headers["x-fal-request-id"] == rid


def test_status_codes_logs_and_metrics(fal: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(workers=1, inference_s=0.8)
    first, second = submit(fal).json(), submit(fal).json()
    time.sleep(0.1)
    queued = fal.get(second["status_url"])
    assert queued.status_code == 202 and queued.json()["status"] == "IN_QUEUE" and queued.json()["queue_position"] == 0
    running = fal.get(first["status_url"], params={"logs": "1"})
    assert running.status_code == 202 and running.json()["status"] == "IN_PROGRESS"
    assert running.json()["logs"][0]["message"] == "Generating with seed 7"
    assert set(running.json()["logs"][0]) == {"message", "level", "source", "timestamp"}
    for flag in ("0", "false"):
        assert fal.get(first["status_url"], params={"logs": flag}).json()["logs"] is None
    assert isinstance(fal.get(first["status_url"], params={"logs": "true"}).json()["logs"], list)
    done = wait_completed(fal, first["status_url"])
    assert fal.get(first["status_url"]).status_code == 200
    assert done["logs"] is None and 0.25 < done["metrics"]["inference_time"] < 1.0
    assert "error" not in done
    wait_completed(fal, second["status_url"])
    assert fal_sandbox.stats()["succeeded"] == 2


def test_queue_position_counts_requests_ahead(fal: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(workers=1, inference_s=1)
    handles = [submit(fal).json() for _ in range(4)]
    time.sleep(0.05)
    positions = [fal.get(h["status_url"]).json().get("queue_position") for h in handles]
    assert positions == [None, 0, 1, 2]
    assert fal_sandbox.stats()["queued"] == 3


def test_result_headers_and_body(fal: httpx.Client) -> None:
    handle = submit(
        fal, {**INPUT, "image_size": {"width": 640, "height": 384}, "format": "png", "num_images": 2}
    ).json()
    wait_completed(fal, handle["status_url"])
    result = fal.get(handle["response_url"])
    assert result.status_code == 200
    assert result.headers["x-fal-request-id"] == handle["request_id"]
    assert result.headers["x-fal-billable-units"] == "2"
    body = result.json()
    assert body["seed"] == 7 and body["prompt"] == INPUT["prompt"] and body["has_nsfw_concepts"] == [False, False]
    assert body["timings"]["inference"] > 0
    image = body["images"][0]
    assert (image["width"], image["height"], image["content_type"]) == (640, 384, "image/png")
    data = httpx.get(image["url"]).content
    assert Image.open(io.BytesIO(data)).size == (640, 384)


def test_result_before_completion_is_202_with_status(fal: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(inference_s=1)
    handle = submit(fal).json()
    early = fal.get(handle["response_url"])
    assert early.status_code == 202 and early.json()["status"] in ("IN_QUEUE", "IN_PROGRESS")


def test_status_stream_emits_changes_and_closes_after_completed(fal: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(inference_s=0.3, queue_s=0.1)
    handle = submit(fal).json()
    started = time.monotonic()
    with connect_sse(fal, "GET", handle["status_url"] + "/stream", params={"logs": "1"}) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        statuses = [json.loads(event.data)["status"] for event in source.iter_sse()]
    elapsed = time.monotonic() - started
    assert statuses == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert 0.35 < elapsed < 1.0  # released on completion, not on a polling tick
    assert fal_sandbox.stats()["requests"]["stream"] == 1


def test_cancel_codes(fal: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(inference_s=2)
    handle = submit(fal).json()
    response = fal.put(handle["cancel_url"])
    assert response.status_code == 202 and response.json() == {"status": "CANCELLATION_REQUESTED"}
    again = fal.put(handle["cancel_url"])
    assert again.status_code == 400 and again.json() == {"status": "ALREADY_COMPLETED"}
    status = fal.get(handle["status_url"]).json()
    assert status["status"] == "COMPLETED" and status["error_type"] == "client_cancelled"
    result = fal.get(handle["response_url"])
    assert result.status_code == 499 and result.json()["error_type"] == "client_cancelled"
    missing = fal.put(f"/{APP}/requests/00000000-0000-0000-0000-000000000000/cancel")
    assert missing.status_code == 404 and missing.json() == {"status": "NOT_FOUND"}
    assert fal_sandbox.stats()["canceled"] == 1


def test_sync_run(fal_run: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    response = fal_run.post(f"/{APP}", json={**INPUT, "image_size": "landscape_16_9"})
    assert response.status_code == 200
    assert response.json()["images"][0]["width"] == 1024 and response.json()["images"][0]["height"] == 576
    assert response.headers["x-fal-billable-units"] == "1"
    invalid = fal_run.post(f"/{APP}", json={"prompt": "x", "num_images": 9})
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == ["body", "num_images"]
    stats = fal_sandbox.stats()
    assert stats["requests"]["run"] == 2 and stats["succeeded"] == 1 and stats["failed"] == 1


def test_each_origin_serves_the_files_of_its_results(
    lightning_sandbox: Sandbox, fal: httpx.Client, fal_run: httpx.Client, fal_sandbox: ProviderHandle
) -> None:
    """Clients may trust only files on the origin they called: run results link to the run origin."""
    run = fal_run.post(f"/{APP}", json={**INPUT, "image_size": "square"}).json()["images"][0]
    assert run["url"].startswith(f"{lightning_sandbox.fal_run_url}/files/")
    assert Image.open(io.BytesIO(fal_run.get(run["url"]).content)).size == (512, 512)
    handle = submit(fal, {**INPUT, "image_size": "square"}).json()
    wait_completed(fal, handle["status_url"])
    queued = fal.get(handle["response_url"]).json()["images"][0]
    assert queued["url"].startswith(f"{lightning_sandbox.fal_url}/files/")
    assert fal.get(queued["url"]).content == fal_run.get(run["url"]).content  # same input, same image
    assert fal_sandbox.stats()["requests"]["file"] == 3
    assert fal_run.get("/files/nothing/0.jpeg").status_code == 404


def test_sync_mode_returns_data_uris(fal: httpx.Client) -> None:
    handle = submit(fal, {**INPUT, "sync_mode": True, "image_size": "square"}).json()
    wait_completed(fal, handle["status_url"])
    url = fal.get(handle["response_url"]).json()["images"][0]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.format == "JPEG" and image.size == (512, 512)


def test_pricing(lightning_sandbox: Sandbox, fal_sandbox: ProviderHandle) -> None:
    response = httpx.get(
        f"{lightning_sandbox.fal_rest_url}/v1/models/pricing",
        params={"endpoint_id": f"{APP},fal-ai/unknown"},
        headers={"Authorization": "Key id:secret"},
    )
    assert response.json() == {
        "prices": [{"endpoint_id": APP, "unit_price": 0.002, "unit": "image", "currency": "USD"}]
    }
    assert fal_sandbox.stats()["requests"]["pricing"] == 1


@pytest.mark.parametrize(
    ("change", "loc", "kind"),
    [
        ({"num_inference_steps": "3"}, ["body", "num_inference_steps"], "enum"),
        ({"num_inference_steps": 4}, ["body", "num_inference_steps"], "enum"),
        ({"image_size": "huge"}, ["body", "image_size"], "literal_error"),
        ({"image_size": {"width": 0, "height": 512}}, ["body", "image_size", "width"], "greater_than"),
        ({"num_images": 9}, ["body", "num_images"], "less_than_equal"),
        ({"num_images": 0}, ["body", "num_images"], "greater_than_equal"),
        ({"format": "webp"}, ["body", "format"], "enum"),
        ({"sync_mode": "yes"}, ["body", "sync_mode"], "bool_type"),
        ({"prompt": None}, ["body", "prompt"], "string_type"),
    ],
)
def test_invalid_input_is_422_at_result(fal: httpx.Client, change: dict[str, Any], loc: list[str], kind: str) -> None:
    handle = submit(fal, {**INPUT, **change}).json()
    wait_completed(fal, handle["status_url"])
    result = fal.get(handle["response_url"])
    assert result.status_code == 422
    [error] = result.json()["detail"]
    assert error["loc"] == loc and error["type"] == kind and error["msg"].startswith("Input should be")


def test_missing_prompt(fal: httpx.Client) -> None:
    handle = submit(fal, {"seed": 1}).json()
    wait_completed(fal, handle["status_url"])
    [error] = fal.get(handle["response_url"]).json()["detail"]
    assert error == {"type": "missing", "loc": ["body", "prompt"], "msg": "Field required", "input": {"seed": 1}}


def test_flat_errors_and_authentication(fal: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(error_status=503)
    response = submit(fal)
    assert response.status_code == 503
    assert response.json()["error_type"] == response.headers["x-fal-error-type"] == "runner_scheduling_failure"
    fal_sandbox.configure(error_status=None, valid_tokens=["id:good"])
    denied = submit(fal)
    assert denied.status_code == 401 and denied.json() == {"detail": "No user found for Key ID and Secret"}
    anonymous = httpx.post(f"{fal_sandbox.url}/{APP}", json=INPUT)
    assert anonymous.status_code == 401
    assert submit(fal, Authorization="Key id:good").status_code == 200
    assert fal_sandbox.stats()["created"] == 1


def test_error_rate(fal: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(error_rate=1.0)
    response = submit(fal)
    assert response.status_code == 503 and "error_type" in response.json()
    assert fal_sandbox.stats()["created"] == 0


def test_unknown_app_is_404(fal: httpx.Client) -> None:
    assert fal.post("/fal-ai/other-app", json=INPUT).status_code == 404
    assert fal.post(f"/{APP}/image-to-image", json=INPUT).status_code == 404


def test_request_timeout_header(fal: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(queue_s=1.0)
    handle = submit(fal, **{"X-Fal-Request-Timeout": "0.3"}).json()
    status = wait_completed(fal, handle["status_url"])
    assert status["error_type"] == "request_timeout" and status["error"] == "Request timed out"
    result = fal.get(handle["response_url"])
    assert result.status_code == 504
    assert result.headers["x-fal-request-timeout-type"] == "user"
    assert result.json()["error_type"] == "request_timeout"
    bad = submit(fal, **{"X-Fal-Request-Timeout": "0.05"})
    assert bad.status_code == 400 and bad.json()["error_type"] == "bad_request"
    fal_sandbox.configure(queue_s=0, inference_s=0.5)
    started = submit(fal, **{"X-Fal-Request-Timeout": "0.2"}).json()  # counts only until the job starts
    assert "error" not in wait_completed(fal, started["status_url"])


# -- faults ---------------------------------------------------------------------------------------


def test_fault_reset(fal: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(fault="reset")
    with pytest.raises(httpx.RemoteProtocolError):
        submit(fal)
    [job] = fal_sandbox.jobs()
    fal_sandbox.configure(fault=None)
    assert wait_completed(fal, f"/{APP}/requests/{job['id']}/status")["status"] == "COMPLETED"


def test_fault_hang(fal: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(fault="hang")
    with pytest.raises(httpx.ReadTimeout):
        fal.post(f"/{APP}", json=INPUT, timeout=0.5)
    assert fal_sandbox.stats()["created"] == 1


def test_fault_malformed_json(fal: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(fault="malformed_json")
    response = submit(fal)
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    assert fal_sandbox.stats()["created"] == 1


def test_fault_truncated_image(fal: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(fault="truncated_image")
    handle = submit(fal).json()
    wait_completed(fal, handle["status_url"])
    data = httpx.get(fal.get(handle["response_url"]).json()["images"][0]["url"]).content
    with pytest.raises(OSError):
        Image.open(io.BytesIO(data)).load()


def test_fault_job_error(fal: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(fault="job_error")
    handle = submit(fal).json()
    assert "error" not in wait_completed(fal, handle["status_url"])
    result = fal.get(handle["response_url"])
    assert result.status_code == 500
    assert result.json()["error_type"] == result.headers["x-fal-error-type"] == "runner_server_error"
    assert "job_error" in result.json()["detail"]
    assert fal_sandbox.stats()["failed"] == 1


def test_fault_completed_with_error(fal: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(fault="completed_with_error")
    handle = submit(fal).json()
    status = wait_completed(fal, handle["status_url"])
    assert (status["error"], status["error_type"]) == ("Runner disconnected", "runner_disconnected")
    assert fal.get(handle["response_url"]).status_code == 503


def test_fault_nsfw(fal: httpx.Client, fal_sandbox: ProviderHandle) -> None:
    fal_sandbox.configure(fault="nsfw")
    handle = submit(fal, {**INPUT, "num_images": 2}).json()
    wait_completed(fal, handle["status_url"])
    body = fal.get(handle["response_url"]).json()
    assert body["has_nsfw_concepts"] == [True, True] and len(body["images"]) == 2
    unchecked = submit(fal, {**INPUT, "enable_safety_checker": False}).json()
    wait_completed(fal, unchecked["status_url"])
    assert fal.get(unchecked["response_url"]).json()["has_nsfw_concepts"] == [False]


def test_provider_specific_faults_are_rejected(fal_sandbox: ProviderHandle, replicate_sandbox: ProviderHandle) -> None:
    with pytest.raises(ValueError, match="aborted"):
        fal_sandbox.configure(fault="aborted")
    with pytest.raises(ValueError, match="completed_with_error"):
        replicate_sandbox.configure(faults={"completed_with_error": 0.5})
