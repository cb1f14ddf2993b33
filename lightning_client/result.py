"""Results of a generation: images, timings, cost, warnings and the attempts behind them."""

from __future__ import annotations

import io
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lightning_client._money import format_usd

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "Attempt",
    "Cost",
    "GeneratedImage",
    "GenerationResult",
    "GenerationWarning",
    "Timings",
    "WarningKind",
    "format_usd",
]

WarningKind = Literal["unsupported", "emulated", "ignored", "converted", "resized"]
#: "unknown": a create was sent but whether it made a job is not known (it may run and be billed).
#: "cached": served from the result cache, no provider call.
Outcome = Literal["succeeded", "failed", "canceled", "skipped", "unknown", "cached"]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


class GenerationWarning(BaseModel):
    """Something the provider could not honour exactly; never a silent drop."""

    model_config = ConfigDict(frozen=True)

    kind: WarningKind
    setting: str
    message: str
    provider: str | None = None

    def __str__(self) -> str:
        where = f"{self.provider}: " if self.provider else ""
        return f"{where}{self.kind} {self.setting}: {self.message}"


class Timings(BaseModel):
    """Seconds spent in each phase; None where the provider does not tell."""

    queue_s: float | None = None
    inference_s: float | None = None
    download_s: float | None = None
    load_s: float | None = None
    total_s: float | None = None


class Cost(BaseModel):
    """What an attempt cost and how that number was obtained.

    `usd` is None when the cost is unknown (a job may exist and be billed, but nothing tells
    how much); `basis` then says why. A known $0 (`usd=0.0`) means "not billed", with its reason.
    A sum with any unknown part is unknown; `known_usd` still holds the dollars that are known.
    """

    usd: float | None = 0.0
    basis: str = ""
    estimated: bool = True
    #: Dollars of the known parts (equals `usd` when nothing is unknown).
    known_usd: float = 0.0

    @model_validator(mode="after")
    def _known_part(self) -> Cost:
        if self.usd is not None:
            self.known_usd = self.usd
        return self

    @classmethod
    def unknown(cls, basis: str) -> Cost:
        """A cost that cannot be known; `basis` says why."""
        return cls(usd=None, basis=basis, estimated=True)

    @property
    def is_unknown(self) -> bool:
        """True when (some part of) the cost is unknown."""
        return self.usd is None

    @property
    def recorded(self) -> bool:
        """True once something was recorded (a price, a known $0 with its reason, or an unknown)."""
        return bool(self.basis) or self.usd != 0.0

    def __add__(self, other: Cost) -> Cost:
        basis = " + ".join(b for b in (self.basis, other.basis) if b)
        usd = None if self.usd is None or other.usd is None else self.usd + other.usd
        return Cost(
            usd=usd,
            basis=basis,
            estimated=self.estimated or other.estimated,
            known_usd=self.known_usd + other.known_usd,
        )

    def __str__(self) -> str:
        return format_usd(self.usd, self.known_usd)


class Attempt(BaseModel):
    """One try at one generator: the ledger's unit of record."""

    attempt_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    provider: str
    model: str | None = None
    request_id: str | None = None
    remote_ids: list[str] = Field(default_factory=list)
    outcome: Outcome | None = None
    error_type: str | None = None
    error_message: str | None = None
    status_code: int | None = None
    retryable: bool | None = None
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    timings: Timings = Field(default_factory=Timings)
    cost: Cost = Field(default_factory=Cost)
    num_images: int = 0
    seed: int | None = None
    steps: int | None = None
    hedge: bool = False
    note: str | None = None
    #: Which replica of a self-hosted worker pool ran the attempt (a Ray Serve replica id).
    served_by: str | None = None
    #: Reads (status polls, status stream, result, downloads) retried in place within this attempt.
    read_retries: int = 0
    #: The budget (`Router(budget_name=...)`) this attempt's cost counts against; None: "default".
    budget: str | None = None
    #: The request id a client of `lightning-client serve` sent (`X-Request-Id`), joining its ledger to this one.
    client_request_id: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome == "succeeded"

    def snapshot(self) -> Attempt:
        """A copy that later changes to this record cannot reach (cheaper than a deep copy)."""
        return self.model_copy(
            update={
                "remote_ids": list(self.remote_ids),
                "timings": self.timings.model_copy(),
                "cost": self.cost.model_copy(),
            }
        )


