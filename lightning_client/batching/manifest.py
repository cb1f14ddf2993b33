"""The batch manifest: an append-only JSONL journal of finished items, so a re-run skips them.

Each line is written whole, flushed and fsynced after the item's images are on disk; an
interrupted write leaves at most a torn last line, which is dropped when the manifest
is opened again. A corrupt line elsewhere (e.g. edited by hand) is skipped and named in
`Manifest.skipped`; the valid lines around it are kept. The last entry for an id wins.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel, Field, ValidationError

from lightning_client.report.rows import ResultRow
from lightning_client.result import utcnow

__all__ = ["Manifest", "ManifestEntry"]

Status = Literal["done", "failed", "canceled"]


class ManifestEntry(BaseModel):
    """What happened to one item in one run."""

    id: str
    status: Status
    provider: str | None = None
    seed: int | None = None
    images: list[str] = Field(default_factory=list)
    cost_usd: float | None = 0.0  # None: unknown
    total_s: float | None = None
    error: str | None = None
    at: str = Field(default_factory=lambda: utcnow().isoformat())
    rows: list[ResultRow] = Field(default_factory=list)


class Manifest:
    """Reads the existing journal at `path` and appends new entries (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, ManifestEntry] = {}
        #: "path:line: why" for each corrupt line that was skipped when reading.
        self.skipped: list[str] = []
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        self._handle: IO[str] | None = path.open("a", encoding="utf-8")

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        lines = raw.splitlines(keepends=True)
        for number, line in enumerate(lines, start=1):
            torn = not line.endswith(b"\n")
            if not line.strip():
                continue
            try:
                entry = ManifestEntry.model_validate_json(line)
            except ValidationError as exc:
                if torn:  # an interrupted last write: drop it so appends start on a clean line
                    with self.path.open("r+b") as handle:
                        handle.truncate(len(raw) - len(line))
                    break
                why = exc.errors()[0].get("msg", "invalid") if exc.errors() else "invalid"
                self.skipped.append(f"{self.path}:{number}: corrupt entry skipped ({why})")
                continue
            self.entries[entry.id] = entry
            if torn:  # complete entry whose newline was not written
                with self.path.open("ab") as handle:
                    handle.write(b"\n")

    def status(self, item_id: str) -> Status | None:
        entry = self.entries.get(item_id)
        return None if entry is None else entry.status

    def is_done(self, item_id: str) -> bool:
        return self.status(item_id) == "done"

    def record(self, entry: ManifestEntry) -> None:
        """Append `entry` durably (one write, flush, fsync)."""
        line = entry.model_dump_json() + "\n"
        with self._lock:
            if self._handle is None:
                raise RuntimeError(f"manifest {self.path} is closed")
            self._handle.write(line)
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self.entries[entry.id] = entry

    def rows(self) -> list[ResultRow]:
        """Every attempt row of the latest entry per item."""
        return [row for entry in self.entries.values() for row in entry.rows]

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
