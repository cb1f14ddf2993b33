"""How much load the sandbox takes: jobs in flight and status requests per second.

The sandbox runs in this process (one server thread, so at most one core of Python). The load comes from
separate processes speaking plain HTTP/1.1 over keep-alive connections (a minimal client, so that the
client's cost does not hide the server's), and the sandbox's CPU time is measured alongside. Prints what
it measured; numbers depend on the machine and on what else runs on it.

    python benchmarks/sandbox_throughput.py [--jobs 1000] [--seconds 5] [--clients 2] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import resource
import time
from urllib.parse import urlsplit

from lightning_client.testing import Sandbox

VERSION = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"
FAL_APP = "fal-ai/fast-lightning-sdxl"
REPLICATE_AUTH = "Bearer r8_bench"
FAL_AUTH = "Key bench:key"


class _Connection:
    """One keep-alive HTTP/1.1 connection; just enough of the protocol for the sandbox's JSON answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> _Connection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def request(self, method: str, path: str, auth: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: {auth}\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"Content-Type: application/json\r\n\r\n" + body)
        headers = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in headers.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return int(headers[9:12]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def _create_worker(
    rep_url: str, fal_url: str, count: int, connections: int, out: multiprocessing.Queue[list[str]]
) -> None:
    """Create `count` jobs (alternating providers); put their status URLs on `out`."""

    async def run() -> list[str]:
        urls: list[str] = []

        async def one_connection(share: int, offset: int) -> None:
            rep, fal = await _Connection.open(rep_url), await _Connection.open(fal_url)
            for i in range(share):
                if (offset + i) % 2 == 0:
                    body = json.dumps({"version": VERSION, "input": {"prompt": f"job {offset + i}"}}).encode()
                    _, answer = await rep.request("POST", "/v1/predictions", REPLICATE_AUTH, body)
                    urls.append(json.loads(answer)["urls"]["get"])
                else:
                    body = json.dumps({"prompt": f"job {offset + i}"}).encode()
                    _, answer = await fal.request("POST", f"/{FAL_APP}", FAL_AUTH, body)
                    urls.append(json.loads(answer)["status_url"])
            rep.close()
            fal.close()

        share = count // connections
        await asyncio.gather(
            *(one_connection(share + (c < count % connections), c * (share + 1)) for c in range(connections))
        )
        return urls

    out.put(asyncio.run(run()))


def _poll_worker(
    urls: list[str], seconds: float, connections: int, out: multiprocessing.Queue[tuple[int, int, list[float]]]
) -> None:
    """GET random status URLs for `seconds`; put (ok, errors, latencies) on `out`."""

    async def run() -> tuple[int, int, list[float]]:
        ok = errors = 0
        latencies: list[float] = []
        stop = time.perf_counter() + seconds

        async def loop(seed: int) -> None:
            nonlocal ok, errors
            rng = random.Random(seed)
            by_base: dict[str, _Connection] = {}
            while time.perf_counter() < stop:
                url = rng.choice(urls)
                parts = urlsplit(url)
                base = f"{parts.scheme}://{parts.netloc}"
                if base not in by_base:
                    by_base[base] = await _Connection.open(base)
                auth = FAL_AUTH if "/requests/" in url else REPLICATE_AUTH
                started = time.perf_counter()
                status, _ = await by_base[base].request("GET", parts.path, auth)
                latencies.append(time.perf_counter() - started)
                if status in (200, 202):
                    ok += 1
                else:
                    errors += 1
            for connection in by_base.values():
                connection.close()

        await asyncio.gather(*(loop(seed) for seed in range(connections)))
        return ok, errors, latencies

    out.put(asyncio.run(run()))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs kept in flight (half Replicate, half fal)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to poll statuses")
    parser.add_argument("--clients", type=int, default=2, help="load-generating processes")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections per client process")
    args = parser.parse_args()

    with Sandbox() as sb:
        hold = args.seconds + 120  # every job stays running for the whole measurement
        sb.replicate.configure(inference_s=hold)
        sb.fal.configure(inference_s=hold)

        created: multiprocessing.Queue[list[str]] = multiprocessing.Queue()
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        creator = multiprocessing.Process(
            target=_create_worker, args=(sb.replicate_url, sb.fal_url, args.jobs, 16, created)
        )
        creator.start()
        urls = created.get(timeout=300)
        creator.join()
        create_s, create_cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        in_flight = sb.replicate.stats()["running"] + sb.fal.stats()["running"]
        print(
            f"created {len(urls)} jobs in {create_s:.2f} s ({len(urls) / create_s:.0f} creates/s, "
            f"sandbox CPU {create_cpu / len(urls) * 1000:.2f} ms per create); running at once: {in_flight}"
        )

        results: multiprocessing.Queue[tuple[int, int, list[float]]] = multiprocessing.Queue()
        pollers = [
            multiprocessing.Process(target=_poll_worker, args=(urls, args.seconds, args.connections, results))
            for _ in range(args.clients)
        ]
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        for poller in pollers:
            poller.start()
        totals = [results.get(timeout=args.seconds + 120) for _ in pollers]
        for poller in pollers:
            poller.join()
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        ok, errors = sum(t[0] for t in totals), sum(t[1] for t in totals)
        latencies = sorted(x for t in totals for x in t[2])
        still = sb.replicate.stats()["running"] + sb.fal.stats()["running"]
        p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
        print(
            f"status GETs: {ok} ok, {errors} errors in {wall:.2f} s = {ok / wall:.0f}/s "
            f"(p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms) with {in_flight} jobs in flight ({still} still running)"
        )
        print(
            f"sandbox CPU: {cpu:.2f} s over {wall:.2f} s ({cpu / wall:.2f} cores), "
            f"{cpu / max(ok, 1) * 1000:.2f} ms per status request -> about {ok / cpu:.0f} requests per CPU-second"
        )


if __name__ == "__main__":
    main()
