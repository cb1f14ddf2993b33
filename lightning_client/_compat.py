"""Small shims for Python 3.10."""

from __future__ import annotations

import asyncio
import sys

if sys.version_info >= (3, 11):
    from asyncio import timeout as async_timeout
else:  # pragma: no cover - exercised on 3.10 only
    from async_timeout import timeout as async_timeout

#: What a deadline raises on every supported Python.
TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, asyncio.TimeoutError)

__all__ = ["TIMEOUT_ERRORS", "async_timeout"]
