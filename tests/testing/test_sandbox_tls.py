"""`Sandbox(tls=True)`: every endpoint over HTTPS, a CA bundle that trusts it, env settings, cleanup."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import httpx
import pytest

from lightning_client.testing.sandbox import Sandbox

AUTH = {"Authorization": "Bearer r8_test"}
VERSION = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"


def test_every_endpoint_and_file_is_https(lightning_sandbox_tls: Sandbox) -> None:
    sb = lightning_sandbox_tls
    urls = [sb.replicate_url, sb.fal_url, sb.fal_run_url, sb.fal_rest_url]
    assert all(url.startswith("https://127.0.0.1:") for url in urls)
    verify = ssl.create_default_context(cafile=sb.ca_bundle)
    with httpx.Client(verify=verify, headers=AUTH, trust_env=False) as client:
        created = client.post(
            f"{sb.replicate_url}/v1/predictions",
            json={"version": VERSION, "input": {"prompt": "x", "width": 256, "height": 256}},
            headers={"Prefer": "wait"},
        ).json()
        assert created["output"][0].startswith(sb.replicate_url + "/files/")
        assert client.get(created["output"][0]).content.startswith(b"\x89PNG")
        jwks = client.get(f"{sb.fal_rest_url}/.well-known/jwks.json").json()
        assert jwks["keys"][0]["kty"] == "OKP"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sb.replicate_url}/v1/predictions", headers=AUTH, trust_env=False)  # certifi alone refuses it


def test_env_points_every_client_kind_at_the_bundle(lightning_sandbox_tls: Sandbox) -> None:
    env = lightning_sandbox_tls.env()
    bundle = lightning_sandbox_tls.ca_bundle
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == env["NODE_EXTRA_CA_CERTS"] == bundle
    assert env["REPLICATE_BASE_URL"].startswith("https://")
    text = Path(bundle).read_text()
    assert text.count("BEGIN CERTIFICATE") > 10  # the sandbox CA, then certifi's public roots


def test_certificates_are_removed_on_stop_and_plain_sandboxes_have_none() -> None:
    with Sandbox(tls=True, fal=False) as sb:
        bundle = sb.ca_bundle
        assert os.path.exists(bundle)
    assert not os.path.exists(bundle)
    with pytest.raises(RuntimeError, match="not running"):
        _ = sb.ca_bundle
    with Sandbox(fal=False) as plain:
        assert "SSL_CERT_FILE" not in plain.env()
        with pytest.raises(RuntimeError, match="tls=True"):
            _ = plain.ca_bundle
