"""Replicate emulator routes beyond predictions: model, versions, deployments, webhook secret; live logs."""

from __future__ import annotations

import time

import httpx
import pytest

from lightning_client.testing._behaviour import FAL_RULES, REPLICATE_RULES, Behaviour
from lightning_client.testing.sandbox import ProviderHandle

MODEL = "bytedance/sdxl-lightning-4step"
VERSION = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"
INPUT = {"prompt": "x", "seed": 9, "num_inference_steps": 4}


def test_model_and_versions(rep: httpx.Client) -> None:
    model = rep.get(f"/v1/models/{MODEL}").json()
    assert (model["owner"], model["name"], model["latest_version"]["id"]) == (
        "bytedance",
        "sdxl-lightning-4step",
        VERSION,
    )
    page = rep.get(f"/v1/models/{MODEL}/versions").json()
    assert page["next"] is None and page["previous"] is None and [v["id"] for v in page["results"]] == [VERSION]
    assert rep.get(f"/v1/models/{MODEL}/versions", params={"cursor": "!!"}).status_code == 400
    for path in ("/v1/models/acme/other", "/v1/models/acme/other/versions", "/v1/deployments/acme/none"):
        response = rep.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": "The requested resource could not be found.", "status": 404}


def test_deployment_route(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    body = {"input": INPUT}
    assert rep.post("/v1/deployments/acme/sdxl-lightning/predictions", json=body).status_code == 404
    replicate_sandbox.configure(deployments={"acme/sdxl-lightning": {}})
    created = rep.post("/v1/deployments/acme/sdxl-lightning/predictions", json=body)
    assert created.status_code == 201 and created.json()["deployment"] == "acme/sdxl-lightning"
    with_version = rep.post("/v1/deployments/acme/sdxl-lightning/predictions", json={**body, "version": VERSION})
    assert with_version.status_code == 422  # the model route's body: no version
    release = rep.get("/v1/deployments/acme/sdxl-lightning").json()["current_release"]
    assert release["configuration"] == {"hardware": "gpu-l40s", "min_instances": 0, "max_instances": 1}
    plain = rep.post("/v1/predictions", json={"version": VERSION, "input": INPUT}).json()
    assert "deployment" not in plain


@pytest.mark.parametrize(
    ("deployments", "message"),
    [
        ({"nameonly": {}}, "owner/name"),
        ({"a/b": {"gpus": 2}}, "gpus"),
        ({"a/b": {"min_instances": 3, "max_instances": 1}}, "min_instances"),
        ([("a/b", {})], "dict"),
    ],
)
def test_deployments_setting_is_validated(deployments: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Behaviour().updated("replicate", REPLICATE_RULES, {"deployments": deployments})
    with pytest.raises(ValueError, match="deployments"):
        Behaviour().updated("fal", FAL_RULES, {"deployments": {}})


def test_webhook_secret_needs_a_token(rep: httpx.Client, replicate_sandbox: ProviderHandle) -> None:
    key = rep.get("/v1/webhooks/default/secret").json()["key"]
    assert key.startswith("whsec_") and rep.get("/v1/webhooks/default/secret").json()["key"] == key
    assert httpx.get(f"{replicate_sandbox.url}/v1/webhooks/default/secret").status_code == 401


def test_logs_empty_at_creation_then_seed_then_a_line_per_step(
    rep: httpx.Client, replicate_sandbox: ProviderHandle
) -> None:
    replicate_sandbox.configure(inference_s=0.8, queue_s=0.2)
    created = rep.post("/v1/predictions", json={"version": VERSION, "input": INPUT}).json()
    assert created["logs"] == "" and created["status"] == "starting"
    seen: set[str] = set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        prediction = rep.get(f"/v1/predictions/{created['id']}").json()
        seen.add(prediction["logs"].splitlines()[-1] if prediction["logs"] else "")
        if prediction["status"] == "succeeded":
            break
        time.sleep(0.03)
    lines = prediction["logs"].splitlines()
    assert lines[:3] == ["Using seed: 9", "Prompt: x", "txt2img mode"]
    assert [line.split("|")[0].strip() for line in lines[3:]] == ["0%", "25%", "50%", "75%", "100%"]
    assert lines[-1].startswith("100%|██████████| 4/4 [")
    assert any(line.startswith((" 25%", " 50%", " 75%")) for line in seen)  # partial progress was visible
