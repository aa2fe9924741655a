"""A bounded load test of a real `unblur serve` process on loopback: 40 concurrent clients, 200
requests per round of a tiny model, two identical rounds. No 5xx, no failed job, every request
served (429s retried), and the server's peak memory flat across the second round."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is part of the dev install")
pytest.importorskip("httpx", reason="httpx is part of the dev install")

from unblur.serve.loadtest import load_test  # noqa: E402

OLD = Path(__file__).parent / "fixtures" / "old_runs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_forty_clients_two_rounds(tmp_path):
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "unblur", "serve", str(OLD / "edm-classes"), "--port", str(port),
                             "--device", "cpu", "--queue", "16", "--threads", "1"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/api/runs", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.2)
        rows = load_test(url, {"run": "edm-classes", "steps": 4, "n": 1, "preview": "x0"}, clients=40, requests=200,
                         rounds=2, pid=proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    for row in rows:
        print(row)
    for row in rows:
        assert row["requests"] == 200 and row["5xx"] == 0 and row["failed"] == 0, row
    assert rows[0]["429s"] > 0  # 40 clients against a queue of 16: some are turned away, and come back
    first, second = rows[0]["server_peak_mib"], rows[1]["server_peak_mib"]
    assert second <= first * 1.05 + 8, f"the server's peak memory grew from {first} to {second} MiB"
