"""``unblur serve`` measured on loopback: time to the first preview, the cost of streaming a
preview at every step, and a load test of concurrent clients.

    python benchmarks/serve.py latency --run shapes --steps 30 --n 4 --rounds 5
    python benchmarks/serve.py load --clients 40 --requests 200 --rounds 2

* ``latency``: one request at a time against a server of the built-in runs. For preview ``x0``
  (a PNG grid of every image's x0_hat at every step) and ``none`` (progress counts only),
  alternated: seconds to the first preview, to the last event, the sampler steps per second and
  the previews per second the client received; medians over ``--rounds``.
* ``load``: ``unblur.serve.loadtest`` against a server of the tiny fixture run
  (tests/fixtures/old_runs/edm-classes, 8x8 digits, 4 steps): requests/s, p50/p95 latency,
  429s, 5xx, and the server's resident and peak memory after each identical round.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(runs: list[str], *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "unblur", "serve", *runs, "--port", str(port), "--device", "cpu",
                             *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/api/runs", timeout=2).read()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.2)


def one(url: str, body: dict) -> dict:
    import httpx

    t0 = time.perf_counter()
    with httpx.Client(timeout=300) as c:
        job = c.post(f"{url}/api/generate", json=body).json()["job"]
        first = started = None
        frames = steps = 0
        kind = None
        with c.stream("GET", f"{url}/api/jobs/{job}/events") as s:
            for line in s.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "started":
                    started = time.perf_counter()
                elif line.startswith("data: ") and kind == "progress":
                    d = json.loads(line[6:])
                    steps = d["step"]
                    if "x0" in d:
                        frames += 1
                        if first is None:
                            first = time.perf_counter() - t0
        end = time.perf_counter()
    run_s = end - (started or t0)
    return {"first_preview_s": first, "total_s": end - t0, "steps_per_s": steps / run_s,
            "previews_per_s": frames / run_s, "previews": frames}


def cmd_latency(args) -> None:
    proc, url = start([f"builtin:{args.run}"])
    try:
        body = {"run": args.run, "steps": args.steps, "n": args.n, "seed": 0}
        if args.prompt:
            body["prompt"] = args.prompt
        one(url, {**body, "steps": 2})  # warm-up
        rows = {"x0": [], "none": []}
        for _ in range(args.rounds):
            for preview in rows:
                rows[preview].append(one(url, {**body, "preview": preview}))
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"builtin:{args.run}, {args.n} images, {args.steps} steps, {args.rounds} rounds alternated (medians)")
    print("| preview | first preview s | total s | sampler steps/s | previews/s received | previews |")
    print("|---|---|---|---|---|---|")
    for preview, rs in rows.items():
        med = {k: statistics.median([r[k] for r in rs if r[k] is not None] or [float("nan")]) for k in rs[0]}
        print(f"| {preview} | {med['first_preview_s']:.3f} | {med['total_s']:.3f} | {med['steps_per_s']:.1f} | "
              f"{med['previews_per_s']:.1f} | {med['previews']:.0f} |")
    x0 = statistics.median([r["total_s"] for r in rows["x0"]])
    none = statistics.median([r["total_s"] for r in rows["none"]])
    print(f"streaming a preview at every step costs {100 * (x0 / none - 1):+.1f}% of the request's time")


def cmd_load(args) -> None:
    from unblur.serve.loadtest import load_test

    run = ROOT / "tests" / "fixtures" / "old_runs" / "edm-classes"
    proc, url = start([str(run)], "--queue", str(args.queue), "--threads", "1")
    try:
        rows = load_test(url, {"run": "edm-classes", "steps": args.steps, "n": 1, "preview": "x0"},
                         clients=args.clients, requests=args.requests, rounds=args.rounds, pid=proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"{args.clients} clients, {args.requests} requests per round, tiny run (8x8, {args.steps} steps), "
          f"queue {args.queue}, 1 worker")
    print("| round | requests/s | p50 s | p95 s | 429s | 5xx | failed | server RSS MiB | server peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {r['requests_per_s']} | {r['p50_s']} | {r['p95_s']} | {r['429s']} | {r['5xx']} | "
              f"{r['failed']} | {r['server_rss_mib']} | {r['server_peak_mib']} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("latency")
    a.add_argument("--run", default="shapes")
    a.add_argument("--prompt", default="a red circle on a black background")
    a.add_argument("--steps", type=int, default=30)
    a.add_argument("--n", type=int, default=4)
    a.add_argument("--rounds", type=int, default=5)
    b = sub.add_parser("load")
    b.add_argument("--clients", type=int, default=40)
    b.add_argument("--requests", type=int, default=200)
    b.add_argument("--rounds", type=int, default=2)
    b.add_argument("--steps", type=int, default=4)
    b.add_argument("--queue", type=int, default=16)
    args = p.parse_args()
    {"latency": cmd_latency, "load": cmd_load}[args.cmd](args)


if __name__ == "__main__":
    main()
