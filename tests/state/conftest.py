"""A real, throwaway PostgreSQL server for the state tests, and a fresh database per test.

The server is Debian's `postgresql` package (`initdb` + `pg_ctl`), run as the `postgres` user when
the tests run as root (PostgreSQL refuses root), on a free port of 127.0.0.1 with its socket in a
temporary folder. It is started once per session and stopped at the end. Without the package the
tests that need it skip, except under CI (`CI=true`, or `LIGHTNING_CLIENT_REQUIRE_POSTGRES=1` as
`.ci/run` sets), where they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import lightning_client as lc
from lightning_client.testing import Sandbox

PG_BIN = Path(os.environ.get("LIGHTNING_CLIENT_PG_BIN", "/usr/lib/postgresql/15/bin"))


@dataclass(frozen=True)
class PostgresServer:
    """A running server: `url(db)` names a database on it."""

    host: str
    port: int
    user: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_postgres(args: list[str]) -> list[str]:
    """`args` run as the `postgres` user when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return args
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in args)]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true" or os.environ.get("LIGHTNING_CLIENT_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required under CI: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Start one throwaway PostgreSQL server for the session; stop exactly it at the end."""
    initdb, pg_ctl = PG_BIN / "initdb", PG_BIN / "pg_ctl"
    if not initdb.exists() or not pg_ctl.exists():
        _unavailable(f"no initdb/pg_ctl under {PG_BIN} (install Debian's postgresql package)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (the `postgres` extra)")
    folder = Path(tempfile.mkdtemp(prefix="lc-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port, user = folder / "data", _free_port(), "lc"
    ctl = [str(pg_ctl), "-D", str(data)]
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    try:
        subprocess.run(
            _as_postgres([str(initdb), "-D", str(data), "-A", "trust", "-U", user]),
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            _as_postgres([*ctl, "-o", options, "-l", f"{folder}/log", "-w", "start"]),
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        log = folder / "log"
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        _unavailable(f"could not start it: {exc} {getattr(exc, 'stderr', b'')!r} {detail}")
    try:
        yield PostgresServer(host="127.0.0.1", port=port, user=user)
    finally:
        subprocess.run(_as_postgres([*ctl, "-m", "fast", "-w", "stop"]), capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the session's server (one per test)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return postgres_server.url(name)


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
