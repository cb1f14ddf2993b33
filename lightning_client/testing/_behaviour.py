"""What a sandbox provider does: latency models, error and fault settings, validated on `configure`."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COMMON_FAULTS",
    "COMMON_RULES",
    "FAL_FAULTS",
    "FAL_RULES",
    "FLAKY_READS",
    "GATEWAY_HTML",
    "REPLICATE_FAULTS",
    "REPLICATE_RULES",
    "WEBHOOK_FAULTS",
    "Behaviour",
    "Latency",
    "ProviderRules",
    "SeededDraws",
]

#: Fault kinds every provider knows, then the provider-specific ones.
#: flaky_status: the job runs normally, but its first `FLAKY_READS` status reads (GET, and fal's status stream)
#: answer 503; flaky_download: the first GET of each output file answers 503; gateway_error: the job is created
#: and runs to completion, but the create (fal: submit) is answered 502 with an HTML body, as a proxy would.
COMMON_FAULTS = (
    "reset",
    "hang",
    "malformed_json",
    "truncated_image",
    "job_error",
    "nsfw",
    "flaky_status",
    "flaky_download",
    "gateway_error",
)
#: How many status reads of a `flaky_status` job fail before they succeed.
FLAKY_READS = 2
#: What a proxy in front of the API answers for `gateway_error`.
GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)
REPLICATE_FAULTS = (*COMMON_FAULTS, "aborted")
FAL_FAULTS = (*COMMON_FAULTS, "completed_with_error")
#: Faults that leave the job alone and act on its webhook deliveries (`webhook_lost`: none is sent).
WEBHOOK_FAULTS = ("webhook_lost",)
#: Settings only the providers whose rules name them take.
_PARTICULAR_SETTINGS = frozenset({"retention_s", "cancel_after_min_s", "deployments"})
_DEPLOYMENT_KEYS = ("hardware", "min_instances", "max_instances")


@dataclass(frozen=True)
class ProviderRules:
    """What one emulated provider's settings may hold: its fault kinds, and the particular settings
    (`retention_s`, `cancel_after_min_s`, `deployments`) it takes besides the common ones."""

    faults: tuple[str, ...] = (*COMMON_FAULTS, *WEBHOOK_FAULTS)
    settings: frozenset[str] = frozenset()


#: The common faults and settings only: what a new emulated provider starts from.
COMMON_RULES = ProviderRules()
REPLICATE_RULES = ProviderRules((*REPLICATE_FAULTS, *WEBHOOK_FAULTS), _PARTICULAR_SETTINGS)
FAL_RULES = ProviderRules((*FAL_FAULTS, *WEBHOOK_FAULTS))


class Latency:
    """A seconds distribution: fixed (`Latency(0.2)`), `uniform`, or mostly `base` with slow `stragglers`.

    Draws come from the latency's own seeded generator, so a run with the same seed and the same order of
    jobs sees the same delays.
    """

    def __init__(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {value}")
        self._kind = "fixed"
        self._lo = self._hi = float(value)
        self._rate = 0.0
        self._factor = 1.0
        self._rng = random.Random(0)
        self._lock = threading.Lock()

    @classmethod
    def uniform(cls, lo: float, hi: float, seed: int = 0) -> Latency:
        """Uniform between `lo` and `hi` seconds."""
        if not 0 <= lo <= hi:
            raise ValueError(f"uniform latency needs 0 <= lo <= hi, got lo={lo}, hi={hi}")
        latency = cls(lo)
        latency._kind, latency._hi, latency._rng = "uniform", float(hi), random.Random(seed)
        return latency

    @classmethod
    def stragglers(cls, base: float, rate: float = 0.05, factor: float = 10.0, seed: int = 0) -> Latency:
        """`base` seconds, except a fraction `rate` of draws that take `base * factor`."""
        if not 0 <= rate <= 1 or factor < 1:
            raise ValueError(f"stragglers need 0 <= rate <= 1 and factor >= 1, got rate={rate}, factor={factor}")
        latency = cls(base)
        latency._kind, latency._rate, latency._factor = "stragglers", rate, factor
        latency._rng = random.Random(seed)
        return latency

    def sample(self) -> float:
        """One delay in seconds."""
        if self._kind == "fixed":
            return self._lo
        with self._lock:
            if self._kind == "uniform":
                return self._rng.uniform(self._lo, self._hi)
            return self._lo * self._factor if self._rng.random() < self._rate else self._lo

    def __repr__(self) -> str:
        if self._kind == "uniform":
            return f"Latency.uniform({self._lo}, {self._hi})"
        if self._kind == "stragglers":
            return f"Latency.stragglers({self._lo}, rate={self._rate}, factor={self._factor})"
        return f"Latency({self._lo})"


def _latency(name: str, value: Any) -> Latency:
    if isinstance(value, Latency):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Latency(float(value))
    raise ValueError(f"{name} must be seconds (a number >= 0) or a Latency, got {value!r}")


@dataclass(frozen=True)
class Behaviour:
    """One provider's settings; replaced as a whole on every `configure`, so readers never see half an update."""

    inference_s: Latency = field(default_factory=lambda: Latency(0.05))
    queue_s: Latency = field(default_factory=lambda: Latency(0.0))
    workers: int = 10_000
    error_status: int | None = None
    error_rate: float = 0.0
    valid_tokens: tuple[str, ...] | None = None
    retention_s: float = 3600.0
    faults: tuple[tuple[str, float], ...] = ()
    #: Replicate's documented minimum for `Cancel-After`; tests may lower it to keep deadlines short.
    cancel_after_min_s: float = 5.0
    #: Webhook delivery: tries in all, the wait before the second try (doubled for each further one) and the
    #: time a receiver has to answer each try.
    webhook_tries: int = 4
    webhook_backoff_s: float = 1.0
    webhook_timeout_s: float = 5.0
    #: Replicate deployments by `owner/name`, each with its settings (hardware, min/max instances).
    deployments: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    #: Seconds a create (fal: submit) takes to answer once its job exists (a slow network or gateway).
    create_latency_s: float = 0.0

    def deployment(self, name: str) -> dict[str, Any] | None:
        """The settings of deployment `name`, or None when it is not configured."""
        for known, settings in self.deployments:
            if known == name:
                return dict(settings)
        return None

    def updated(self, provider: str, rules: ProviderRules, changes: dict[str, Any]) -> Behaviour:
        """A copy with `changes` applied, each validated against `provider`'s `rules`; unknown keys raise
        ValueError naming them."""
        allowed = ({f.name for f in dataclasses.fields(self)} | {"fault"}) - (_PARTICULAR_SETTINGS - rules.settings)
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise ValueError(
                f"unknown {provider} sandbox setting(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
            )
        if "fault" in changes and "faults" in changes:
            raise ValueError("pass either fault (one kind, always) or faults (kind -> probability), not both")
        values: dict[str, Any] = {}
        for key, value in changes.items():
            if key in ("inference_s", "queue_s"):
                values[key] = _latency(key, value)
            elif key in ("workers", "webhook_tries"):
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
                values[key] = value
            elif key == "error_status":
                if value is not None and (not isinstance(value, int) or not 400 <= value <= 599):
                    raise ValueError(f"error_status must be None or an HTTP status from 400 to 599, got {value!r}")
                values[key] = value
            elif key == "error_rate":
                values[key] = _probability("error_rate", value)
            elif key == "valid_tokens":
                if value is not None and (isinstance(value, str) or not all(isinstance(t, str) and t for t in value)):
                    raise ValueError("valid_tokens must be None (any non-empty token) or a list of non-empty strings")
                values[key] = None if value is None else tuple(value)
            elif key in (
                "retention_s",
                "cancel_after_min_s",
                "webhook_backoff_s",
                "webhook_timeout_s",
                "create_latency_s",
            ):
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"{key} must be a number of seconds >= 0, got {value!r}")
                values[key] = float(value)
            elif key == "deployments":
                values[key] = _deployments(value)
            elif key == "fault":
                values["faults"] = () if value is None else _faults(provider, rules, {value: 1.0})
            else:
                values["faults"] = _faults(provider, rules, value or {})
        return dataclasses.replace(self, **values)


