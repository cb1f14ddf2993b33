"""`FileStore`: images answered as `url`, kept in memory for a stated retention under `/v1/files/{id}`."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["FileStore", "StoredFile"]


@dataclass(frozen=True)
class StoredFile:
    data: bytes
    content_type: str
    expires_at: float


class FileStore:
    """At most `max_files` images, each for `retention_s` seconds; ids are unguessable tokens."""

    def __init__(self, retention_s: float, max_files: int) -> None:
        self.retention_s = retention_s
        self.max_files = max_files
        self._files: OrderedDict[str, StoredFile] = OrderedDict()

    def put(self, data: bytes, content_type: str, extension: str) -> str:
        """Store one image; returns its file id (with the extension)."""
        self._expire()
        file_id = f"{secrets.token_urlsafe(18)}.{extension}"
        self._files[file_id] = StoredFile(data, content_type, time.monotonic() + self.retention_s)
        while len(self._files) > self.max_files:
            self._files.popitem(last=False)
        return file_id

    def get(self, file_id: str) -> StoredFile | None:
        """The image, or None when unknown or expired."""
        self._expire()
        return self._files.get(file_id)

    def __len__(self) -> int:
        return len(self._files)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._files:
            oldest = next(iter(self._files.values()))
            if oldest.expires_at > now:
                break
            self._files.popitem(last=False)
