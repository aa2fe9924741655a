"""A bounded load test of a running ``unblur serve``: many concurrent clients, each request a
whole job (submit, follow its events to the end, fetch the image).

    python -m unblur.serve.loadtest http://127.0.0.1:7860 --run digits --clients 40 --requests 200 \\
        --rounds 2 --pid SERVER_PID

A request answered 429 waits the shorter of its ``Retry-After`` and ``--backoff`` seconds and
tries again (counted); its latency runs from the first try to the image. With ``--pid`` (a
server on this machine) the server's resident and peak memory are read from ``/proc`` after
each round: a second identical round should leave the peak where the first put it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Round:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    done: int = 0
    rejected: int = 0  # 429 answers (each retried)
    server_errors: int = 0  # 5xx answers
    failed: int = 0  # jobs that ended in error or cancelled, or broken streams
    rss_mib: float | None = None
    peak_mib: float | None = None

    def row(self) -> dict:
        lat = sorted(self.latencies)
        q = (lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan"))  # noqa: E731
        return {"requests": self.done, "seconds": round(self.seconds, 2),
                "requests_per_s": round(self.done / self.seconds, 2) if self.seconds else 0.0,
                "p50_s": round(statistics.median(lat), 3) if lat else None, "p95_s": round(q(0.95), 3),
                "429s": self.rejected, "5xx": self.server_errors, "failed": self.failed,
                "server_rss_mib": self.rss_mib, "server_peak_mib": self.peak_mib}


def memory_mib(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MiB of process ``pid`` (Linux /proc)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def one_request(client, url: str, body: dict, r: Round, backoff: float) -> None:
    t0 = time.perf_counter()
    while True:
        resp = await client.post(f"{url}/api/generate", json=body)
        if resp.status_code == 429:
            r.rejected += 1
            await asyncio.sleep(min(float(resp.headers.get("Retry-After", backoff)), backoff))
            continue
        if resp.status_code >= 500:
            r.server_errors += 1
            return
        if resp.status_code != 202:
            r.failed += 1
            return
        break
    job = resp.json()["job"]
    last = None
    async with client.stream("GET", f"{url}/api/jobs/{job}/events") as s:
        if s.status_code >= 500:
            r.server_errors += 1
            return
        async for line in s.aiter_lines():
            if line.startswith("event: "):
                last = line[7:]
    if last != "done":
        r.failed += 1
        return
    img = await client.get(f"{url}/api/jobs/{job}/images/0.png")
    if img.status_code >= 500:
        r.server_errors += 1
    elif img.status_code != 200 or not img.content.startswith(b"\x89PNG"):
        r.failed += 1
    else:
        r.done += 1
        r.latencies.append(time.perf_counter() - t0)


async def run_round(url: str, body: dict, *, clients: int, requests: int, backoff: float) -> Round:
    import httpx

    r = Round()
    todo = asyncio.Queue()
    for i in range(requests):
        todo.put_nowait(i)
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def worker():
            while True:
                try:
                    i = todo.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await one_request(client, url, {**body, "seed": i}, r, backoff)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        r.seconds = time.perf_counter() - t0
    return r


def load_test(url: str, body: dict, *, clients: int = 40, requests: int = 200, rounds: int = 2,
              backoff: float = 0.25, pid: int | None = None) -> list[dict]:
    """One row per round (see ``Round.row``)."""
    rows = []
    for _ in range(rounds):
        r = asyncio.run(run_round(url, body, clients=clients, requests=requests, backoff=backoff))
        if pid is not None:
            rss, peak = memory_mib(pid)
            r.rss_mib, r.peak_mib = round(rss, 1), round(peak, 1)
        rows.append(r.row())
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--run", required=True, help="the run name, as GET /api/runs gives it")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--clients", type=int, default=40)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--backoff", type=float, default=0.25)
    p.add_argument("--preview", default="x0")
    p.add_argument("--pid", type=int, help="the server's process id (this machine): report its memory")
    args = p.parse_args(argv)
    body = {"run": args.run, "steps": args.steps, "n": 1, "preview": args.preview}
    rows = load_test(args.url.rstrip("/"), body, clients=args.clients, requests=args.requests, rounds=args.rounds,
                     backoff=args.backoff, pid=args.pid)
    keys = list(rows[0])
    print("| round | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for i, row in enumerate(rows, 1):
        print(f"| {i} | " + " | ".join(str(row[k]) for k in keys) + " |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