def _probability(name: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability from 0 to 1, got {value!r}")
    return float(value)


def _deployments(value: Any) -> tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]:
    if not isinstance(value, dict):
        raise ValueError(f"deployments must be a dict of 'owner/name' -> settings, got {value!r}")
    result = []
    for name, settings in value.items():
        owner, _, short = str(name).partition("/")
        if not isinstance(name, str) or not owner or not short or "/" in short:
            raise ValueError(f"deployment names are 'owner/name', got {name!r}")
        settings = {} if settings is None else settings
        if not isinstance(settings, dict):
            raise ValueError(f"deployments[{name!r}] must be a dict of settings, got {settings!r}")
        unknown = sorted(str(k) for k in settings if k not in _DEPLOYMENT_KEYS)
        if unknown:
            raise ValueError(
                f"unknown setting(s) of deployment {name!r}: {', '.join(unknown)}; allowed: {', '.join(_DEPLOYMENT_KEYS)}"
            )
        hardware = settings.get("hardware", "gpu-l40s")
        if not isinstance(hardware, str) or not hardware:
            raise ValueError(f"deployments[{name!r}]['hardware'] must be a hardware SKU string, got {hardware!r}")
        low, high = settings.get("min_instances", 0), settings.get("max_instances", 1)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (low, high)) or low > high:
            raise ValueError(
                f"deployments[{name!r}] needs integer 0 <= min_instances <= max_instances, got {low!r} and {high!r}"
            )
        result.append((name, (("hardware", hardware), ("min_instances", low), ("max_instances", high))))
    return tuple(result)