_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
#: File extensions `GeneratedImage.save` writes, and the format each one means.
_SUFFIX_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


class GeneratedImage(BaseModel):
    """One output image: the encoded bytes plus what is known about them."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    data: bytes = Field(repr=False)
    width: int
    height: int
    content_type: str
    url: str | None = None
    nsfw: bool | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @property
    def extension(self) -> str:
        """The file extension for `content_type` ("png", "jpg", "webp")."""
        return _EXT.get(self.content_type, "bin")

    def to_pil(self) -> PILImage:
        """Decode into a Pillow image."""
        from PIL import Image

        image = Image.open(io.BytesIO(self.data))
        image.load()
        return image

    def save(self, path: str | Path) -> Path:
        """Write the image in the format its file extension names, converting with Pillow when needed.

        ``.png`` files carry prompt, seed, steps, provider and model as text chunks; ``.jpg``,
        ``.jpeg`` and ``.webp`` are written as such (the bytes unchanged when the image is
        already in that format). Any other extension raises `ValueError`. A directory path
        gets a file name derived from the seed and the image's own format.
        """
        target = Path(path)
        if target.is_dir():
            target = (
                target / f"image-{self.metadata.get('seed', 'x')}-{self.metadata.get('index', '0')}.{self.extension}"
            )
        wanted = _SUFFIX_TYPES.get(target.suffix.lower())
        if wanted is None:
            raise ValueError(
                f"cannot save {target.name!r}: its extension decides the format; allowed: {', '.join(_SUFFIX_TYPES)}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        if wanted == "image/png":
            from PIL.PngImagePlugin import PngInfo

            info = PngInfo()
            for key, value in self.metadata.items():
                info.add_text(key, value)
            self.to_pil().save(target, format="PNG", pnginfo=info)
        elif wanted == self.content_type:
            target.write_bytes(self.data)
        else:
            image = self.to_pil()
            fmt = "JPEG" if wanted == "image/jpeg" else "WEBP"
            (image.convert("RGB") if fmt == "JPEG" else image).save(target, format=fmt, quality=95)
        return target


class GenerationResult(BaseModel):
    """What a successful generation returns."""

    images: list[GeneratedImage]
    seed: int
    provider: str
    model: str
    prompt: str = ""
    steps: int | None = None
    request_id: str | None = None
    timings: Timings = Field(default_factory=Timings)
    cost: Cost = Field(default_factory=Cost)
    attempts: list[Attempt] = Field(default_factory=list)
    warnings: list[GenerationWarning] = Field(default_factory=list)
    #: Which replica of a self-hosted worker pool served the images (a Ray Serve replica id), if any.
    served_by: str | None = None
    #: True when served from the result cache (`Router(cache=...)`) without a provider call.
    cached: bool = False

    @model_validator(mode="after")
    def _stamp_images(self) -> GenerationResult:
        for index, image in enumerate(self.images):
            defaults = {
                "prompt": self.prompt,
                "seed": str(self.seed),
                "steps": "" if self.steps is None else str(self.steps),
                "provider": self.provider,
                "model": self.model,
                "index": str(index),
            }
            for key, value in defaults.items():
                image.metadata.setdefault(key, value)
        return self

    def save(self, directory: str | Path, stem: str | None = None) -> list[Path]:
        """Save every image into `directory`; returns the paths written."""
        folder = Path(directory)
        base = stem or f"{self.provider}-{self.seed}"
        if Path(base).name != base or base in (".", ".."):
            raise ValueError(f"stem={base!r} is invalid; allowed: a file name without directory parts")
        folder.mkdir(parents=True, exist_ok=True)
        return [img.save(folder / f"{base}-{i}.{img.extension}") for i, img in enumerate(self.images)]

    def summary(self) -> dict[str, Any]:
        """A flat, JSON-friendly description without image bytes."""
        return {
            "provider": self.provider,
            "model": self.model,
            "seed": self.seed,
            "steps": self.steps,
            "request_id": self.request_id,
            "images": len(self.images),
            **{k: v for k, v in self.timings.model_dump().items()},
            "cost_usd": self.cost.usd,
            "cost_known_usd": self.cost.known_usd,
            "cost_basis": self.cost.basis,
            "cost_estimated": self.cost.estimated,
            "warnings": [str(w) for w in self.warnings],
        }
