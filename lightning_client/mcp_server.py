"""`create_mcp_server(router)`: a router (or one generator) as MCP tools for agents (the `mcp` extra).

Tools: `generate_image` (images plus a text part with provider, seed, latency and cost),
`list_providers` (capabilities and health) and `spend` (the ledger summary and the budget left).
Every request goes through the same router, budget, cache and ledger as in-process calls; a
library error comes back as a tool error carrying its message. `lightning-client mcp` serves it
over stdio or streamable HTTP.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Sequence
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ImageContent, TextContent, ToolAnnotations

from lightning_client.errors import InvalidRequestError, LightningError
from lightning_client.generator import Generator, expected_wait
from lightning_client.request import GenerationRequest
from lightning_client.result import GenerationResult
from lightning_client.routing.router import Router

__all__ = ["create_mcp_server", "parse_size", "require_bearer"]

INSTRUCTIONS = (
    "Text-to-image with SDXL-Lightning over several providers behind one router (failover, retries, "
    "budget, cost ledger). generate_image returns PNG images and a JSON text part with the provider, "
    "seed, latency and cost; list_providers says what each provider can do and whether it is healthy; "
    "spend reports dollars spent and the budget left."
)


def parse_size(size: str) -> tuple[int, int]:
    """`"WIDTHxHEIGHT"` as (width, height); anything else is an `InvalidRequestError` naming `size`."""
    width, sep, height = size.lower().replace(" ", "").partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise InvalidRequestError(f"size={size!r} is invalid; allowed: WIDTHxHEIGHT, e.g. 1024x1024", field="size")
    return int(width), int(height)


def _request(
    prompt: str, steps: int, size: str | None, aspect_ratio: str | None, seed: int | None, count: int
) -> GenerationRequest:
    fields: dict[str, Any] = {"prompt": prompt, "steps": steps, "num_images": count}
    if size is not None and aspect_ratio is not None:
        raise InvalidRequestError("give either size or aspect_ratio, not both", field="size")
    if size is not None:
        fields["width"], fields["height"] = parse_size(size)
    if aspect_ratio is not None:
        fields["aspect_ratio"] = aspect_ratio
    if seed is not None:
        fields["seed"] = seed
    return GenerationRequest(**fields)


def _summary(result: GenerationResult) -> dict[str, Any]:
    cost = result.cost
    return {
        "provider": result.provider,
        "model": result.model,
        "seed": result.seed,
        "latency_s": None if result.timings.total_s is None else round(result.timings.total_s, 3),
        "cost_usd": cost.usd,  # null: unknown (a job may have been billed), never a made-up $0
        "cost_basis": cost.basis,
        "cost_estimated": cost.estimated,
        "request_id": result.request_id,
        "images": [{"width": i.width, "height": i.height, "content_type": i.content_type} for i in result.images],
        "warnings": [w.message for w in result.warnings],
        "attempts": [
            {"provider": a.provider, "outcome": a.outcome, "error": a.error_type or a.note} for a in result.attempts
        ],
    }


def _generators(generator: Generator) -> list[Generator]:
    return list(generator.generators) if isinstance(generator, Router) else [generator]


def create_mcp_server(generator: Generator, *, name: str = "lightning-client") -> MCPServer[Any]:
    """An MCP server whose tools use `generator` (a `Router` gives the ledger and budget to `spend`)."""
    from lightning_client._version import __version__

    router = generator if isinstance(generator, Router) else Router([generator])
    server: MCPServer[Any] = MCPServer(name, version=__version__, instructions=INSTRUCTIONS, log_level="WARNING")

    # Each call may cost money at a hosted provider: not read-only, not idempotent without a seed.
    @server.tool(structured_output=False, annotations=ToolAnnotations(read_only_hint=False, open_world_hint=True))
    async def generate_image(
        prompt: str,
        steps: int = 4,
        size: str | None = None,
        aspect_ratio: str | None = None,
        seed: int | None = None,
        count: int = 1,
        provider: str | None = None,
    ) -> list[ImageContent | TextContent]:
        """Generate images from a text prompt with SDXL-Lightning.

        Args:
            prompt: what to draw.
            steps: denoising steps, 1, 2, 4 or 8 (4: the usual balance of speed and quality).
            size: WIDTHxHEIGHT, e.g. 1024x1024 (default 1024x1024).
            aspect_ratio: W:H instead of a size, e.g. 16:9 (mapped to the nearest SDXL size).
            seed: fix it to get the same image again; random when omitted.
            count: number of images, 1 to 8.
            provider: one provider to use (see list_providers); default: the router's choice with failover.
        """
        try:
            request = _request(prompt, steps, size, aspect_ratio, seed, count)
            providers = None if provider is None else [provider]
            result = await router.agenerate(request, providers=providers)
        except LightningError as exc:
            raise ToolError(str(exc)) from exc
        images: list[ImageContent | TextContent] = [
            ImageContent(type="image", data=base64.b64encode(i.data).decode("ascii"), mime_type=i.content_type)
            for i in result.images
        ]
        return [*images, TextContent(type="text", text=json.dumps(_summary(result)))]

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def list_providers() -> dict[str, Any]:
        """The providers behind the router: what each can serve and whether it is healthy now."""
        breakers = router.breakers
        rows = []
        for gen in _generators(router):
            caps = gen.capabilities
            breaker = breakers.get(gen.name)
            rows.append(
                {
                    "name": gen.name,
                    "kind": getattr(gen, "kind", None),
                    "model": getattr(gen, "model", None),
                    "capabilities": {
                        "steps": sorted(caps.steps),
                        "native_steps": sorted(caps.native_steps),
                        "min_side": caps.min_side,
                        "max_side": caps.max_side,
                        "max_images": caps.max_images,
                        "formats": sorted(caps.formats | caps.converted_formats),
                        "seed": caps.seed,
                        "negative_prompt": caps.negative_prompt,
                    },
                    "health": {
                        "circuit": None if breaker is None else breaker.state,
                        "expected_wait_s": expected_wait(gen),
                    },
                }
            )
        return {"policy": router.policy.name, "providers": rows}

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def spend() -> dict[str, Any]:
        """Dollars spent per provider (from the ledger) and the budget left."""
        ledger, budget = router.ledger, router.budget
        cost = ledger.cost()
        return {
            "total_usd": cost.usd,  # null: some attempt's cost is unknown; known_usd has what is known
            "known_usd": cost.known_usd,
            "budget": {
                "total_usd": budget.total_usd,
                "per_day_usd": budget.per_day_usd,
                "left_usd": budget.left(),
                "spent_usd": budget.spent_usd,
            },
            "providers": [row.model_dump(mode="json") for row in ledger.summary()],
        }

    return server


def require_bearer(app: Any, keys: Sequence[str]) -> Any:
    """`app` (ASGI) answering 401 to HTTP requests without `Authorization: Bearer KEY` for one of `keys`."""
    accepted = [k.encode() for k in keys]

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers", [])).get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not any(hmac.compare_digest(token.strip(), k) for k in accepted):
                body = json.dumps({"error": "missing or invalid API key: send Authorization: Bearer KEY"}).encode()
                headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded
