from __future__ import annotations

import pytest
import typer

import lightning_client as lc
from lightning_client.batching import parse_rate
from lightning_client.cli._common import (
    error_line,
    missing_keys_message,
    parse_limits,
    parse_providers,
    parse_steps,
    size_fields,
)
from lightning_client.errors import AllProvidersFailedError, AuthenticationError
from lightning_client.providers.fal import fal_key
from lightning_client.sandbox_endpoints import SandboxEndpoints
from lightning_client.testing import ENDPOINTS


def test_error_line_masks_registered_secrets() -> None:
    secret = "fal-id:very-secret-value-42"
    assert fal_key(secret) is not None  # registers the secret with the masker
    error = AuthenticationError(f"rejected key {secret}", provider="fal", status_code=401, request_id="r1")
    line = error_line(error)
    assert secret not in line and "very-secret-value-42" not in line
    assert line.startswith("AuthenticationError [fal]: rejected key ") and "(status=401, request_id=r1)" in line
    assert "\n" not in error_line(AllProvidersFailedError("a\nb", attempts=[], provider="router"))


def test_option_parsers_name_what_is_allowed() -> None:
    assert parse_providers("fal, replicate,fal") == ["fal", "replicate"]
    assert parse_steps("1,2,4,8") == [1, 2, 4, 8]
    assert size_fields("512x768", None) == {"width": 512, "height": 768}
    assert size_fields(None, "16:9") == {"aspect_ratio": "16:9"}
    assert parse_limits(["fal=30/min"], "--rate-limit", parse_rate) == {"fal": 0.5}
    assert parse_providers("FAL,Replicate") == ["fal", "replicate"]
    with pytest.raises(typer.BadParameter, match="fal, local, remote, replicate"):
        parse_providers("openai")
    with pytest.raises(typer.BadParameter, match="1, 2, 4 or 8"):
        parse_steps("3")
    with pytest.raises(typer.BadParameter, match="PROVIDER=VALUE"):
        parse_limits(["fal"], "--rate-limit", parse_rate)
    with pytest.raises(typer.BadParameter, match="N/min"):
        parse_limits(["fal=fast"], "--rate-limit", parse_rate)


def test_missing_keys_message_lists_only_missing_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REPLICATE_API_TOKEN", "FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_abcdefgh")
    message = missing_keys_message(["replicate", "fal"], "compare")
    assert "FAL_KEY" in message and "REPLICATE_API_TOKEN" not in message
    assert "lightning-client compare --sandbox" in message


def test_sandbox_url_maps_to_consecutive_ports() -> None:
    endpoints = SandboxEndpoints.from_url("http://127.0.0.1:8800", ENDPOINTS)
    assert endpoints.urls == {
        "replicate": "http://127.0.0.1:8800",
        "fal": "http://127.0.0.1:8801",
        "fal_run": "http://127.0.0.1:8802",
        "fal_rest": "http://127.0.0.1:8803",
    }
    with pytest.raises(lc.ConfigurationError, match="allowed: fal, fal_rest, fal_run, replicate"):
        endpoints.url("acme")
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        SandboxEndpoints.from_url("https://example.com", ENDPOINTS)
