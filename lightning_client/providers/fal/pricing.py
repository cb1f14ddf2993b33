"""fal's prices: the endpoint's unit price from fal's pricing API (else the price table) and the cost of a job
from its billable units."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote
from weakref import WeakKeyDictionary

import httpx
from pydantic import SecretStr

from lightning_client._compat import TIMEOUT_ERRORS, async_timeout
from lightning_client._log import get_logger
from lightning_client.errors import LightningError
from lightning_client.pricing import Price, PriceTable
from lightning_client.providers._http import ErrorHints, auth_header, parse_json, send
from lightning_client.request import GenerationRequest
from lightning_client.result import Cost

__all__ = ["PRICING_WAIT_S", "FalPricing"]

log = get_logger("lightning_client.providers.fal")

#: How long a failed pricing lookup is remembered before it is tried again.
_PRICING_RETRY_S = 300.0
#: Longest a call waits for the pricing lookup before using the price table.
PRICING_WAIT_S = 3.5
#: Where a price looked up from fal says it is from.
_API_SOURCE = "fal pricing API"


class FalPricing:
    """The unit price of one fal endpoint, looked up once (per event loop, alongside the first job) from
    `{rest_url}/v1/models/pricing`; a failed lookup falls back to the price table for `_PRICING_RETRY_S`."""

    def __init__(self, *, provider: str, app: str, rest_url: str, prices: PriceTable, hints: ErrorHints) -> None:
        self.provider = provider
        self.app = app
        self.rest_url = rest_url
        self.prices = prices
        self.hints = hints
        self._price: tuple[Price, str] | None = None
        self._failed_at: float | None = None
        self._tasks: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = WeakKeyDictionary()

    def prefetch(self, client: httpx.AsyncClient, key: SecretStr) -> None:
        """Start the pricing lookup alongside the first job (once per event loop)."""
        if self._price is not None or self._retry_pending():
            return
        loop = asyncio.get_running_loop()
        task = self._tasks.get(loop)
        if task is None or task.done():
            self._tasks[loop] = loop.create_task(self._fetch(client, key))

    def _retry_pending(self) -> bool:
        return self._failed_at is not None and time.monotonic() - self._failed_at < _PRICING_RETRY_S

    async def _fetch(self, client: httpx.AsyncClient, key: SecretStr) -> None:
        try:
            response = await send(
                client,
                "GET",
                f"{self.rest_url}/v1/models/pricing?endpoint_id={quote(self.app, safe='/')}",
                provider=self.provider,
                hints=self.hints,
                what="pricing lookup",
                headers=auth_header("Key", key),
                timeout=httpx.Timeout(3.0),
            )
            body = parse_json(response, provider=self.provider, what="pricing lookup")
        except LightningError as exc:
            log.debug("fal pricing API unavailable (%s); using the price table", exc)
            self._failed_at = time.monotonic()
            return
        for entry in body.get("prices") or ():
            if isinstance(entry, dict) and entry.get("endpoint_id") == self.app:
                try:
                    usd = float(entry["unit_price"])
                except (KeyError, TypeError, ValueError):
                    break
                unit = str(entry.get("unit") or "unit")
                price = Price(usd=usd, unit=unit, source=_API_SOURCE, as_of=time.strftime("%Y-%m-%d"))
                self._price = (price, _API_SOURCE)
                return
        log.debug("fal pricing API has no price for %s; using the price table", self.app)
        self._failed_at = time.monotonic()

    async def unit_price(self, client: httpx.AsyncClient, key: SecretStr) -> tuple[Price, str] | None:
        """The price per unit and where it is from, waiting `PRICING_WAIT_S` at most for the lookup."""
        if self._price is None and not self._retry_pending():
            self.prefetch(client, key)
            task = self._tasks.get(asyncio.get_running_loop())
            if task is not None:
                try:
                    async with async_timeout(PRICING_WAIT_S):
                        await asyncio.shield(task)  # shared by concurrent calls: never cancel it from here
                except TIMEOUT_ERRORS:
                    log.debug("fal pricing lookup still running; using the price table for this call")
        if self._price is not None:
            return self._price
        fallback = self.prices.fal_unit(self.app)
        return None if fallback is None else (fallback, f"price table: {fallback.source}, {fallback.as_of}")

    async def cost(
        self,
        client: httpx.AsyncClient,
        key: SecretStr,
        units: float | None,
        images: int,
        inference_s: float | None,
        note: str = "",
        request: GenerationRequest | None = None,
    ) -> Cost:
        """Billable units x unit price; without the units header they are inferred (estimated), or the
        cost is unknown when nothing to infer them from is known."""
        priced = await self.unit_price(client, key)
        prefix = f"{note}: " if note else ""
        if priced is None:
            return Cost.unknown(f"{prefix}no price known for {self.app}")
        price, source = priced
        estimated = units is None or source != _API_SOURCE
        if units is None:
            unit = price.unit.lower()
            if "second" in unit:
                if inference_s is None:
                    return Cost.unknown(f"{prefix}billed per {price.unit}, but no inference time was reported")
                units = inference_s
            elif "megapixel" in unit:
                if request is None:
                    return Cost.unknown(f"{prefix}billed per {price.unit}, but the image size is not known")
                units = request.width * request.height * images / 1e6  # the size we asked for, per image
            else:
                units = float(images)
            basis_units = f"~{units:g} (assumed)"
        else:
            basis_units = f"{units:g}"
        return Cost(
            usd=units * price.usd,
            basis=f"{prefix}billable units {basis_units} x ${price.usd:g}/{price.unit} ({source})",
            estimated=estimated,
        )
