"""Concurrency: 1,000 concurrent requests at 0.5 s compute, ours against the official async clients.

The sandbox runs in one process and each client in a fresh process of its own (so its wall time,
CPU seconds and peak RSS are its own), one client after the other against the same sandbox
process. Clients, each fetching every image's bytes:

- `ours_router`: our Router, requests alternating Replicate-first and fal-first;
- `ours_replicate` / `ours_fal`: our ReplicateGenerator / FalGenerator alone;
- `replicate_async`: the official `replicate` client's `async_run` (then reading each output);
- `fal_async`: the official `fal_client.AsyncClient.subscribe` with its default polling (then
  downloading the image).

Connection pools: ours and replicate's get room for every request at once (1,024 connections; a
pool of 64 or 100 would queue them). fal-client builds its httpx client itself, so it runs with
httpx's default limits (100 connections), as any of its users would.

    python benchmarks/concurrency.py [--quick] [--requests N] [--clients a,b,...]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import FAL_KEY, REPLICATE_TOKEN, SIZE, RemoteSandbox, cpu_seconds, peak_rss_mb, write_result

COMPUTE_S = 0.5
#: `--quick` bursts fewer requests (a full burst takes over a minute on a 2-core machine).
QUICK_REQUESTS = 250
CONNECTIONS = 1024
WARM_REQUESTS = 20
CLIENTS = ("ours_router", "ours_replicate", "ours_fal", "replicate_async", "fal_async")
OFFICIAL = ("replicate_async", "fal_async")
#: Each client's prompts and seeds start this far from the previous client's.
CLIENT_STRIDE = 1_000_000

Call = Callable[[int], Awaitable[None]]


async def _ours(urls: dict[str, str], client: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import lightning_client as lc

    generators: list[lc.Generator] = []
    if client in ("ours_router", "ours_replicate"):
        generators.append(
            lc.ReplicateGenerator(api_key=REPLICATE_TOKEN, base_url=urls["replicate_url"], max_connections=CONNECTIONS)
        )
    if client in ("ours_router", "ours_fal"):
        generators.append(
            lc.FalGenerator(
                api_key=FAL_KEY, base_url=urls["fal_url"], rest_url=urls["fal_url"], max_connections=CONNECTIONS
            )
        )
    router = lc.Router(generators, hooks=[])
    names = [g.name for g in generators]
    orders = (names, names[::-1])

    async def call(i: int) -> None:
        result = await router.agenerate(f"burst {i}", providers=orders[i % 2], seed=i, **SIZE)
        assert result.images[0].data

    return call, router.aclose


def _replicate_input(i: int) -> dict[str, Any]:
    return {"prompt": f"burst {i}", "seed": i, "num_outputs": 1, "num_inference_steps": 4, **SIZE}


async def _replicate(urls: dict[str, str]) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import httpx
    from replicate.client import Client

    from lightning_client.providers.replicate import DEFAULT_MODEL

    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    client = Client(
        api_token=REPLICATE_TOKEN, base_url=urls["replicate_url"], transport=httpx.AsyncHTTPTransport(limits=limits)
    )
    # replicate wraps only https URLs in FileOutput; the sandbox's http URLs come back as strings.
    downloads = httpx.AsyncClient(limits=limits, timeout=60, headers={"Authorization": f"Bearer {REPLICATE_TOKEN}"})

    async def call(i: int) -> None:
        output = await client.async_run(DEFAULT_MODEL, input=_replicate_input(i))
        for item in output:
            data = await item.aread() if hasattr(item, "aread") else (await downloads.get(str(item))).content
            assert data

    return call, downloads.aclose


async def _fal(urls: dict[str, str]) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import fal_client
    import fal_client.client as fal_module
    import httpx

    from lightning_client.providers.fal import DEFAULT_APP

    # fal-client builds its URLs from module constants at call time (as the conformance tests do).
    fal_module.QUEUE_URL_FORMAT = urls["fal_url"] + "/"
    fal_module.RUN_URL_FORMAT = urls["fal_run_url"] + "/"
    client = fal_client.AsyncClient(key=FAL_KEY)
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    downloads = httpx.AsyncClient(limits=limits, timeout=60)

    async def call(i: int) -> None:
        arguments = {
            "prompt": f"burst {i}",
            "seed": i,
            "image_size": {"width": SIZE["width"], "height": SIZE["height"]},
            "num_inference_steps": "4",
            "num_images": 1,
            "format": "png",
        }
        result = await client.subscribe(DEFAULT_APP, arguments, client_timeout=120)
        assert (await downloads.get(result["images"][0]["url"])).content

    return call, downloads.aclose


async def _burst(urls: dict[str, str], client: str, requests: int) -> dict[str, Any]:
    if client == "replicate_async":
        call, close = await _replicate(urls)
    elif client == "fal_async":
        call, close = await _fal(urls)
    else:
        call, close = await _ours(urls, client)
    # Every client asks for its own prompts: the sandbox caches rendered images, so a client repeating
    # another's prompts would be answered from that cache.
    first = CLIENT_STRIDE * (CLIENTS.index(client) + 1)
    await asyncio.gather(*(call(first + 100_000 + i) for i in range(WARM_REQUESTS)))
    rss_before = peak_rss_mb()
    cpu_before, started = cpu_seconds(), time.perf_counter()
    outcomes = await asyncio.gather(*(call(first + i) for i in range(requests)), return_exceptions=True)
    wall = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    await close()
    failures: dict[str, int] = {}
    examples: list[str] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            failures[type(outcome).__name__] = failures.get(type(outcome).__name__, 0) + 1
            examples.append(str(outcome)[:400])
    return {
        "requests": requests,
        "succeeded": requests - sum(failures.values()),
        "failures": failures,
        "failure_examples": examples[:3],
        "wall_s": round(wall, 3),
        "client_cpu_s": round(cpu, 3),
        "client_cpu_ms_per_request": round(cpu / requests * 1e3, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_burst_mb": round(rss_before, 1),
    }


def _child(urls: dict[str, str], client: str, requests: int, conn: Any) -> None:
    conn.send(asyncio.run(_burst(urls, client, requests)))


def _one(sb: RemoteSandbox, client: str, requests: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    sandbox_cpu = sb.cpu_seconds()
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sb.urls, client, requests, sender))
    child.start()
    try:
        if not receiver.poll(400):
            raise RuntimeError(f"the {client} client did not finish within 400 s")
        report: dict[str, Any] = receiver.recv()
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.terminate()
    report["sandbox_cpu_s"] = round(sb.cpu_seconds() - sandbox_cpu, 3)
    return report


def _ratios(clients: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ours against the better (lower) of the official clients, for wall time and client CPU."""
    official = [clients[name] for name in OFFICIAL if name in clients and "error" not in clients[name]]
    if not official:
        return {}
    best_wall = min(c["wall_s"] for c in official)
    best_cpu = min(c["client_cpu_s"] for c in official)
    return {
        name: {
            "wall_vs_best_official": round(clients[name]["wall_s"] / best_wall, 3),
            "cpu_vs_best_official": round(clients[name]["client_cpu_s"] / best_cpu, 3),
        }
        for name in clients
        if name.startswith("ours_") and "error" not in clients[name]
    }


