"""Realtime sessions: images that follow a stream of sends, latest wins (`gen.realtime()`).

Backends: fal's realtime WebSocket (`FalGenerator`), the warm local pipeline in process
(`LocalGenerator`), create-and-cancel over any other generator (flagged emulated), and a router's
session that moves to its next generator when one fails.
"""

from __future__ import annotations

from lightning_client.realtime.router_backend import RouterBackend
from lightning_client.realtime.session import DEFAULT_THROTTLE_S, RealtimeSession, SyncRealtimeSession
from lightning_client.realtime_backend import GeneratorBackend, RealtimeBackend, backend_for, is_session_failure
from lightning_client.realtime_contract import (
    RealtimeResult,
    RealtimeSessionLike,
    RealtimeStats,
    SyncRealtimeSessionLike,
    Transport,
)

__all__ = [
    "DEFAULT_THROTTLE_S",
    "GeneratorBackend",
    "RealtimeBackend",
    "RealtimeResult",
    "RealtimeSession",
    "RealtimeSessionLike",
    "RealtimeStats",
    "RouterBackend",
    "SyncRealtimeSession",
    "SyncRealtimeSessionLike",
    "Transport",
    "backend_for",
    "is_session_failure",
]
