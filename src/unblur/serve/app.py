"""The FastAPI application behind ``unblur serve``: a JSON API over ``Run`` and one static page.

    app = create_app({"shapes": Run.load("builtin:shapes")})

Endpoints (FastAPI's own documentation at ``/docs``; the handlers are in ``serve.routes``):

* ``GET /api/runs``: the runs served, what each can do, its classes, samplers and defaults
  (``serve.describe``);
* ``POST /api/generate``, ``/api/edit``, ``/api/restore``, ``/api/variations`` (an unCLIP
  decoder: new images of an upload's image embedding): a job (202 with its id and place in
  the queue; 429 with ``Retry-After`` when the queue is full; 4xx naming the field otherwise);
* ``GET /api/jobs/{id}/events``: the job's progress as server-sent events (``queued``,
  ``started``, ``progress`` with the current x0_hat of every image as a PNG data URL, and
  ``done``, ``error`` or ``cancelled``); a client that goes away cancels its job;
* ``POST /api/jobs/{id}/cancel``; ``GET /api/jobs/{id}``;
* ``GET /api/jobs/{id}/images/{k}.png``: an output, with its settings in PNG text chunks;
* ``POST /api/png-settings``: the settings inside an uploaded PNG (the page's drop target).

Everything a request controls is bounded (``serve.schemas.Limits``); uploads are base64 in JSON,
read by ``images.read_upload`` with a pixel limit checked on the header; no request names a
server path, and nothing is unpickled.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from .jobs import JobQueue
from .routes import ROUTERS, STATIC
from .schemas import Limits


def create_app(runs: dict[str, Any], *, limits: Limits | None = None, workers: int = 1, queue: int = 8,
               token: str | None = None, keep: int = 64, priors: dict[str, Any] | None = None) -> FastAPI:
    """The application serving ``runs`` (name -> ``Run``); ``priors`` (decoder name -> prior ``Run``)
    give unCLIP decoders (runs trained with ``--clip``) their prompts."""
    from ..runs.unclip import Unclip, is_decoder

    if not runs:
        raise ValueError("give at least one run to serve")
    for name, run in runs.items():
        if not run.is_image:
            raise ValueError(f"run {run.name} ({name!r}) makes {run.data.kind}s of shape {tuple(run.data.shape)}: "
                             "the page serves image runs; sample it with unblur sample")
    priors = dict(priors or {})
    for name in priors:
        if name not in runs:
            raise ValueError(f"a prior is given for {name!r}, which is not a served run ({', '.join(runs)})")
    lim = limits or Limits()
    jobs = JobQueue(workers=workers, limit=queue, keep=keep)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.loop = asyncio.get_running_loop()
        yield
        jobs.close()

    app = FastAPI(title="unblur", version=__version__, lifespan=lifespan,
                  description="Diffusion models from unblur: generate, edit and restore, with live previews.")
    app.state.runs, app.state.jobs, app.state.limits, app.state.keep, app.state.loop = runs, jobs, lim, keep, None
    app.state.chains = {name: Unclip(run, priors.get(name)) for name, run in runs.items() if is_decoder(run)}
    app.middleware("http")(guard(lim, token))
    app.exception_handler(RequestValidationError)(invalid)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def guard(lim: Limits, token: str | None):
    """The middleware: a body over ``max_body_bytes`` is a 413 before it is read, and with a
    ``token`` every call but the page and its static files must carry it."""

    async def middleware(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > lim.max_body_bytes):
            return JSONResponse({"detail": f"the request body is {length} bytes, more than the limit of "
                                 f"{lim.max_body_bytes} bytes"}, status_code=413)
        if token is not None and request.url.path not in ("/", "/favicon.ico") and \
                not request.url.path.startswith("/static/"):
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or \
                request.query_params.get("token")
            if given != token:
                return JSONResponse({"detail": "this server needs its token: send 'Authorization: Bearer TOKEN' "
                                     "or ?token=TOKEN"}, status_code=401)
        return await call_next(request)

    return middleware


async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A request FastAPI could not parse: one 422 naming each field and what was wrong."""
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg')}")
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)
