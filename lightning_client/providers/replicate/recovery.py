"""Create recovery on Replicate: finding the prediction a create made when its answer was lost (a reset, a
gateway's 502/504, a deadline, a process that died), without claiming another attempt's prediction."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Literal

import httpx

from lightning_client._log import get_logger
from lightning_client.providers._http import parse_timestamp, salvage_id

__all__ = ["ABSENT", "ABSENT_AFTER", "claims", "find_created", "find_listed"]

log = get_logger("lightning_client.providers.replicate")

#: What `find_created` answers when the prediction is provably absent.
ABSENT: Literal["absent"] = "absent"
#: Create answers after which a prediction missing from the list was not made (the API answered; a
#: timeout such as 504 or 408 may still be creating it): the create is then sent again.
ABSENT_AFTER = frozenset({500, 502})
#: Tolerated difference between our clock and Replicate's when matching a prediction to our create.
_CLOCK_SKEW_S = 30.0


class _Claims:
    """Which attempt of this process owns which prediction, and which creates are still unanswered.

    Every answered create records the prediction it made for its attempt; a recovery claims a listed
    prediction only when no other attempt owns it. Creates with the same prompt and seed still in flight
    are waited for first, since their predictions are listed before their answers name them.
    """

    _KEEP = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._in_flight: Counter[str] = Counter()

    def sending(self, base_url: str, payload: dict[str, Any]) -> str:
        """Note a create about to be sent; returns the key of its input.

        The key holds the prompt and seed only: creates that share them are waited for together,
        a superset of the identical ones, which costs a recovery a little waiting and no JSON
        encoding per create.
        """
        key = f"{base_url} {payload.get('seed')} {payload.get('prompt')}"
        with self._lock:
            self._in_flight[key] += 1
        return key

    def answered(self, key: str, attempt_id: str, response: httpx.Response | None) -> None:
        """The create of `key` answered (None: it failed): record the prediction it names for its attempt."""
        pid = None if response is None else salvage_id(response.content, "id")
        with self._lock:
            self._in_flight[key] -= 1
            if self._in_flight[key] <= 0:
                del self._in_flight[key]
            if pid is not None:
                self._own(key.split(" ", 1)[0] + " " + pid, attempt_id)

    async def settled(self, key: str, timeout: float, *, own_in_flight: bool) -> None:
        """Wait (up to `timeout`) until no other create with this input is unanswered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                others = self._in_flight.get(key, 0) - int(own_in_flight)
            if others <= 0:
                return
            await asyncio.sleep(0.05)

    def claim(self, base_url: str, pid: str, attempt_id: str) -> bool:
        """Make `attempt_id` the owner of prediction `pid` at `base_url` unless another attempt already is;
        True when it owns it."""
        with self._lock:
            return self._own(base_url + " " + pid, attempt_id) == attempt_id

    def _own(self, where: str, attempt_id: str) -> str:
        owner = self._owners.setdefault(where, attempt_id)
        while len(self._owners) > self._KEEP:
            self._owners.popitem(last=False)
        return owner


#: The claims of this process (every Replicate generator in it shares them).
claims = _Claims()


async def find_created(
    list_page: Callable[[], Awaitable[dict[str, Any]]],
    *,
    base_url: str,
    payload: dict[str, Any],
    sent_at: float,
    key: str,
    attempt_id: str,
    answered: bool,
    settle_s: float,
) -> dict[str, Any] | Literal["absent"] | None:
    """After a create with an unknown outcome: the prediction it made, claimed for `attempt_id`; "absent"
    when the create has `answered` and two listings (`list_page()`), the second a moment later, hold none
    of its input; else None.

    Replicate predictions carry no field of ours to match on, so a listed prediction is ours when it
    has our input (seed included: it is drawn per request unless the caller fixes it), was created
    since we sent, and is claimed by no other attempt of this process. `claims` records the
    prediction every answered create made, and waits (up to `settle_s`) for like creates still in
    flight, so two identical concurrent requests never claim (or cancel) each other's prediction.
    """
    await claims.settled(key, settle_s, own_in_flight=not answered)
    for attempt in range(2):
        if attempt:
            await asyncio.sleep(0.25)  # the create may still be on its way to the server
        page = await list_page()
        listed = page.get("results")
        listed = listed if isinstance(listed, list) else []
        if page.get("next") and not _reaches_back(listed, sent_at):
            answered = False  # a full page of newer predictions: ours may be on a later one
        candidates = [p for p in listed if _made_by(p, payload, sent_at)]
        # Oldest first: the first prediction made after our create was sent is the likeliest to be ours.
        candidates.sort(key=lambda p: str(p.get("created_at")))
        for prediction in candidates:
            if claims.claim(base_url, str(prediction["id"]), attempt_id):
                log.warning("create outcome was unknown; found prediction %s", prediction["id"])
                return dict(prediction)
        if candidates:  # like predictions, all claimed by other attempts: ours may still appear
            answered = False
    return ABSENT if answered else None


def find_listed(
    listed: Any, payloads: Sequence[dict[str, Any]], since: float, exclude: Collection[str] = ()
) -> list[str]:
    """The listed predictions that creates of `payloads` sent at `since` made: per payload, the oldest with
    its input created since then, not in `exclude` and not already found."""
    found: list[str] = []
    for payload in payloads:
        candidates = [
            p
            for p in (listed if isinstance(listed, list) else ())
            if _made_by(p, payload, since) and p["id"] not in exclude and p["id"] not in found
        ]
        candidates.sort(key=lambda p: str(p.get("created_at")))
        if candidates:
            found.append(str(candidates[0]["id"]))
    return found


def _made_by(prediction: Any, payload: dict[str, Any], sent_at: float) -> bool:
    """Whether a listed prediction is the one our create made: same input, created since we sent it."""
    if not isinstance(prediction, dict) or not isinstance(prediction.get("id"), str):
        return False
    created = parse_timestamp(prediction.get("created_at"))
    echoed = prediction.get("input")
    return (
        created is not None
        and created.timestamp() >= sent_at - _CLOCK_SKEW_S
        and isinstance(echoed, dict)
        and all(echoed.get(key) == value for key, value in payload.items())
    )


def _reaches_back(listed: list[Any], sent_at: float) -> bool:
    """Whether a page of predictions (newest first) goes back to before our create was sent."""
    created = [parse_timestamp(p.get("created_at")) for p in listed if isinstance(p, dict)]
    return any(c is not None and c.timestamp() < sent_at - _CLOCK_SKEW_S for c in created)
