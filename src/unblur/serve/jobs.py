"""Jobs for the web server: a bounded queue served by a fixed number of worker threads.

A ``Job`` holds the work (a function of the job, run on a worker), the events it has sent so
far (queued, progress with previews, done, error, cancelled) and its results. Listeners (the
server-sent-event streams) wait on an asyncio event set from the worker thread through the
event loop, so no thread is parked per listener. ``cancel()`` marks a job: a queued one never
starts, and a running one stops at its next sampler step (the step callback raises
``Cancelled``).

The queue is bounded: ``submit`` refuses with ``QueueFull`` (the server's 429) when ``limit``
jobs are already waiting, with an estimate of the seconds until a place frees up from the
recent jobs' durations. Finished jobs are kept (their images, for download) up to ``keep``,
oldest dropped first, so memory stays flat however many requests come.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Cancelled(Exception):
    """Raised inside a job's work when the job was cancelled."""


class QueueFull(Exception):
    def __init__(self, retry_after: int, waiting: int):
        super().__init__(f"the queue is full ({waiting} jobs waiting): try again in about {retry_after} s")
        self.retry_after, self.waiting = retry_after, waiting


TERMINAL = ("done", "error", "cancelled")


@dataclass
class Job:
    kind: str  # generate | edit | restore | variations
    run: str
    work: Callable[[Job], list[dict]]  # returns one dict per image: png bytes and settings
    id: str = field(default_factory=lambda: secrets.token_urlsafe(9))
    state: str = "queued"  # queued | running | done | error | cancelled
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    log: list[tuple[int, dict]] = field(default_factory=list)  # (sequence number, event)
    seq: int = 0  # the last event's sequence number
    results: list[dict] = field(default_factory=list)
    cancel_requested: bool = False
    _loop: asyncio.AbstractEventLoop | None = None
    _waiters: list[asyncio.Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def events(self) -> list[dict]:
        """The events kept: all but the progress events a later one replaced."""
        with self._lock:
            return [e for _, e in self.log]

    def since(self, seen: int) -> list[tuple[int, dict]]:
        """The kept events after sequence number ``seen``."""
        with self._lock:
            return [(k, e) for k, e in self.log if k > seen]

    def emit(self, event: dict) -> None:
        """Append an event (from any thread) and wake the listeners."""
        with self._lock:
            self.seq += 1
            self.log.append((self.seq, event))
            waiters, self._waiters = self._waiters, []
        loop = self._loop
        if loop is not None and waiters:
            for w in waiters:
                try:
                    loop.call_soon_threadsafe(w.set)
                except RuntimeError:  # the loop is closed: nobody listens any more
                    pass

    def replace_progress(self, event: dict) -> None:
        """A progress event that supersedes the last one: only the latest progress is kept (a
        listener slower than the sampler skips to the current picture, and a late one needs
        only that), so a job's memory does not grow with its steps."""
        with self._lock:
            if self.log and self.log[-1][1].get("type") == "progress":
                self.log.pop()
        self.emit(event)

    async def wait_after(self, seen: int, timeout: float) -> None:
        """Wait until an event after sequence number ``seen`` exists (or ``timeout`` seconds)."""
        ev = asyncio.Event()
        with self._lock:
            if self.seq > seen:
                return
            self._waiters.append(ev)
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def check(self) -> None:
        """Raise ``Cancelled`` if the job was cancelled (called at every sampler step)."""
        if self.cancel_requested:
            raise Cancelled

    @property
    def finished_state(self) -> bool:
        return self.state in TERMINAL

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "run": self.run, "state": self.state,
                "images": len(self.results),
                "seconds": None if self.started is None else round((self.finished or time.time()) - self.started, 3)}


class JobQueue:
    """A bounded FIFO of jobs served by ``workers`` threads (see the module docstring)."""

    def __init__(self, *, workers: int = 1, limit: int = 8, keep: int = 64):
        if workers < 1 or limit < 1:
            raise ValueError(f"workers and the queue limit must be at least 1, got {workers} and {limit}")
        self.limit, self.keep = limit, keep
        self.jobs: dict[str, Job] = {}
        self.waiting: collections.deque[Job] = collections.deque()
        self.done_order: collections.deque[str] = collections.deque()
        self.durations: collections.deque[float] = collections.deque(maxlen=20)
        self.cond = threading.Condition()
        self.running = 0
        self.closed = False
        self.counter = itertools.count()
        self.threads = [threading.Thread(target=self._serve, name=f"unblur-worker-{i}", daemon=True)
                        for i in range(workers)]
        for t in self.threads:
            t.start()

    def submit(self, job: Job, loop: asyncio.AbstractEventLoop | None = None) -> int:
        """Queue ``job``; its place in the queue (0 = next). ``QueueFull`` when ``limit`` wait."""
        job._loop = loop
        with self.cond:
            if len(self.waiting) >= self.limit:
                raise QueueFull(self.retry_after(), len(self.waiting))
            self.jobs[job.id] = job
            self.waiting.append(job)
            place = len(self.waiting) - 1
            self.cond.notify()
        job.emit({"type": "queued", "position": place})
        return place

    def retry_after(self) -> int:
        """Seconds until a place in the queue is likely free: the mean recent job time times the
        jobs ahead, over the workers (at least 1)."""
        mean = sum(self.durations) / len(self.durations) if self.durations else 2.0
        ahead = len(self.waiting) - self.limit + 1 + self.running
        return max(1, math.ceil(mean * max(1, ahead) / len(self.threads)))

    def get(self, job_id: str) -> Job | None:
        with self.cond:
            return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        with self.cond:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            job.cancel_requested = True
            if job in self.waiting:  # never started: finished now
                self.waiting.remove(job)
                self._finish(job, "cancelled", {"type": "cancelled"})
        return job

    def _finish(self, job: Job, state: str, event: dict) -> None:
        job.state, job.finished = state, time.time()
        job.emit(event)
        self.done_order.append(job.id)
        while len(self.done_order) > self.keep:
            self.jobs.pop(self.done_order.popleft(), None)

    def _serve(self) -> None:
        while True:
            with self.cond:
                while not self.waiting and not self.closed:
                    self.cond.wait()
                if self.closed:
                    return
                job = self.waiting.popleft()
                self.running += 1
                job.state, job.started = "running", time.time()
            job.emit({"type": "started"})
            try:
                results = job.work(job)
                job.results = results
                state, event = "done", {"type": "done", "images": len(results)}
            except Cancelled:
                state, event = "cancelled", {"type": "cancelled"}
            except ValueError as e:  # a request the run refuses: the user's to fix
                state, event = "error", {"type": "error", "message": str(e)}
            except Exception as e:  # noqa: BLE001 - reported to the client, the worker lives on
                state, event = "error", {"type": "error", "message": f"{type(e).__name__}: {e}"}
            with self.cond:
                self.running -= 1
                self.durations.append(time.time() - job.started)
                self._finish(job, state, event)

    def stats(self) -> dict[str, Any]:
        with self.cond:
            return {"waiting": len(self.waiting), "running": self.running, "limit": self.limit,
                    "workers": len(self.threads), "kept": len(self.jobs)}

    def close(self) -> None:
        with self.cond:
            self.closed = True
            for job in list(self.waiting):
                job.cancel_requested = True
                self._finish(job, "cancelled", {"type": "cancelled"})
            self.waiting.clear()
            self.cond.notify_all()
