"""The server's added latency and CPU per request: a generator behind `lightning-client serve` vs in-process.

The sandbox runs in its own process with `inference_s=0`; the server runs in another, over a
`ReplicateGenerator` on that sandbox; this process calls the same generator configuration two
ways, alternating request by request (CPU: in blocks) so drift hits both alike: in-process (`ReplicateGenerator.agenerate`)
and through the server (`RemoteGenerator.agenerate`, i.e. HTTP to `/v1/generations`, the server
parsing, admitting and serializing, the result parsed back). Images are 256x256 PNG.

Added latency = p50 via the server - p50 in-process (target <= 3 ms; the median of the paired
differences is reported beside it). Added CPU = (client +
server process CPU per request via the server) - CPU per request in-process.

    python benchmarks/serving.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

from _common import REPLICATE_TOKEN, SIZE, RemoteSandbox, cpu_seconds, summarize_ms, write_result

import lightning_client as lc

TARGET_ADDED_P50_MS = 3.0


def _serve(conn: Connection, replicate_url: str) -> None:
    """Child process: serve a ReplicateGenerator on the sandbox; answer CPU queries until told to stop."""
    from lightning_client.serving.app import create_app
    from lightning_client.serving.runner import ServerThread

    generator = lc.ReplicateGenerator(api_key=REPLICATE_TOKEN, base_url=replicate_url)
    with ServerThread(create_app(generator)) as url:
        conn.send(url)
        while True:
            command = conn.recv()
            if command == "stop":
                break
            conn.send(cpu_seconds())
    conn.send(None)


class ServerProcess:
    """The server in a child process (spawned), so its CPU is measured apart from the client's."""

    def __init__(self, replicate_url: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, replicate_url), daemon=True)
        self.url = ""

    def __enter__(self) -> ServerProcess:
        self._process.start()
        if not self._conn.poll(120):
            raise RuntimeError("the server process did not start within 120 s")
        self.url = self._conn.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._conn.send("stop")
            self._conn.poll(30)
        finally:
            self._process.join(timeout=30)
            if self._process.is_alive():
                self._process.terminate()

    def cpu_seconds(self) -> float:
        self._conn.send("cpu")
        if not self._conn.poll(60):
            raise RuntimeError("the server process did not answer within 60 s")
        value: float = self._conn.recv()
        return value


async def _block(call: Callable[[int], Awaitable[None]], start: int, n: int, latencies: list[float]) -> float:
    """Run `n` calls one at a time; returns this process's CPU seconds per call."""
    before = cpu_seconds()
    for i in range(start, start + n):
        t0 = time.perf_counter()
        await call(i)
        latencies.append(time.perf_counter() - t0)
    return (cpu_seconds() - before) / n


async def _run(requests: int, block: int) -> dict[str, Any]:
    with RemoteSandbox() as sb:
        sb.configure("replicate", inference_s=0.0, queue_s=0.0)
        with ServerProcess(sb.replicate_url) as server:
            local = lc.ReplicateGenerator(api_key=REPLICATE_TOKEN, base_url=sb.replicate_url)
            remote = lc.RemoteGenerator(server.url)

            async def in_process(i: int) -> None:
                result = await local.agenerate(lc.GenerationRequest(prompt=f"serve {i}", seed=i, **SIZE))
                assert result.images[0].data

            async def via_server(i: int) -> None:
                result = await remote.agenerate(lc.GenerationRequest(prompt=f"serve {i}", seed=i, **SIZE))
                assert result.images[0].data

            warm: list[float] = []
            await _block(in_process, 100_000, 10, warm)
            await _block(via_server, 100_000, 10, warm)
            # Latency: the two paths alternate request by request, so load changes hit both alike.
            direct_s: list[float] = []
            served_s: list[float] = []
            for i in range(requests):
                await _block(in_process, i, 1, direct_s)
                await _block(via_server, i, 1, served_s)
            # CPU: blocks, with the server process's CPU read around each of its blocks.
            direct_cpu: list[float] = []
            served_cpu: list[float] = []
            unused: list[float] = []
            for start in range(0, requests, block):
                direct_cpu.append(await _block(in_process, start, block, unused))
                server_before = server.cpu_seconds()
                client = await _block(via_server, start, block, unused)
                served_cpu.append(client + (server.cpu_seconds() - server_before) / block)
            await local.aclose()
            await remote.aclose()
    direct, served = summarize_ms(direct_s), summarize_ms(served_s)
    paired = statistics.median(b - a for a, b in zip(direct_s, served_s, strict=True)) * 1e3
    direct_cpu_ms = statistics.median(direct_cpu) * 1e3
    served_cpu_ms = statistics.median(served_cpu) * 1e3
    return {
        "requests_per_path": requests,
        "block": block,
        "size": f"{SIZE['width']}x{SIZE['height']}",
        "in_process": direct,
        "via_server": served,
        "added_p50_ms": round(served["p50_ms"] - direct["p50_ms"], 2),
        "added_median_paired_ms": round(paired, 2),
        "in_process_cpu_ms_per_request": round(direct_cpu_ms, 3),
        "via_server_cpu_ms_per_request": round(served_cpu_ms, 3),
        "added_cpu_ms_per_request": round(served_cpu_ms - direct_cpu_ms, 3),
        "target_added_p50_ms": TARGET_ADDED_P50_MS,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Latency and CPU per request, in-process vs through the server, side by side."""
    return asyncio.run(_run(60 if quick else 300, 20))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    args = parser.parse_args()
    report = run(args.quick)
    print(
        f"in-process p50 {report['in_process']['p50_ms']:.2f} ms, via server {report['via_server']['p50_ms']:.2f} ms: "
        f"added {report['added_p50_ms']:.2f} ms (target <= {TARGET_ADDED_P50_MS} ms)"
    )
    print(
        f"CPU per request: in-process {report['in_process_cpu_ms_per_request']:.2f} ms, via server "
        f"{report['via_server_cpu_ms_per_request']:.2f} ms (client + server): added "
        f"{report['added_cpu_ms_per_request']:.2f} ms"
    )
    print(f"wrote {write_result('serving', report)}")


if __name__ == "__main__":
    main()
