"""The fal emulator in one sandbox: the queue, sync-run and REST endpoints, with realtime on the run and
REST origins."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.applications import Starlette

from lightning_client.testing._behaviour import FAL_RULES
from lightning_client.testing._fal_app import FalApp, fal_finisher
from lightning_client.testing._fal_realtime_app import FalRealtime
from lightning_client.testing._provider import ProviderCore
from lightning_client.testing._webhooks import FalSigner

__all__ = ["FalEmulation"]


class FalEmulation:
    """fal's state, webhook signer and realtime endpoint in one sandbox, and the apps of its three endpoints."""

    def __init__(self, seed: int) -> None:
        self.core = ProviderCore("fal", seed, fal_finisher, rules=FAL_RULES)
        self.signer = FalSigner(seed)
        #: The realtime endpoint (tokens route and WebSocket): `configure`, `reset`, `stats`.
        self.realtime = FalRealtime(self.core)

    def apps(self, urls: Mapping[str, str]) -> dict[str, Starlette]:
        """The apps of `fal` (queue), `fal_run` (sync run, realtime socket) and `fal_rest` (pricing, tokens)."""
        queue, run, rest = FalApp(self.core, urls["fal"], urls["fal_run"], self.signer).apps()
        self.realtime.files_url = urls["fal_run"]  # the socket is on the run origin
        run.router.routes.extend(self.realtime.run_routes())
        rest.router.routes.extend(self.realtime.rest_routes())
        return {"fal": queue, "fal_run": run, "fal_rest": rest}
