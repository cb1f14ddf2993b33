"""`PostgresServer`: a throwaway PostgreSQL server for tests and benchmarks of the shared stores.

Runs Debian's `postgresql` binaries (`initdb`, `pg_ctl`; `LIGHTNING_CLIENT_PG_BIN` or
`/usr/lib/postgresql/15/bin`), as the `postgres` user when run as root (PostgreSQL refuses
root), on a free port of 127.0.0.1 with its socket and data in a temporary folder, trusting
local connections. `stop()` stops exactly this server and removes the folder.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

__all__ = ["PG_BIN", "PostgresServer"]

PG_BIN = Path(os.environ.get("LIGHTNING_CLIENT_PG_BIN") or "/usr/lib/postgresql/15/bin")


def _as_postgres(args: list[str]) -> list[str]:
    """`args` run as the `postgres` user when we are root."""
    if os.geteuid() != 0:
        return args
    return ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(args)]


class PostgresServer:
    """A PostgreSQL server of its own; `url(database)` names a database on it, `create_database()` makes one."""

    def __init__(self, bin_dir: Path = PG_BIN, user: str = "lc") -> None:
        self.bin_dir, self.user, self.host = bin_dir, user, "127.0.0.1"
        self.port = 0
        self._folder: Path | None = None

    @property
    def available(self) -> bool:
        return (self.bin_dir / "initdb").exists() and (self.bin_dir / "pg_ctl").exists()

    def start(self) -> PostgresServer:
        """initdb and start; raises RuntimeError (with the server's log) when it cannot."""
        if not self.available:
            raise RuntimeError(f"no initdb/pg_ctl under {self.bin_dir} (install Debian's postgresql package)")
        folder = Path(tempfile.mkdtemp(prefix="lc-pg-"))
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
        self._folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        options = f"-p {self.port} -k {folder} -c listen_addresses=127.0.0.1"
        try:
            self._run([str(self.bin_dir / "initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", self.user])
            self._run([*self._ctl(), "-o", options, "-l", str(folder / "log"), "-w", "start"])
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            log = folder / "log"
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            shutil.rmtree(folder, ignore_errors=True)
            self._folder = None
            raise RuntimeError(f"could not start PostgreSQL: {exc} {getattr(exc, 'stderr', b'')!r} {detail}") from None
        return self

    def stop(self) -> None:
        folder, self._folder = self._folder, None
        if folder is None:
            return
        try:
            subprocess.run(
                _as_postgres([*self._ctl(folder), "-m", "fast", "-w", "stop"]), capture_output=True, timeout=120
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def _ctl(self, folder: Path | None = None) -> list[str]:
        where = folder or self._folder
        assert where is not None
        return [str(self.bin_dir / "pg_ctl"), "-D", str(where / "data")]

    @staticmethod
    def _run(args: list[str]) -> None:
        subprocess.run(_as_postgres(args), check=True, capture_output=True, timeout=120)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
