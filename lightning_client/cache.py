"""`ResultCache`: results of explicit-seed requests, served again without a provider call.

A request whose seed was given explicitly is the same image every time it is sent with the same
image-changing fields to the same model, so its result can be kept. The key hashes every field
that changes the image (prompt, negative prompt, steps, size, seed, count, output format,
guidance, safety checker, the provider's options) with the provider's name, model and
checkpoint. Images are files named by their SHA-256 (content-addressed, shared by entries);
the index is a SQLite file in the cache folder, or PostgreSQL given a URL (then `folder` holds
the images, shared storage for several hosts). Identical requests in flight at once share one
provider call: in one process through a future, across processes through a "pending" index
entry that the others wait on (a pending entry of a process that is gone is taken over).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from lightning_client._log import get_logger
from lightning_client.generator import Generator
from lightning_client.request import GenerationRequest
from lightning_client.result import GeneratedImage, GenerationResult
from lightning_client.state import Store, is_url, open_store
from lightning_client.state.store import HEARTBEAT_S

__all__ = ["CacheMode", "ResultCache"]

logger = get_logger("lightning_client")

#: Per request: "on" (default: serve from and fill the cache), "off" (bypass it), "refresh" (call the
#: provider and replace the entry).
CacheMode = Literal["on", "off", "refresh"]
_MODES = ("on", "off", "refresh")
#: How often a request waits on an identical one in another process re-reads the index.
_POLL_S = 0.1


class ResultCache:
    """Results of explicit-seed requests by key, with a TTL and a size bound.

    Args:
        where: a folder (the images and `index.sqlite` in it) or a `postgresql://` URL (the index).
        folder: where image files go (default: `where`, or `./lightning-cache` for a URL).
        ttl_s: how long an entry is served (None: until evicted).
        max_bytes, max_entries: bounds; the least recently used entries go first (None: no bound).
        wait_s: longest wait on an identical request in flight elsewhere before calling the provider.
    """

    def __init__(
        self,
        where: str | Path,
        *,
        folder: str | Path | None = None,
        ttl_s: float | None = 86_400.0,
        max_bytes: int | None = 1 << 30,
        max_entries: int | None = None,
        wait_s: float = 600.0,
    ) -> None:
        for name, value in (("ttl_s", ttl_s), ("max_bytes", max_bytes), ("max_entries", max_entries)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        self.url = str(where) if is_url(where) else None
        self.folder = Path(folder) if folder is not None else Path("lightning-cache" if self.url else where)
        self.ttl_s, self.max_bytes, self.max_entries, self.wait_s = ttl_s, max_bytes, max_entries, wait_s
        self.folder.mkdir(parents=True, exist_ok=True)
        self._store: Store = open_store(self.url or self.folder / "index.sqlite")
        self._in_flight: dict[tuple[int, str], asyncio.Future[GenerationResult | None]] = {}

    # -- keys -----------------------------------------------------------------------------------

    @staticmethod
    def key(request: GenerationRequest, generator: Generator) -> str | None:
        """The entry key of `request` on `generator`; None when its seed was not given explicitly."""
        if "seed" not in request.model_fields_set:
            return None
        fields = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or "",
            "steps": request.steps,
            "size": request.size,
            "seed": request.seed,
            "num_images": request.num_images,
            "output_format": request.output_format,
            "guidance_scale": request.guidance_scale,
            "safety_checker": request.safety_checker,
            "options": request.options_for(generator.name),
            "provider": generator.name,
            "model": getattr(generator, "model", None),
            "checkpoint": str(getattr(generator, "checkpoint", None)),
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()

    # -- entries --------------------------------------------------------------------------------

    def _image_path(self, file: str) -> Path:
        return self.folder / "images" / file

    def _write(self, key: str, result: GenerationResult) -> None:
        images = []
        size = 0
        for image in result.images:
            digest = hashlib.sha256(image.data).hexdigest()
            file = f"{digest[:2]}/{digest}.{image.extension}"
            path = self._image_path(file)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                handle, temporary = tempfile.mkstemp(dir=path.parent)
                with os.fdopen(handle, "wb") as out:
                    out.write(image.data)
                os.replace(temporary, path)
            size += len(image.data)
            images.append({**image.model_dump(mode="json", exclude={"data"}), "file": file})
        entry = {**result.model_dump(mode="json", exclude={"images", "attempts", "warnings"}), "images": images}
        self._store.cache_store(key, json.dumps(entry), size, self.ttl_s)
        self._forget(self._store.cache_evict(self.max_bytes, self.max_entries))

    def _forget(self, results: list[str]) -> None:
        """Delete the image files of dropped entries that no remaining entry uses."""
        if not results:
            return
        kept = {img["file"] for entry in self._store.cache_results() for img in json.loads(entry)["images"]}
        for entry in results:
            for image in json.loads(entry)["images"]:
                if image["file"] not in kept:
                    with contextlib.suppress(OSError):
                        self._image_path(image["file"]).unlink()

    def _read(self, key: str) -> tuple[str, GenerationResult | None]:
        state, row = self._store.cache_lookup(key)
        if state != "ready" or row is None:
            return state, None
        entry: dict[str, Any] = json.loads(row["result"])
        images = []
        for image in entry.pop("images"):
            path = self._image_path(image.pop("file"))
            try:
                data = path.read_bytes()
            except OSError:  # its file was removed: a miss
                self._store.cache_drop(key)
                return "missing", None
            images.append(GeneratedImage(data=data, **image))
        return "ready", GenerationResult(images=images, **entry)

    def get(self, key: str) -> GenerationResult | None:
        """The cached result of `key` (marked `cached`), or None."""
        _, result = self._read(key)
        if result is not None:
            result.cached = True
        return result

    def put(self, key: str, result: GenerationResult) -> None:
        """Store `result` under `key` (replacing what was there), then apply the bounds."""
        self._write(key, result)

    def clear(self) -> None:
        """Drop every entry (and its images)."""
        self._forget(self._store.cache_evict(0, 0))

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultCache({(self.url and self._store.where) or self.folder})"

    # -- one provider call per key --------------------------------------------------------------

    async def serve(
        self,
        key: str,
        mode: CacheMode,
        call: Callable[[], Awaitable[GenerationResult]],
        *,
        store_key: Callable[[GenerationResult], str | None],
    ) -> GenerationResult:
        """The result of `key`: from the cache, from an identical request in flight, or from `call()`.

        `store_key(result)` names the entry the fresh result is stored under (the provider
        that served it may be a failover one). A result not from `call()` has `cached` True.
        """
        if mode not in _MODES:
            raise ValueError(f"cache={mode!r} is invalid; allowed: {', '.join(_MODES)}")
        loop = asyncio.get_running_loop()
        local = (id(loop), key)
        deadline = time.monotonic() + self.wait_s
        while True:
            if mode == "on":
                state, found = await asyncio.to_thread(self._read, key)
                if found is not None:
                    found.cached = True
                    return found
                shared = self._in_flight.get(local)
                if shared is not None:  # an identical request of this process is calling the provider
                    result = await asyncio.shield(shared)
                    if result is not None:
                        return result.model_copy(update={"cached": True, "attempts": []}, deep=True)
                    continue  # it failed: try again (one of the waiters becomes the caller)
                if state == "pending" and time.monotonic() < deadline:
                    await asyncio.sleep(_POLL_S)  # another process is calling the provider
                    continue
            if local in self._in_flight:
                await asyncio.shield(self._in_flight[local])
                continue
            if (
                mode == "on"
                and time.monotonic() < deadline
                and not await asyncio.to_thread(self._store.cache_claim, key)
            ):
                continue  # another process claimed it a moment ago
            return await self._call(local, key, call, store_key)

    async def _keep_alive(self) -> None:
        """Refresh this process's heartbeat while it computes an entry, so waiters elsewhere keep waiting."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._store.heartbeat)

    async def _call(
        self,
        local: tuple[int, str],
        key: str,
        call: Callable[[], Awaitable[GenerationResult]],
        store_key: Callable[[GenerationResult], str | None],
    ) -> GenerationResult:
        future: asyncio.Future[GenerationResult | None] = asyncio.get_running_loop().create_future()
        self._in_flight[local] = future
        result: GenerationResult | None = None
        alive = asyncio.ensure_future(self._keep_alive())  # others wait on our pending entry meanwhile
        try:
            result = await call()
            target = store_key(result) or key
            try:
                await asyncio.to_thread(self._write, target, result)
                if target != key:
                    await asyncio.to_thread(self._store.cache_drop, key, pending_only=True)
            except Exception:  # a full disk or a lost database: the result is still served
                logger.exception("result cache: could not store an entry")
            return result
        finally:
            alive.cancel()
            if result is None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.to_thread(self._store.cache_drop, key, pending_only=True))
            del self._in_flight[local]
            future.set_result(result)
