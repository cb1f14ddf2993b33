"""The fault matrix: what each sandbox fault does to each provider's generator and to the router.

One row per (fault kind, provider): the error class the generator raises (none: it recovers
in place and serves the request), whether it is retryable, whether the create's outcome is unknown (the job may exist, so it is never
re-sent), what happens to the remote job, and what the router does with the failure.
`tests/reliability/test_fault_matrix.py` asserts every row against the sandbox, and
`docs/reliability.md` holds the table `render_markdown()` produces, so neither can drift.

    python -m lightning_client.testing.fault_matrix docs/reliability.md   # rewrite the table
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lightning_client.errors import (
    ContentFilteredError,
    GenerationTimeoutError,
    LightningError,
    ProviderResponseError,
    ProviderUnavailableError,
)

__all__ = [
    "BEGIN_MARKER",
    "END_MARKER",
    "FAULT_MATRIX",
    "FaultExpectation",
    "RemoteJob",
    "RouterAction",
    "expectation",
    "render_markdown",
    "update_document",
]

Provider = Literal["replicate", "fal"]
#: What the router does after the failed attempt:
#: "retry": tried again on the same provider after a backoff (the next provider is tried meanwhile);
#: "failover": not sent to that provider again for this request; the next provider is tried at once;
#: "deadline": the attempt holds on until the request's deadline; only hedging reaches another provider;
#: "served": the generator recovered in place (read retries, an adopted job) and served the request.
RouterAction = Literal["retry", "failover", "deadline", "served"]
#: What becomes of the remote job: "none" (the provider failed it itself or nothing is left to do),
#: "cancelled" (our generator cancelled it), "completed" (it ran to the end and was billed; we could not use
#: its output), "unknown" (a create without an answer; its id is unknown, so it cannot be cancelled),
#: "served" (it ran and its output served the request).
RemoteJob = Literal["none", "cancelled", "completed", "unknown", "served"]

BEGIN_MARKER = "<!-- BEGIN GENERATED: fault_matrix -->"
END_MARKER = "<!-- END GENERATED: fault_matrix -->"


@dataclass(frozen=True)
class FaultExpectation:
    """The expected behaviour for one sandbox fault kind on one provider."""

    fault: str
    provider: Provider
    error: type[LightningError] | None
    retryable: bool
    outcome_unknown: bool
    remote_job: RemoteJob
    router: RouterAction
    note: str

    @property
    def retried(self) -> bool:
        """Whether the router sends the request to the same provider again."""
        return self.router == "retry"


def _row(
    fault: str,
    provider: Provider,
    error: type[LightningError] | None,
    *,
    retryable: bool,
    remote_job: RemoteJob,
    router: RouterAction,
    note: str,
    outcome_unknown: bool = False,
) -> FaultExpectation:
    return FaultExpectation(fault, provider, error, retryable, outcome_unknown, remote_job, router, note)


FAULT_MATRIX: tuple[FaultExpectation, ...] = (
    _row(
        "reset",
        "replicate",
        None,
        retryable=False,
        remote_job="served",
        router="served",
        note="connection dropped after the create; the prediction is found in the list (same input, claimed by "
        "no other attempt) and adopted",
    ),
    _row(
        "hang",
        "replicate",
        GenerationTimeoutError,
        retryable=True,
        remote_job="completed",
        router="deadline",
        note="create never answered; at the deadline the prediction is looked up and cancelled if still running",
    ),
    _row(
        "malformed_json",
        "replicate",
        ProviderResponseError,
        retryable=True,
        remote_job="cancelled",
        router="retry",
        note="create answer cut off; the id is read from the partial body and the prediction cancelled",
    ),
    _row(
        "truncated_image",
        "replicate",
        ProviderResponseError,
        retryable=True,
        remote_job="completed",
        router="retry",
        note="output file cut in half: the image fails to decode",
    ),
    _row(
        "job_error",
        "replicate",
        ProviderResponseError,
        retryable=True,
        remote_job="none",
        router="retry",
        note="prediction `failed` with the model's error text",
    ),
    _row(
        "nsfw",
        "replicate",
        ContentFilteredError,
        retryable=False,
        remote_job="none",
        router="failover",
        note="every image dropped by the safety checker, so the prediction `failed`",
    ),
    _row(
        "aborted",
        "replicate",
        GenerationTimeoutError,
        retryable=True,
        remote_job="none",
        router="retry",
        note="prediction `aborted` (deadline passed before it started; not charged)",
    ),
    _row(
        "flaky_status",
        "replicate",
        None,
        retryable=False,
        remote_job="served",
        router="served",
        note="the first 2 status GETs answer 503; they are read again in place (the attempt counts the retries)",
    ),
    _row(
        "flaky_download",
        "replicate",
        None,
        retryable=False,
        remote_job="served",
        router="served",
        note="the first GET of each output file answers 503; the file is read again in place, not re-generated",
    ),
    _row(
        "gateway_error",
        "replicate",
        None,
        retryable=False,
        remote_job="served",
        router="served",
        note="the create is answered 502 (HTML) although the prediction exists; it is found in the list and adopted",
    ),
    _row(
        "reset",
        "fal",
        ProviderUnavailableError,
        retryable=True,
        outcome_unknown=True,
        remote_job="unknown",
        router="failover",
        note="connection dropped after the submit; fal cannot list requests, so the job may run unseen",
    ),
    _row(
        "hang",
        "fal",
        GenerationTimeoutError,
        retryable=True,
        outcome_unknown=True,
        remote_job="unknown",
        router="deadline",
        note="submit never answered; it is cancelled if the submit still answers later",
    ),
    _row(
        "malformed_json",
        "fal",
        ProviderResponseError,
        retryable=True,
        remote_job="cancelled",
        router="retry",
        note="submit answer cut off; the request id is read from the partial body and the request cancelled",
    ),
    _row(
        "truncated_image",
        "fal",
        ProviderResponseError,
        retryable=True,
        remote_job="completed",
        router="retry",
        note="output file cut in half: the image fails to decode",
    ),
    _row(
        "job_error",
        "fal",
        ProviderUnavailableError,
        retryable=True,
        remote_job="none",
        router="retry",
        note="the result endpoint answers HTTP 500 with the app's error",
    ),
    _row(
        "nsfw",
        "fal",
        ContentFilteredError,
        retryable=False,
        remote_job="completed",
        router="failover",
        note="`has_nsfw_concepts` flags every image",
    ),
    _row(
        "completed_with_error",
        "fal",
        ProviderUnavailableError,
        retryable=True,
        remote_job="none",
        router="retry",
        note="status COMPLETED carrying `error` / `error_type` (runner_disconnected)",
    ),
    _row(
        "flaky_status",
        "fal",
        None,
        retryable=False,
        remote_job="served",
        router="served",
        note="the first 2 status reads (stream and GET) answer 503; they are read again in place",
    ),
    _row(
        "flaky_download",
        "fal",
        None,
        retryable=False,
        remote_job="served",
        router="served",
        note="the first GET of each output file answers 503; the file is read again in place, not re-generated",
    ),
    _row(
        "gateway_error",
        "fal",
        ProviderUnavailableError,
        retryable=True,
        outcome_unknown=True,
        remote_job="unknown",
        router="failover",
        note="the submit is answered 502 (HTML) although the request runs; fal cannot list requests, so the "
        "attempt is recorded with outcome `unknown` and an unknown cost, and never re-sent",
    ),
)


def expectation(fault: str, provider: str) -> FaultExpectation:
    """The row for `fault` on `provider`; KeyError when the provider has no such fault kind."""
    for row in FAULT_MATRIX:
        if row.fault == fault and row.provider == provider:
            return row
    raise KeyError(f"no fault matrix row for fault {fault!r} on {provider!r}")


_ROUTER_TEXT: dict[RouterAction, str] = {
    "retry": "retried after backoff; next provider tried meanwhile",
    "failover": "fails over; not re-sent to this provider",
    "deadline": "waits out the deadline; hedging reaches the next provider",
    "served": "served by this provider; nothing to retry",
}


def render_markdown() -> str:
    """The matrix as a Markdown table (the generated section of docs/reliability.md)."""
    lines = [
        "| Fault | Provider | Error class | Retryable | Outcome unknown | Remote job | Router | What happens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in FAULT_MATRIX:
        lines.append(
            f"| `{row.fault}` | {row.provider} | {'none' if row.error is None else f'`{row.error.__name__}`'} "
            f"| {'yes' if row.retryable else 'no'} "
            f"| {'yes' if row.outcome_unknown else 'no'} | {row.remote_job} | {_ROUTER_TEXT[row.router]} "
            f"| {row.note} |"
        )
    return "\n".join(lines) + "\n"


def update_document(text: str) -> str:
    """`text` with the part between the markers replaced by `render_markdown()` (markers appended if absent)."""
    block = f"{BEGIN_MARKER}\n{render_markdown()}{END_MARKER}"
    if BEGIN_MARKER in text and END_MARKER in text:
        head, rest = text.split(BEGIN_MARKER, 1)
        _, tail = rest.split(END_MARKER, 1)
        return head + block + tail
    return text.rstrip("\n") + ("\n\n" if text.strip() else "") + block + "\n"


def _main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m lightning_client.testing.fault_matrix DOC.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    path.write_text(update_document(path.read_text() if path.exists() else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
