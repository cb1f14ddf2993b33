"""A real, throwaway PostgreSQL server for the state tests, and a fresh database per test.

The server (`lightning_client.testing.postgres.PostgresServer`) is Debian's `postgresql` package
(`initdb` + `pg_ctl`), run as the `postgres` user when the tests run as root (PostgreSQL refuses
root), on a free port of 127.0.0.1 with its socket in a temporary folder. It is started once per session and stopped at the end. Without the package the
tests that need it skip, except under CI (`CI=true`, or `LIGHTNING_CLIENT_REQUIRE_POSTGRES=1` as
`.ci/run` sets), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import lightning_client as lc
from lightning_client.testing import Sandbox
from lightning_client.testing.postgres import PostgresServer


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true" or os.environ.get("LIGHTNING_CLIENT_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required under CI: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Start one throwaway PostgreSQL server for the session; stop exactly it at the end."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (the `postgres` extra)")
    server = PostgresServer()
    try:
        server.start()
    except RuntimeError as exc:
        _unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the session's server (one per test)."""
    return postgres_server.create_database()


@pytest.fixture(scope="module")
def module_sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


@pytest.fixture
def sb(module_sandbox: Sandbox) -> Sandbox:
    module_sandbox.replicate.reset()
    module_sandbox.fal.reset()
    return module_sandbox


@pytest.fixture
def fal(sb: Sandbox) -> Iterator[lc.FalGenerator]:
    generator = lc.FalGenerator(api_key="fal-test", base_url=sb.fal_url)
    yield generator
    generator.close()