def run(quick: bool = False, requests: int | None = None, clients: tuple[str, ...] = CLIENTS) -> dict[str, Any]:
    """Wall time, client CPU seconds and peak RSS of `requests` concurrent requests, per client."""
    requests = requests or (QUICK_REQUESTS if quick else 1000)
    measured: dict[str, dict[str, Any]] = {}
    with RemoteSandbox() as sb:
        for provider in ("replicate", "fal"):
            sb.configure(provider, inference_s=COMPUTE_S, queue_s=0.0)
        for client in clients:
            try:
                measured[client] = _one(sb, client, requests)
            except Exception as exc:  # noqa: BLE001 - one failing client is reported, the others still run
                measured[client] = {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "requests": requests,
        "compute_s": COMPUTE_S,
        "max_connections": CONNECTIONS,
        "layout": "one sandbox process; each client in a fresh process of its own, one after the other",
        "clients": measured,
        "ratios": _ratios(measured),
        "quick": quick,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REQUESTS} requests instead of 1,000")
    parser.add_argument("--requests", type=int, default=None, help="override the number of requests")
    parser.add_argument("--clients", default=",".join(CLIENTS), help=f"comma-separated subset of {', '.join(CLIENTS)}")
    args = parser.parse_args()
    report = run(args.quick, args.requests, tuple(args.clients.split(",")))
    for name, figures in report["clients"].items():
        print(f"{name:<18}{figures}")
    print(f"ratios            {report['ratios']}")
    print(f"wrote {write_result('concurrency', report)}")


if __name__ == "__main__":
    main()
