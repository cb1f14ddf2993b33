"""HTTP plumbing shared by the hosted backends, re-exported from the modules that hold each concern.

- `clients`: client pooling (one set of httpx clients per generator and event loop).
- `errors`: HTTP answers and transport failures mapped onto the error taxonomy.
- `exchange`: one logged exchange, JSON parsing, polling delays and read retries.
- `tasks`: bounded, shielded background work (remote cancels that outlive their caller).
- `arguments`: the constructor arguments the hosted generators share, deprecated spellings included.
- `generator`: `HttpGenerator`, the base class of the hosted backends, and its lifecycle template.

With them, the part of the generator contract a hosted provider fills in (`AttemptContext`,
`Capabilities`, `ProviderOption`, `env_setting`), so that a provider's modules import their kit from here.
"""

from __future__ import annotations

from lightning_client.generator import AttemptContext, Capabilities, ProviderOption, env_setting
from lightning_client.providers._http.arguments import hosted_arguments
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
    "AttemptContext",
    "Capabilities",
    "ErrorHints",
    "HttpClients",
    "HttpGenerator",
    "PollDelays",
    "ProviderOption",
    "_tls_context",
    "answer_may_have_created",
    "auth_header",
    "create_refused",
    "detach",
    "env_setting",
    "error_from_response",
    "expired",
    "gather_all",
    "hosted_arguments",
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
