"""`FileStore`: images answered as `url`, kept in memory for a stated retention under `/v1/files/{id}`."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["FileStore", "FileTooLargeError", "StoredFile"]


class FileTooLargeError(ValueError):
    """One image is larger than the whole store may hold."""


@dataclass(frozen=True)
class StoredFile:
    data: bytes
    content_type: str
    expires_at: float


class FileStore:
    """At most `max_files` images and `max_bytes` bytes, each for `retention_s` seconds; ids are unguessable tokens.

    The oldest images are dropped first when a new one would pass either bound.
    """

    def __init__(self, retention_s: float, max_files: int, max_bytes: int | None = None) -> None:
        self.retention_s = retention_s
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.bytes = 0
        self._files: OrderedDict[str, StoredFile] = OrderedDict()

    def put(self, data: bytes, content_type: str, extension: str) -> str:
        """Store one image; returns its file id (with the extension).

        Raises `FileTooLargeError` when the image alone is larger than `max_bytes`.
        """
        if self.max_bytes is not None and len(data) > self.max_bytes:
            raise FileTooLargeError(
                f"an image of {len(data)} bytes is larger than the server's file store ({self.max_bytes} bytes); "
                "ask for response_format='b64_json'"
            )
        self._expire()
        file_id = f"{secrets.token_urlsafe(18)}.{extension}"
        self._files[file_id] = StoredFile(data, content_type, time.monotonic() + self.retention_s)
        self.bytes += len(data)
        while len(self._files) > self.max_files or (self.max_bytes is not None and self.bytes > self.max_bytes):
            self._drop_oldest()
        return file_id

    def get(self, file_id: str) -> StoredFile | None:
        """The image, or None when unknown or expired."""
        self._expire()
        return self._files.get(file_id)

    def __len__(self) -> int:
        return len(self._files)

    def _drop_oldest(self) -> None:
        _, dropped = self._files.popitem(last=False)
        self.bytes -= len(dropped.data)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._files:
            oldest = next(iter(self._files.values()))
            if oldest.expires_at > now:
                break
            self._drop_oldest()