def _faults(provider: str, rules: ProviderRules, faults: Any) -> tuple[tuple[str, float], ...]:
    if not isinstance(faults, dict):
        raise ValueError(f"faults must be a dict of fault kind -> probability, got {faults!r}")
    kinds = rules.faults
    unknown = sorted(str(k) for k in faults if k not in kinds)
    if unknown:
        raise ValueError(f"unknown {provider} fault kind(s): {', '.join(unknown)}; allowed: {', '.join(kinds)}")
    pairs = tuple((kind, _probability(f"faults[{kind!r}]", p)) for kind, p in faults.items())
    if sum(p for _, p in pairs) > 1 + 1e-9:
        raise ValueError("fault probabilities are exclusive (one fault per job) and must sum to at most 1")
    return pairs


class SeededDraws:
    """Reproducible uniform draws: the n-th draw of a stream depends only on the seed, the stream name and n."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._counters: dict[str, int] = {}
        self._lock = threading.Lock()

    def bits(self, stream: str, n_bits: int = 64) -> int:
        """The next draw of `stream` as an integer of `n_bits` random bits (at most 256)."""
        with self._lock:
            n = self._counters.get(stream, 0)
            self._counters[stream] = n + 1
        digest = hashlib.sha256(f"{self._seed}:{stream}:{n}".encode()).digest()
        return int.from_bytes(digest, "big") >> (256 - n_bits)

    def next(self, stream: str) -> float:
        """The next draw in [0, 1) of `stream`."""
        return self.bits(stream, 53) / 2**53

    def fault(self, faults: tuple[tuple[str, float], ...]) -> str | None:
        """The fault this job gets (at most one), or None."""
        if not faults:
            return None
        draw, cumulative = self.next("fault"), 0.0
        for kind, probability in faults:
            cumulative += probability
            if draw < cumulative:
                return kind
        return None

    def reset(self, keep: tuple[str, ...] = ()) -> None:
        """Start every stream except those in `keep` again from its first draw."""
        with self._lock:
            self._counters = {name: n for name, n in self._counters.items() if name in keep}
