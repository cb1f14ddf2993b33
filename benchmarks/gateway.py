"""The gateway at full speed: `lightning-client serve` in front of hosted fal, and one Router at 10,000 in flight.

The sandbox runs in its own process; the server (when used) in another, with its default limits (for
hosted providers: 1,024 in flight); each client run in this process or a fresh one, so CPU and memory are
each their own. Parts, all measured side by side in one run:

- `server_vs_direct`: 64 concurrent requests to fal at 0.5 s compute, through the server
  (`RemoteGenerator`) against one `FalGenerator` in-process; wall time of each burst, alternating.
- `added_latency`: one request at a time at 0.5 s compute, direct and through the server alternating
  (paired per round): p50/p95 of the paired difference, and the server process's CPU per request.
- `scale`: one Router over both hosted sandbox providers, in a fresh process per size, holding N
  concurrent requests (1,000 and 10,000; quick: 200 and 1,000): every outcome, wall, peak RSS, CPU per
  request against the smaller size, and the tasks and file descriptors left once they have finished.
- `clients`: 2,000 concurrent clients (quick: 200) through the server over both providers, with its
  defaults: every outcome and the wall time.

The process's open-file limit is raised to its hard limit (each request in flight holds a socket).

    python benchmarks/gateway.py [--quick]
    python benchmarks/gateway.py --scale 10000   # only the check that one Router holds 10,000 in flight
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import resource
import statistics
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

from _common import (
    FAL_KEY,
    REPLICATE_TOKEN,
    RESULTS,
    SIZE,
    RemoteSandbox,
    cpu_seconds,
    peak_rss_mb,
    summarize_ms,
    write_result,
)

COMPUTE_S = 0.5
BURST = 64
TARGET_WALL_RATIO = 1.3
TARGET_ADDED_P50_MS = 4.0
TARGET_SERVER_CPU_MS = 3.0
TARGET_RSS_MB = 256.0
TARGET_CPU_GROWTH = 1.2


def raise_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit (inherited by the processes it starts)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _generators(urls: dict[str, str], which: str, connections: int) -> list[Any]:
    import lightning_client as lc

    made: list[Any] = []
    if which in ("router", "replicate"):
        made.append(
            lc.ReplicateGenerator(api_key=REPLICATE_TOKEN, base_url=urls["replicate_url"], max_connections=connections)
        )
    if which in ("router", "fal"):
        made.append(
            lc.FalGenerator(
                api_key=FAL_KEY,
                base_url=urls["fal_url"],
                run_url=urls["fal_run_url"],
                rest_url=urls["fal_url"],
                max_connections=connections,
            )
        )
    return made


def _served(urls: dict[str, str], which: str) -> Any:
    import lightning_client as lc

    made = _generators(urls, which, 2048)
    return made[0] if len(made) == 1 else lc.Router(made, hooks=[])


def _serve(conn: Connection, urls: dict[str, str], which: str) -> None:
    """Child process: the server with its default settings over `which`; answers CPU and status queries."""
    import httpx

    from lightning_client.serving.app import create_app
    from lightning_client.serving.runner import ServerThread
    from lightning_client.serving.settings import ServerSettings

    app = create_app(_served(urls, which), settings=ServerSettings(warmup=False))
    with ServerThread(app) as url:
        conn.send(url)
        while True:
            command = conn.recv()
            if command == "stop":
                break
            if command == "status":
                conn.send(httpx.get(f"{url}/v1/status", timeout=30).json())
            else:
                conn.send(cpu_seconds())
    conn.send(None)


class Server:
    """The server in a child process (spawned), so its CPU is its own."""

    def __init__(self, urls: dict[str, str], which: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, urls, which), daemon=True)
        self.url = ""

    def __enter__(self) -> Server:
        self._process.start()
        if not self._conn.poll(120):
            raise RuntimeError("the server process did not start within 120 s")
        self.url = self._conn.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._conn.send("stop")
            self._conn.poll(60)
        finally:
            self._process.join(timeout=60)
            if self._process.is_alive():
                self._process.terminate()

    def ask(self, command: str) -> Any:
        self._conn.send(command)
        if not self._conn.poll(120):
            raise RuntimeError(f"the server process did not answer {command!r} within 120 s")
        return self._conn.recv()


def _request(i: int) -> Any:
    import lightning_client as lc

    return lc.GenerationRequest(prompt=f"gateway {i}", seed=i, **SIZE)


async def _burst(generator: Any, start: int, n: int) -> tuple[float, Counter[str]]:
    """`n` concurrent requests; the wall time and the outcomes (`ok` or the error class)."""
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(generator.agenerate(_request(i)) for i in range(start, start + n)), return_exceptions=True
    )
    wall = time.perf_counter() - t0
    return wall, Counter("ok" if not isinstance(r, BaseException) else type(r).__name__ for r in results)


async def _through_server(urls: dict[str, str], rounds: int, sequential: int) -> dict[str, Any]:
    import lightning_client as lc

    with Server(urls, "fal") as server:
        direct = _generators(urls, "fal", 256)[0]
        remote = lc.RemoteGenerator(server.url, max_connections=256)
        await _burst(direct, 10_000_000, 8)
        await _burst(remote, 10_000_000, 8)
        # 64 at once, the two paths alternating burst by burst.
        walls: dict[str, list[float]] = {"direct": [], "server": []}
        outcomes: Counter[str] = Counter()
        for r in range(rounds):
            for path, generator in (("direct", direct), ("server", remote)):
                wall, seen = await _burst(generator, r * BURST, BURST)
                walls[path].append(wall)
                outcomes.update(seen)
        # One at a time, paired per round; the server's CPU read around its requests.
        direct_s: list[float] = []
        served_s: list[float] = []
        server_cpu = 0.0
        for i in range(sequential):
            t0 = time.perf_counter()
            await direct.agenerate(_request(20_000_000 + i))
            direct_s.append(time.perf_counter() - t0)
            before = server.ask("cpu")
            t0 = time.perf_counter()
            await remote.agenerate(_request(20_000_000 + i))
            served_s.append(time.perf_counter() - t0)
            server_cpu += server.ask("cpu") - before
        status = server.ask("status")
        await direct.aclose()
        await remote.aclose()
    wall_direct, wall_server = statistics.median(walls["direct"]), statistics.median(walls["server"])
    paired = [(b - a) * 1e3 for a, b in zip(direct_s, served_s, strict=True)]
    return {
        "server_vs_direct": {
            "burst": BURST,
            "rounds": rounds,
            "wall_direct_s": round(wall_direct, 3),
            "wall_server_s": round(wall_server, 3),
            "ratio": round(wall_server / wall_direct, 3),
            "outcomes": dict(outcomes),
            "server_limits": status["limits"],
        },
        "added_latency": {
            "requests": sequential,
            "direct": summarize_ms(direct_s),
            "via_server": summarize_ms(served_s),
            "added_paired_p50_ms": round(statistics.median(paired), 2),
            "added_paired_p95_ms": round(sorted(paired)[int(0.95 * (len(paired) - 1))], 2),
            "server_cpu_ms_per_request": round(server_cpu / sequential * 1e3, 3),
        },
    }


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1


async def _scale_run(urls: dict[str, str], n: int) -> dict[str, Any]:
    import lightning_client as lc

    generators = _generators(urls, "router", n)
    router = lc.Router(generators, hooks=[])
    names = [g.name for g in generators]
    await asyncio.gather(*(router.agenerate(_request(i)) for i in range(20)))
    fds_before, tasks_before = _open_fds(), len(asyncio.all_tasks())
    rss_before = peak_rss_mb()
    cpu_before = cpu_seconds()
    unclassified = 0

    async def one(i: int) -> str:
        """One request's outcome; its images are checked and dropped, as a caller that stores them would."""
        nonlocal unclassified
        try:
            result = await router.agenerate(_request(1000 + i), providers=names if i % 2 else names[::-1])
        except lc.LightningError as exc:
            return type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - counted: every failure must be a classified one
            unclassified += 1
            return type(exc).__name__
        return "ok" if result.images[0].data else "empty"

    t0 = time.perf_counter()
    outcomes = Counter(await asyncio.gather(*(one(i) for i in range(n))))
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu_before
    await router.aclose()
    await asyncio.sleep(0.5)  # let closed connections and finished background work go
    gc.collect()
    return {
        "requests": n,
        "outcomes": dict(outcomes),
        "unclassified_errors": unclassified,
        "wall_s": round(wall, 3),
        "client_cpu_ms_per_request": round(cpu / n * 1e3, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_burst_mb": round(rss_before, 1),
        "tasks_left": len(asyncio.all_tasks()) - tasks_before,
        "fds_left": _open_fds() - fds_before,
    }


def _scale_child(conn: Connection, urls: dict[str, str], n: int) -> None:
    raise_file_limit()
    conn.send(asyncio.run(_scale_run(urls, n)))


def _scale(urls: dict[str, str], n: int) -> dict[str, Any]:
    """`_scale_run` in a fresh process, so its peak RSS and CPU are its own."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_scale_child, args=(child, urls, n), daemon=True)
    process.start()
    try:
        if not parent.poll(900):
            raise RuntimeError(f"the {n}-way run did not finish within 900 s")
        report: dict[str, Any] = parent.recv()
        return report
    finally:
        process.join(timeout=60)
        if process.is_alive():
            process.terminate()


async def _clients(urls: dict[str, str], n: int) -> dict[str, Any]:
    import lightning_client as lc

    with Server(urls, "router") as server:
        remote = lc.RemoteGenerator(server.url, max_connections=n)
        await _burst(remote, 30_000_000, 8)
        wall, outcomes = await _burst(remote, 40_000_000, n)
        status = server.ask("status")
        await remote.aclose()
    return {
        "clients": n,
        "wall_s": round(wall, 3),
        "outcomes": dict(outcomes),
        "server_limits": {k: status["limits"][k] for k in ("max_concurrency", "max_queue")},
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Every part against one sandbox process (fal and Replicate at 0.5 s compute)."""
    files = raise_file_limit()
    small, large = (200, 1000) if quick else (1000, 10_000)
    with RemoteSandbox() as sb:
        for provider in ("fal", "replicate"):
            sb.configure(provider, inference_s=COMPUTE_S, queue_s=0.0)
        urls = dict(sb.urls)
        report = asyncio.run(_through_server(urls, 2 if quick else 5, 20 if quick else 100))
        smaller, larger = _scale(urls, small), _scale(urls, large)
        report["scale"] = {
            "small": smaller,
            "large": larger,
            "cpu_growth": round(larger["client_cpu_ms_per_request"] / smaller["client_cpu_ms_per_request"], 3),
        }
        report["clients"] = asyncio.run(_clients(urls, 200 if quick else 2000))
    return {
        "quick": quick,
        "compute_s": COMPUTE_S,
        "open_file_limit": files,
        **report,
        "targets": {
            "wall_ratio": TARGET_WALL_RATIO,
            "added_p50_ms": TARGET_ADDED_P50_MS,
            "server_cpu_ms": TARGET_SERVER_CPU_MS,
            "peak_rss_mb": TARGET_RSS_MB,
            "cpu_growth": TARGET_CPU_GROWTH,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and smaller bursts")
    parser.add_argument("--scale", type=int, metavar="N", help="only check that one Router holds N in flight")
    args = parser.parse_args()
    if args.scale:
        raise_file_limit()
        with RemoteSandbox() as sb:
            for provider in ("fal", "replicate"):
                sb.configure(provider, inference_s=COMPUTE_S, queue_s=0.0)
            print(json.dumps(_scale(dict(sb.urls), args.scale), indent=2))
        return
    report = run(args.quick)
    vs, lat, scale, clients = report["server_vs_direct"], report["added_latency"], report["scale"], report["clients"]
    print(f"64-way wall: server {vs['wall_server_s']:.2f} s vs direct {vs['wall_direct_s']:.2f} s ({vs['ratio']:.2f}x)")
    print(
        f"added latency p50 {lat['added_paired_p50_ms']:.2f} ms, p95 {lat['added_paired_p95_ms']:.2f} ms; "
        f"server CPU {lat['server_cpu_ms_per_request']:.2f} ms/request"
    )
    for size in ("small", "large"):
        row = scale[size]
        print(
            f"{row['requests']}-way Router: {row['outcomes']}, {row['wall_s']:.2f} s, {row['peak_rss_mb']:.0f} MiB, "
            f"{row['client_cpu_ms_per_request']:.2f} ms CPU/request, tasks left {row['tasks_left']}, fds left {row['fds_left']}"
        )
    print(f"{clients['clients']} clients through the server: {clients['outcomes']}, {clients['wall_s']:.2f} s")
    if args.quick:  # quick numbers are a smoke test, never results
        path = RESULTS / "quick" / "gateway.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    else:
        path = write_result("gateway", report)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
