"""HTTP plumbing shared by the hosted backends, re-exported from the modules that hold each concern.

- `clients`: client pooling (one set of httpx clients per generator and event loop).
- `errors`: HTTP answers and transport failures mapped onto the error taxonomy.
- `exchange`: one logged exchange, JSON parsing, polling delays and read retries.
- `tasks`: bounded, shielded background work (remote cancels that outlive their caller).
- `generator`: `HttpGenerator`, the base class of the hosted backends.
"""

from __future__ import annotations

from lightning_client.providers._http.clients import (
    SHARD_CONNECTIONS,
    USER_AGENT,
    HttpClients,
    _tls_context,
    auth_header,
    make_timeout,
)
from lightning_client.providers._http.errors import (
    ERROR_CODES,
    PLAIN,
    ErrorHints,
    create_refused,
    error_from_response,
    parse_retry_after,
    transport_error,
)
from lightning_client.providers._http.exchange import (
    PollDelays,
    answer_may_have_created,
    expired,
    parse_json,
    parse_timestamp,
    salvage_id,
    send,
)
from lightning_client.providers._http.generator import HttpGenerator
from lightning_client.providers._http.tasks import detach, gather_all, retrieve_errors, shielded

__all__ = [
    "ERROR_CODES",
    "PLAIN",
    "SHARD_CONNECTIONS",
    "USER_AGENT",
    "ErrorHints",
    "HttpClients",
    "HttpGenerator",
    "PollDelays",
    "_tls_context",
    "answer_may_have_created",
    "auth_header",
    "create_refused",
    "detach",
    "error_from_response",
    "expired",
    "gather_all",
    "make_timeout",
    "parse_json",
    "parse_retry_after",
    "parse_timestamp",
    "retrieve_errors",
    "salvage_id",
    "send",
    "shielded",
    "transport_error",
]
