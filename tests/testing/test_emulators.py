"""The emulator registry: what it lists, and a provider added by one module and one registration."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lightning_client import registry
from lightning_client.errors import ConfigurationError
from lightning_client.sandbox_endpoints import SandboxEndpoints
from lightning_client.testing import Sandbox, emulators
from lightning_client.testing._jobs import Job, JobState
from lightning_client.testing._provider import ProviderCore, json_response
from lightning_client.testing.emulators import Emulator, register_emulator
from tests.testing.conftest import sandbox_on_a_fixed_port


def _finish(job: Job) -> tuple[JobState, str | None, str | None]:
    return "succeeded", None, None


class EchoEmulation:
    """A provider of one endpoint whose POST /jobs answers the job it made."""

    def __init__(self, seed: int) -> None:
        self.core = ProviderCore("echo", seed, _finish)

    def apps(self, urls: Mapping[str, str]) -> dict[str, Starlette]:
        async def create(request: Request) -> Response:
            denied = self.core.gate(request, "create", lambda status: json_response({"status": status}, status))
            if denied is not None:
                return denied
            job = Job(id=str(self.core.draws.bits("id", 32)), input={}, seed=0, queue_s=0.0, inference_s=0.0)
            self.core.engine.submit(job)
            return json_response({"id": job.id, "url": urls["echo"]}, 201)

        return {"echo": Starlette(routes=[Route("/jobs", create, methods=["POST"])])}


class EchoGenerator:
    """Only what `Sandbox.env()` asks of a generator class."""

    @classmethod
    def sandbox_environment(cls, sandbox: SandboxEndpoints) -> dict[str, str]:
        return {"ECHO_URL": sandbox.url("echo")}


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The echo emulator and its generator, registered for this test only."""
    monkeypatch.setattr(emulators, "_EMULATORS", dict(emulators._EMULATORS))
    monkeypatch.setitem(registry.REGISTRY, "echo", EchoGenerator)
    emulator = Emulator("echo", ("echo",), EchoEmulation, {"ECHO_CLIENT_POLL": "0.01"})
    register_emulator(emulator)
    yield emulator


def test_the_built_in_endpoints_in_port_order() -> None:
    from lightning_client.testing import ENDPOINTS

    assert ENDPOINTS == ("replicate", "fal", "fal_run", "fal_rest")
    assert [e.name for e in emulators.emulators()] == ["replicate", "fal"]


def test_listing_endpoints_imports_no_server() -> None:
    code = (
        "import sys; from lightning_client.testing import ENDPOINTS; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn', 'httpx')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_registered_provider_is_served_after_the_others(echo: Emulator) -> None:
    from lightning_client.testing import ENDPOINTS

    assert ENDPOINTS == ("replicate", "fal", "fal_run", "fal_rest", "echo")
    sb, port = sandbox_on_a_fixed_port()
    with sb:
        assert sb.url("echo").endswith(f":{port + 4}") and sb.fal_rest_url.endswith(f":{port + 3}")
        assert SandboxEndpoints.from_url(sb.replicate_url, ENDPOINTS).urls == sb.urls


def test_a_registered_provider_has_a_handle_and_environment(echo: Emulator) -> None:
    with Sandbox(replicate=False, fal=False) as sb:
        handle = sb.provider("echo")
        assert handle.name == "echo" and handle.url == sb.url("echo")
        assert sb.env() == {"ECHO_URL": sb.url("echo"), "ECHO_CLIENT_POLL": "0.01"}
        response = httpx.post(f"{handle.url}/jobs", headers={"Authorization": "Bearer t"})
        assert response.status_code == 201 and response.json()["url"] == handle.url
        assert handle.stats()["requests"] == {"create": 1} and len(handle.jobs()) == 1
        handle.configure(error_status=429)
        assert httpx.post(f"{handle.url}/jobs", headers={"Authorization": "Bearer t"}).status_code == 429
        with pytest.raises(ValueError, match="unknown echo fault kind"):
            handle.configure(fault="aborted")  # Replicate's own fault: not in the common rules
        handle.reset()
        assert handle.stats()["requests"] == {} and handle.jobs() == []
        with pytest.raises(RuntimeError, match="replicate=False"):
            _ = sb.replicate_url


def test_unknown_or_clashing_providers_are_refused(echo: Emulator) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_emulator(echo)
    with pytest.raises(ValueError, match="taken"):
        register_emulator(Emulator("other", ("fal_run",), EchoEmulation))
    sb = Sandbox()
    with pytest.raises(ConfigurationError, match="allowed: replicate, fal, echo"):
        sb.provider("acme")
    with pytest.raises(ConfigurationError, match="allowed: replicate, fal, fal_run, fal_rest, echo"):
        sb.url("acme")
