"""The endpoints of ``unblur serve`` as routers; every handler reaches the server's state through
``request.app.state`` (``runs``, ``chains``, ``jobs``, ``limits``, ``keep``, ``loop``), set by
``serve.app.create_app``.

* ``pages``: the page itself, ``GET /api/runs`` and ``POST /api/png-settings``;
* ``work``: ``POST /api/generate``, ``/api/variations``, ``/api/edit``, ``/api/restore``. A
  handler checks the request (``schemas.check_limits``, then the run's own checks: ``Run.sample``,
  ``Unclip.sample``, ``Run.plan``, ``Run.check_edit``, ``Run.check_restorable``) and submits a
  ``Job`` whose work iterates the checked stream, so a bad request is a 4xx and never queues;
* ``jobs``: a job's state, its cancellation, its server-sent events and its images.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from PIL import Image

from .. import __version__
from ..images import UploadTooLarge, image_tensor, read_upload, upload_bytes
from ..runs.pnginfo import read_settings, settings_of
from ..runs.unclip import chain_fields
from .describe import describe
from .jobs import TERMINAL, Job, QueueFull
from .previews import previewer, result
from .schemas import (
    EditRequest,
    GenerateRequest,
    Limits,
    PngRequest,
    RestoreRequest,
    VariationsRequest,
    bad,
    check_limits,
)

STATIC = Path(__file__).resolve().parent / "static"

pages = APIRouter()
work = APIRouter(prefix="/api")
jobs = APIRouter(prefix="/api/jobs")


# -- the server's state -----------------------------------------------------------------------


def limits_of(request: Request) -> Limits:
    return request.app.state.limits


def get_run(request: Request, name: str):
    runs = request.app.state.runs
    if name not in runs:
        raise bad(404, f"no run named {name!r}: this server has {', '.join(sorted(runs))}")
    return runs[name]


def find_job(request: Request, job_id: str) -> Job:
    job = request.app.state.jobs.get(job_id)
    if job is None:
        raise bad(404, f"no job {job_id!r} (finished jobs are kept for the last {request.app.state.keep} only)")
    return job


def submit(request: Request, job: Job) -> JSONResponse:
    """Queue ``job``: 202 with its id and place, or 429 with ``Retry-After`` when the queue is full."""
    try:
        place = request.app.state.jobs.submit(job, request.app.state.loop)
    except QueueFull as e:
        return JSONResponse({"detail": str(e)}, status_code=429, headers={"Retry-After": str(e.retry_after)})
    return JSONResponse({"job": job.id, "position": place, "events": f"/api/jobs/{job.id}/events"}, status_code=202)


def upload(request: Request, data: str, what: str) -> Image.Image:
    """An uploaded image (base64 or a data: URL) within the limits, read by ``images.read_upload``
    (the reader of every image file: one pixel limit, checked on the header)."""
    lim = limits_of(request)
    try:
        return read_upload(data, name=what, max_bytes=lim.max_upload_bytes, max_pixels=lim.max_upload_pixels)
    except UploadTooLarge as e:
        raise bad(413, str(e)) from None
    except ValueError as e:
        raise bad(422, str(e)) from None


def upload_mask(request: Request, data: str, size: tuple[int, int]) -> torch.Tensor:
    """The page's painted mask (white = regenerate) at ``size`` (H, W): (1, 1, H, W) bool, each
    pixel regenerated when more than half of the area it covers is white."""
    H, W = size
    m = upload(request, data, "mask").convert("L").resize((W, H), Image.Resampling.BOX)
    mask = torch.from_numpy(np.asarray(m, dtype=np.float32) / 255.0)[None, None] > 0.5
    if not bool(mask.any()):
        raise bad(422, "mask: it regenerates nothing (no white pixel): paint the region to change, or leave the mask "
                  "out for img2img of the whole picture")
    return mask


def contexts(req) -> dict[str, Any]:
    """The ``Run.sample`` / ``Run.edit`` contexts of a request: its class, prompt and negative prompt."""
    kw: dict[str, Any] = {}
    if req.class_ is not None:
        kw["classes"] = [req.class_]
    if req.prompt:
        kw["prompts"] = [req.prompt]
    if req.negative_prompt:
        kw["negative_prompt"] = req.negative_prompt
    return kw


# -- pages and descriptions ---------------------------------------------------------------------


@pages.get("/", include_in_schema=False)
def index():
    return FileResponse(STATIC / "index.html", media_type="text/html")


@pages.get("/api/runs")
def list_runs(request: Request) -> dict[str, Any]:
    """The runs served: what each does, its conditioning, sampler defaults and the bounds."""
    st = request.app.state
    return {"runs": [describe(name, run, st.chains.get(name)) for name, run in st.runs.items()],
            "limits": asdict(st.limits), "version": __version__}


@pages.post("/api/png-settings")
def png_settings(body: PngRequest, request: Request) -> dict[str, Any]:
    """The settings carried by a PNG that unblur wrote (for the page's drop target)."""
    try:
        raw = upload_bytes(body.image, name="image", max_bytes=limits_of(request).max_upload_bytes)
    except UploadTooLarge as e:
        raise bad(413, str(e)) from None
    except ValueError as e:
        raise bad(422, str(e)) from None
    try:
        s = read_settings(raw, name="the dropped file")
    except ValueError as e:
        raise bad(422, str(e)) from None
    match = [name for name, r in request.app.state.runs.items() if r.weights_sha256 == s.get("model_hash")]
    return {"settings": s, "run": match[0] if match else None}


# -- work -----------------------------------------------------------------------------------------


@work.post("/generate", status_code=202)
def generate(body: GenerateRequest, request: Request):
    """Sample ``n`` images of a run from a prompt, a class or nothing (an unCLIP decoder: a prompt
    through its prior)."""
    run = get_run(request, body.run)
    lim = limits_of(request)
    check_limits(body, lim)
    chain = request.app.state.chains.get(body.run)
    if chain is not None:
        return generate_unclip(body, request, run, chain)
    if body.prior_sampler is not None or body.prior_steps is not None or body.prior_guidance is not None:
        raise bad(422, f"prior_sampler, prior_steps, prior_guidance: {body.run!r} is not an unCLIP decoder and has no "
                  "prior")
    try:
        stream = run.sample(body.n, guidance=body.guidance, sampler=body.sampler, steps=body.steps, seed=body.seed,
                            batch=body.n, **contexts(body))
    except ValueError as e:
        raise bad(422, str(e)) from None

    def make(job: Job) -> list[dict]:
        stream.callback = previewer(job, run, body.preview, lim.preview_every, body.n)
        out = []
        for b in stream:
            for i in range(len(b.x)):
                s = settings_of(run, b.records[i], kind="generate", request_seed=body.seed, n=body.n,
                                batch=body.n, cycled=True if body.class_ is None else None)
                out.append(result(b.x[i], s))
        return out

    return submit(request, Job("generate", body.run, make))


def generate_unclip(body: GenerateRequest, request: Request, run, chain) -> JSONResponse:
    if body.negative_prompt or body.class_ is not None:
        raise bad(422, f"negative_prompt, class: {body.run!r} draws images of image embeddings; give a prompt")
    if not body.prompt:
        raise bad(422, f"prompt: {body.run!r} is an unCLIP decoder: give a prompt (or make variations of an image "
                  "with /api/variations)")
    if chain.prior is None:
        raise bad(422, f"prompt: {body.run!r} has no prior on this server (start it with --prior RUN); it can make "
                  "variations of an image")
    return submit_unclip(body, request, run, chain, "generate", prompts=[body.prompt],
                         prior_sampler=body.prior_sampler, prior_steps=body.prior_steps,
                         prior_guidance=body.prior_guidance)


@work.post("/variations", status_code=202)
def variations(body: VariationsRequest, request: Request):
    """New images of an uploaded image's embedding under an unCLIP decoder's encoder."""
    run = get_run(request, body.run)
    check_limits(body, limits_of(request))
    chains = request.app.state.chains
    if body.run not in chains:
        raise bad(422, f"run: {body.run!r} is not an unCLIP decoder (a run trained with --clip ENCODER); variations "
                  f"need one{': ' + ', '.join(chains) if chains else ''}")
    chain = chains[body.run]
    C, H, W = chain.clip.image_shape
    x = image_tensor(upload(request, body.image, "image"), channels=C, size=(H, W), crop=True)
    return submit_unclip(body, request, run, chain, "variations", variations_of=x[None], names=["the upload"])


def submit_unclip(body, request: Request, run, chain, kind: str, **asked: Any) -> JSONResponse:
    """A job of the unCLIP chain (``Unclip.sample``, checked here) for the request ``body``."""
    lim = limits_of(request)
    n = body.n
    try:
        stream = chain.sample(n, sampler=body.sampler, steps=body.steps, guidance=body.guidance, seed=body.seed,
                              batch=n, **asked)
    except ValueError as e:
        raise bad(422, str(e)) from None

    def make(job: Job) -> list[dict]:
        stream.prior_callback = lambda info: job.check()  # a cancelled job stops in the prior too
        stream.callback = previewer(job, run, body.preview, lim.preview_every, n)
        out = []
        for b in stream:
            for i, r in enumerate(b.records):
                s = settings_of(run, r, kind="unclip", request_seed=body.seed, n=n, **chain_fields(r))
                out.append(result(b.x[i], s))
        return out

    return submit(request, Job(kind, body.run, make))


@work.post("/edit", status_code=202)
def edit(body: EditRequest, request: Request):
    """img2img (no mask) or inpainting (a mask: white = regenerate) of an uploaded image."""
    run = get_run(request, body.run)
    lim = limits_of(request)
    check_limits(body, lim)
    C, H, W = run.image_shape
    x = image_tensor(upload(request, body.image, "image"), channels=C, size=(H, W), crop=True)
    mask = upload_mask(request, body.mask, (H, W)) if body.mask is not None else None
    try:
        run.check_edit("inpaint" if mask is not None else "img2img")
        plan = run.plan(body.sampler, body.steps, None)
    except ValueError as e:
        raise bad(422, str(e)) from None

    def make(job: Job) -> list[dict]:
        res = run.edit(x[None], mask, strength=body.strength, method=body.method, n=body.n, guidance=body.guidance,
                       sampler=plan.sampler, steps=plan.steps, seed=body.seed, batch=body.n,
                       callback=previewer(job, run, body.preview, lim.preview_every, body.n), **contexts(body))
        out = []
        for i in range(len(res.x)):
            s = settings_of(run, res.records[i], kind="edit", strength=body.strength,
                            method=body.method if mask is not None else None, request_seed=body.seed)
            out.append(result(res.x[i], s))
        return out

    return submit(request, Job("edit", body.run, make))


@work.post("/restore", status_code=202)
def restore(body: RestoreRequest, request: Request):
    """Restore a degraded upload with a cold-diffusion run (at the image's own size)."""
    run = get_run(request, body.run)
    lim = limits_of(request)
    check_limits(body, lim)
    img = upload(request, body.image, "image")
    if max(img.size) > lim.max_restore_side:
        raise bad(422, f"image: {img.width}x{img.height} is larger than {lim.max_restore_side} pixels on a side; "
                  "shrink it first")
    x = image_tensor(img, channels=run.image_shape[0])
    try:
        run.check_restorable(x.shape, what="the upload")
    except ValueError as e:
        raise bad(422, str(e)) from None

    def make(job: Job) -> list[dict]:
        y, level = run.restore(x[None], body.level, steps=body.steps, seed=body.seed,
                               callback=previewer(job, run, body.preview, lim.preview_every, 1))
        rec = {"seed": body.seed, "steps": body.steps or run.config.sample.steps, "level": float(level[0]),
               "sampler": run.process.restore_sampler}
        return [result(y[0].cpu(), settings_of(run, rec, kind="restore", size=tuple(y.shape[-2:])))]

    return submit(request, Job("restore", body.run, make))


# -- jobs -----------------------------------------------------------------------------------------


@jobs.get("/{job_id}")
def job_status(job_id: str, request: Request) -> dict[str, Any]:
    return find_job(request, job_id).summary()


@jobs.post("/{job_id}/cancel")
def cancel(job_id: str, request: Request) -> dict[str, Any]:
    find_job(request, job_id)
    return request.app.state.jobs.cancel(job_id).summary()


@jobs.get("/{job_id}/events")
async def events(job_id: str, request: Request):
    """The job's events as server-sent events; leaving cancels an unfinished job."""
    job = find_job(request, job_id)
    queue = request.app.state.jobs

    async def stream():
        seen = 0
        try:
            while True:
                if await request.is_disconnected():
                    break
                for k, ev in job.since(seen):
                    seen = k
                    yield f"event: {ev['type']}\ndata: {json.dumps(with_urls(job, ev))}\n\n"
                    if ev["type"] in TERMINAL:  # the job's state is set before its last event
                        return
                await job.wait_after(seen, 1.0)
        finally:
            if not job.finished_state:  # the client left (or the stream broke): stop the work
                queue.cancel(job.id)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@jobs.get("/{job_id}/images/{k}.png")
def image(job_id: str, k: int, request: Request):
    job = find_job(request, job_id)
    if job.state != "done":
        raise bad(409, f"job {job_id} is {job.state}: its images exist once it is done")
    if not 0 <= k < len(job.results):
        raise bad(404, f"job {job_id} made {len(job.results)} images; there is no image {k}")
    return Response(job.results[k]["png"], media_type="image/png",
                    headers={"Content-Disposition": f'inline; filename="unblur-{job_id}-{k}.png"'})


def with_urls(job: Job, ev: dict) -> dict:
    """A ``done`` event with each output's URL and settings."""
    if ev["type"] != "done":
        return ev
    return {**ev, "job": job.id, "results": [{"url": f"/api/jobs/{job.id}/images/{k}.png", "settings": r["settings"]}
                                             for k, r in enumerate(job.results)]}


ROUTERS = (pages, work, jobs)
