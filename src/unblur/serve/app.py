"""The FastAPI application behind ``unblur serve``: a JSON API over ``Run`` and one static page.

    app = create_app({"shapes": Run.load("builtin:shapes")})

Endpoints (FastAPI's own documentation at ``/docs``):

* ``GET /api/runs``: the runs served, what each can do, its classes, samplers and defaults;
* ``POST /api/generate``, ``/api/edit``, ``/api/restore``, ``/api/variations`` (an unCLIP
  decoder: new images of an upload's image embedding): a job (202 with its id and place in
  the queue; 429 with ``Retry-After`` when the queue is full; 4xx naming the field otherwise);
* ``GET /api/jobs/{id}/events``: the job's progress as server-sent events (``queued``,
  ``started``, ``progress`` with the current x0_hat of every image as a PNG data URL, and
  ``done``, ``error`` or ``cancelled``); a client that goes away cancels its job;
* ``POST /api/jobs/{id}/cancel``; ``GET /api/jobs/{id}``;
* ``GET /api/jobs/{id}/images/{k}.png``: an output, with its settings in PNG text chunks;
* ``POST /api/png-settings``: the settings inside an uploaded PNG (the page's drop target).

Everything a request controls is bounded (``Limits``); uploads are base64 in JSON, decoded
with a pixel limit read from the header; no request names a server path, and nothing is
unpickled.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..images import decode_image, image_bytes, make_grid
from ..runs.pnginfo import read_settings, settings_of, text_chunks
from .jobs import TERMINAL, Job, JobQueue, QueueFull

STATIC = Path(__file__).resolve().parent / "static"


@dataclass
class Limits:
    """Bounds on what a request controls; each is refused with a 4xx naming it."""

    max_steps: int = 200
    max_n: int = 16
    max_upload_bytes: int = 4 * 2**20  # of one decoded upload (the base64 text is 4/3 of it)
    max_upload_pixels: int = 2048 * 2048  # read from the header, before decoding
    max_restore_side: int = 512  # a restored image's longest side (the work grows with its area)
    max_prompt_chars: int = 500
    max_body_bytes: int = 16 * 2**20
    max_guidance: float = 30.0
    preview_every: float = 0.0  # seconds between previews at least (0: every step)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SampleFields(Strict):
    run: str = Field(description="a run name from GET /api/runs")
    prompt: str | None = None
    negative_prompt: str | None = None
    class_: str | int | None = Field(None, alias="class", description="a class name or index of the run")
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = Field(0, ge=0, le=2**32 - 1)
    n: int = Field(1, ge=1)
    preview: str = Field("x0", description="x0 | xt | both | none: what the progress events show")


class GenerateRequest(SampleFields):
    prior_steps: int | None = Field(None, description="an unCLIP decoder's prior: sampler steps")
    prior_guidance: float | None = Field(None, description="an unCLIP decoder's prior: guidance scale")


class VariationsRequest(Strict):
    run: str = Field(description="an unCLIP decoder (a run trained with --clip ENCODER)")
    image: str = Field(description="the image whose variations to make: a PNG or JPEG as base64 or a data: URL")
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = Field(0, ge=0, le=2**32 - 1)
    n: int = Field(1, ge=1)
    preview: str = "x0"


class EditRequest(SampleFields):
    image: str = Field(description="the input image: a PNG or JPEG as base64 or a data: URL")
    mask: str | None = Field(None, description="white = regenerate, black = keep (PNG, base64 or data: URL)")
    strength: float = Field(0.75, ge=0.0, le=1.0)
    method: str = "replace"


class RestoreRequest(Strict):
    run: str
    image: str
    steps: int | None = None
    level: float | None = Field(None, ge=0.0, le=1.0)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    preview: str = "x0"


class PngRequest(Strict):
    image: str


def bad(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def create_app(runs: dict[str, Any], *, limits: Limits | None = None, workers: int = 1, queue: int = 8,
               token: str | None = None, keep: int = 64, priors: dict[str, Any] | None = None) -> FastAPI:
    """The application serving ``runs`` (name -> ``Run``); ``priors`` (decoder name -> prior ``Run``)
    give unCLIP decoders (runs trained with ``--clip``) their prompts."""
    from ..runs.unclip import Unclip

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
    chains = {name: Unclip(run, priors.get(name)) for name, run in runs.items()
              if (run.data.get("clip") or {}).get("role") == "decoder"}
    lim = limits or Limits()
    jobs = JobQueue(workers=workers, limit=queue, keep=keep)
    state: dict[str, Any] = {"loop": None}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["loop"] = asyncio.get_running_loop()
        yield
        jobs.close()

    app = FastAPI(title="unblur", version=__version__, lifespan=lifespan,
                  description="Diffusion models from unblur: generate, edit and restore, with live previews.")
    app.state.jobs, app.state.limits, app.state.runs, app.state.chains = jobs, lim, runs, chains

    @app.middleware("http")
    async def guard(request: Request, call_next):
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

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {e.get('msg')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    def get_run(name: str):
        if name not in runs:
            raise bad(404, f"no run named {name!r}: this server has {', '.join(sorted(runs))}")
        return runs[name]

    def check_common(req, run) -> None:
        steps = getattr(req, "steps", None)
        if steps is not None and not 1 <= steps <= lim.max_steps:
            raise bad(422, f"steps: {steps} is outside 1..{lim.max_steps}")
        n = getattr(req, "n", 1)
        if n > lim.max_n:
            raise bad(422, f"n: {n} images is more than the limit of {lim.max_n} per request")
        for field in ("prior_steps",):
            v = getattr(req, field, None)
            if v is not None and not 1 <= v <= lim.max_steps:
                raise bad(422, f"{field}: {v} is outside 1..{lim.max_steps}")
        for field in ("prompt", "negative_prompt"):
            v = getattr(req, field, None)
            if v is not None and len(v) > lim.max_prompt_chars:
                raise bad(422, f"{field}: {len(v)} characters, more than the limit of {lim.max_prompt_chars}")
        for field in ("guidance", "prior_guidance"):
            g = getattr(req, field, None)
            if g is not None and not 0.0 <= g <= lim.max_guidance:
                raise bad(422, f"{field}: {g} is outside 0..{lim.max_guidance:g}")
        if req.preview not in ("x0", "xt", "both", "none"):
            raise bad(422, f"preview: {req.preview!r} is not one of x0, xt, both, none")

    def upload(data: str, what: str):
        """A base64 image (or data: URL) decoded within the limits, as a Pillow image (L or RGB)."""
        if data.startswith("data:"):
            data = data.partition(",")[2]
        if len(data) > (lim.max_upload_bytes * 4) // 3 + 4:
            raise bad(413, f"{what}: the upload is about {len(data) * 3 // 4} bytes, more than the limit of "
                      f"{lim.max_upload_bytes} bytes")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise bad(422, f"{what}: not valid base64") from None
        try:
            return decode_image(raw, name=what, max_pixels=lim.max_upload_pixels)
        except ValueError as e:
            raise bad(422, str(e)) from None

    def contexts(req, run) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if req.class_ is not None:
            kw["classes"] = [req.class_]
        if req.prompt:
            kw["prompts"] = [req.prompt]
        if req.negative_prompt:
            kw["negative_prompt"] = req.negative_prompt
        return kw

    def submit(job: Job, status: int = 202) -> JSONResponse:
        try:
            place = jobs.submit(job, state["loop"])
        except QueueFull as e:
            return JSONResponse({"detail": str(e)}, status_code=429, headers={"Retry-After": str(e.retry_after)})
        return JSONResponse({"job": job.id, "position": place, "events": f"/api/jobs/{job.id}/events"},
                            status_code=status)

    # -- pages and descriptions -----------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/runs")
    def list_runs() -> dict[str, Any]:
        """The runs served: what each does, its conditioning, sampler defaults and the bounds."""
        return {"runs": [describe(name, run, chains.get(name)) for name, run in runs.items()], "limits": asdict(lim),
                "version": __version__}

    # -- jobs ------------------------------------------------------------------------------

    @app.post("/api/generate", status_code=202)
    def generate(req: GenerateRequest):
        """Sample ``n`` images of a run from a prompt, a class or nothing."""
        run = get_run(req.run)
        check_common(req, run)
        if req.run in chains:
            return generate_unclip(req, run, chains[req.run])
        if req.prior_steps is not None or req.prior_guidance is not None:
            raise bad(422, f"prior_steps, prior_guidance: {req.run!r} is not an unCLIP decoder and has no prior")
        try:
            stream = run.sample(req.n, guidance=req.guidance, sampler=req.sampler, steps=req.steps, seed=req.seed,
                                batch=req.n, **contexts(req, run))
        except ValueError as e:
            raise bad(422, str(e)) from None
        preview = req.preview

        def work(job: Job) -> list[dict]:
            stream.callback = previewer(job, run, preview, lim.preview_every, req.n)
            out = []
            for b in stream:
                for i in range(len(b.x)):
                    s = settings_of(run, b.records[i], kind="generate", request_seed=req.seed, n=req.n,
                                    batch=req.n, cycled=True if req.class_ is None else None)
                    out.append(result(b.x[i], s))
            return out

        return submit(Job("generate", req.run, work))

    def unclip_job(req, run, chain, kind: str, embeddings, **extra) -> JSONResponse:
        """A job decoding image embeddings (``embeddings(job) -> (z, labels)``, made in the job)."""
        try:
            plan = run.plan(req.sampler, req.steps, None)
        except ValueError as e:
            raise bad(422, str(e)) from None
        preview, n = req.preview, req.n

        def work(job: Job) -> list[dict]:
            z, labels, per = embeddings(job)
            stream = run.sample(per, embeddings=z, embedding_labels=labels, guidance=req.guidance,
                                sampler=plan.sampler, steps=plan.steps, seed=req.seed, batch=n)
            stream.callback = previewer(job, run, preview, lim.preview_every, n)
            out = []
            for b in stream:
                for i in range(len(b.x)):
                    s = settings_of(run, b.records[i], kind="unclip", request_seed=req.seed, n=n, **extra)
                    out.append(result(b.x[i], s))
            return out

        return submit(Job(kind, req.run, work))

    def generate_unclip(req: GenerateRequest, run, chain) -> JSONResponse:
        if req.negative_prompt or req.class_ is not None:
            raise bad(422, f"negative_prompt, class: {req.run!r} draws images of image embeddings; give a prompt")
        if not req.prompt:
            raise bad(422, f"prompt: {req.run!r} is an unCLIP decoder: give a prompt (or make variations of an "
                      "image with /api/variations)")
        if chain.prior is None:
            raise bad(422, f"prompt: {req.run!r} has no prior on this server (start it with --prior RUN); it can "
                      "make variations of an image")
        try:
            chain.text_embeddings([req.prompt])  # an empty or unreadable prompt fails here, before the queue
        except ValueError as e:
            raise bad(422, str(e)) from None

        def embeddings(job: Job):
            z, labels = chain.from_prompts([req.prompt], req.n, steps=req.prior_steps, guidance=req.prior_guidance,
                                           seed=req.seed, callback=lambda info: job.check())
            return z, labels, 1

        return unclip_job(req, run, chain, "generate", embeddings, prompt=req.prompt,
                          prior=chain.prior.ref, prior_steps=req.prior_steps, prior_guidance=req.prior_guidance)

    @app.post("/api/variations", status_code=202)
    def variations(req: VariationsRequest):
        """New images of an uploaded image's embedding under an unCLIP decoder's encoder."""
        run = get_run(req.run)
        check_common(req, run)
        if req.run not in chains:
            raise bad(422, f"run: {req.run!r} is not an unCLIP decoder (a run trained with --clip ENCODER); "
                      f"variations need one{': ' + ', '.join(chains) if chains else ''}")
        chain = chains[req.run]
        C, H, W = chain.clip.image_shape
        img = to_tensor(upload(req.image, "image"), C, (H, W), crop=True)

        def embeddings(job: Job):
            z, labels = chain.variations(img[None], names=["the upload"])
            return z, labels, req.n

        return unclip_job(req, run, chain, "variations", embeddings)

    @app.post("/api/edit", status_code=202)
    def edit(req: EditRequest):
        """img2img (no mask) or inpainting (a mask: white = regenerate) of an uploaded image."""
        run = get_run(req.run)
        check_common(req, run)
        C, H, W = run.image_shape
        img = to_tensor(upload(req.image, "image"), C, (H, W), crop=True)
        mask = None
        if req.mask is not None:
            m = upload(req.mask, "mask").convert("L")
            mask = torch.from_numpy(_array(m.resize((W, H), Image.Resampling.BOX))).float().div(255.0)[None, None] > 0.5
            if not bool(mask.any()):
                raise bad(422, "mask: it regenerates nothing (no white pixel): paint the region to change, or leave "
                          "the mask out for img2img of the whole picture")
        try:
            run.check_edit("inpaint" if mask is not None else "img2img")
            plan = run.plan(req.sampler, req.steps, None)
        except ValueError as e:
            raise bad(422, str(e)) from None
        preview = req.preview

        def work(job: Job) -> list[dict]:
            res = run.edit(img[None], mask, strength=req.strength, method=req.method, n=req.n,
                           guidance=req.guidance, sampler=plan.sampler, steps=plan.steps, seed=req.seed,
                           batch=req.n, callback=previewer(job, run, preview, lim.preview_every, req.n),
                           **contexts(req, run))
            out = []
            for i in range(len(res.x)):
                s = settings_of(run, res.records[i], kind="edit", strength=req.strength,
                                method=req.method if mask is not None else None, request_seed=req.seed)
                out.append(result(res.x[i], s))
            return out

        return submit(Job("edit", req.run, work))

    @app.post("/api/restore", status_code=202)
    def restore(req: RestoreRequest):
        """Restore a degraded upload with a cold-diffusion run (at the image's own size)."""
        run = get_run(req.run)
        check_common(req, run)
        img = upload(req.image, "image")
        if max(img.size) > lim.max_restore_side:
            raise bad(422, f"image: {img.width}x{img.height} is larger than {lim.max_restore_side} pixels on a side; "
                      "shrink it first")
        C = run.image_shape[0]
        x = to_tensor(img, C, None)
        try:
            run.check_restorable(x.shape, what="the upload")
        except ValueError as e:
            raise bad(422, str(e)) from None
        preview = req.preview

        def work(job: Job) -> list[dict]:
            y, level = run.restore(x[None], req.level, steps=req.steps, seed=req.seed,
                                   callback=previewer(job, run, preview, lim.preview_every, 1))
            rec = {"seed": req.seed, "steps": req.steps or run.config.sample.steps, "level": float(level[0]),
                   "sampler": run.process.restore_sampler}
            s = settings_of(run, rec, kind="restore", size=tuple(y.shape[-2:]))
            return [result(y[0].cpu(), s)]

        return submit(Job("restore", req.run, work))

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str) -> dict[str, Any]:
        return find(job_id).summary()

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> dict[str, Any]:
        find(job_id)
        job = jobs.cancel(job_id)
        return job.summary()

    @app.get("/api/jobs/{job_id}/events")
    async def events(job_id: str, request: Request):
        """The job's events as server-sent events; leaving cancels an unfinished job."""
        job = find(job_id)

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
                    jobs.cancel(job.id)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/api/jobs/{job_id}/images/{k}.png")
    def image(job_id: str, k: int):
        job = find(job_id)
        if job.state != "done":
            raise bad(409, f"job {job_id} is {job.state}: its images exist once it is done")
        if not 0 <= k < len(job.results):
            raise bad(404, f"job {job_id} made {len(job.results)} images; there is no image {k}")
        return Response(job.results[k]["png"], media_type="image/png",
                        headers={"Content-Disposition": f'inline; filename="unblur-{job_id}-{k}.png"'})

    @app.post("/api/png-settings")
    def png_settings(req: PngRequest) -> dict[str, Any]:
        """The settings carried by a PNG that unblur wrote (for the page's drop target)."""
        data = req.image.partition(",")[2] if req.image.startswith("data:") else req.image
        if len(data) > (lim.max_upload_bytes * 4) // 3 + 4:
            raise bad(413, f"image: more than the limit of {lim.max_upload_bytes} bytes")
        try:
            raw = base64.b64decode(data, validate=True)
            s = read_settings(raw, name="the dropped file")
        except (binascii.Error, ValueError) as e:
            raise bad(422, str(e) if isinstance(e, ValueError) and str(e) else "image: not valid base64") from None
        match = [name for name, r in runs.items() if r.weights_sha256 == s.get("model_hash")]
        return {"settings": s, "run": match[0] if match else None}

    def find(job_id: str) -> Job:
        job = jobs.get(job_id)
        if job is None:
            raise bad(404, f"no job {job_id!r} (finished jobs are kept for the last {keep} only)")
        return job

    return app


def result(x: torch.Tensor, settings: dict) -> dict:
    """One output of a job: the PNG (carrying its settings) and the settings."""
    return {"png": image_bytes(x, "PNG", text_chunks(settings)), "settings": settings}


def with_urls(job: Job, ev: dict) -> dict:
    if ev["type"] != "done":
        return ev
    return {**ev, "job": job.id, "results": [{"url": f"/api/jobs/{job.id}/images/{k}.png", "settings": r["settings"]}
                                             for k, r in enumerate(job.results)]}


def describe(name: str, run, chain=None) -> dict[str, Any]:
    """What the page needs to know about a run (``chain``: an unCLIP decoder's ``Unclip``)."""
    cfg = run.config
    restorer = bool(getattr(run.process, "restores", False))
    text = run.data.text_dim is not None
    classes = list(run.data.class_names or []) if run.config.cond.classes else []  # class-conditioned runs only
    can = ["generate", "img2img", "restore"] if restorer else ["generate", "img2img", "inpaint"]
    if restorer and run.process.kind == "mask":
        can.append("inpaint")
    unclip = None
    if chain is not None:  # prompts through its prior, and variations of an upload
        text = chain.prior is not None
        can = (["generate"] if text else []) + ["variations"]
        unclip = {"prior": chain.prior.ref if chain.prior is not None else None,
                  "prior_steps": chain.prior.config.sample.steps if chain.prior is not None else None,
                  "prior_guidance": chain.prior.config.cond.guidance if chain.prior is not None else None}
    from ..sampling import SAMPLERS

    samplers = ["cold", "cold-naive"] if restorer else [s for s in SAMPLERS if not s.startswith("cold")]
    C, H, W = run.image_shape
    return {"name": name, "ref": run.ref, "process": run.process.kind, "restorer": restorer, "can": can,
            "classes": classes, "text": text, "channels": C, "size": [H, W], "samplers": samplers,
            "sampler": cfg.sample.sampler if not restorer else run.process.restore_sampler,
            "steps": cfg.sample.steps, "guidance": cfg.cond.guidance if (text or classes or unclip) else 1.0,
            "model_hash": run.weights_sha256, "latent": bool(run.latent), "unclip": unclip}


def to_tensor(img, channels: int, size: tuple[int, int] | None, *, crop: bool = False) -> torch.Tensor:
    """A Pillow image as (C, H, W) in [-1, 1], in the run's channels, cover-cropped to ``size``."""
    from ..images import cover_crop

    img = img.convert("L" if channels == 1 else "RGB")
    if size is not None:
        img = cover_crop(img, size) if crop else img.resize((size[1], size[0]))
    a = torch.from_numpy(_array(img)).float() / 127.5 - 1.0
    return a[None] if a.ndim == 2 else a.permute(2, 0, 1).contiguous()


def _array(img):
    import numpy as np

    return np.array(img, dtype=np.uint8)


def previewer(job: Job, run, what: str, every: float, n: int):
    """The step callback of a job: stop when cancelled; else send the current x0_hat (and/or
    x_t) of every image, decoded for a latent run, as one PNG grid in a progress event."""
    last = [0.0]

    def callback(info) -> None:
        job.check()
        now = time.time()
        final = info.step + 1 >= info.total
        if what == "none" or (every > 0 and now - last[0] < every and not final):
            job.replace_progress({"type": "progress", "step": info.step + 1, "total": info.total})
            return
        last[0] = now
        ev: dict[str, Any] = {"type": "progress", "step": info.step + 1, "total": info.total,
                              "sigma": float(info.sigma_next)}
        if what in ("x0", "both"):
            ev["x0"] = grid_url(run, info.x0_hat, n)
        if what in ("xt", "both") and run.latent is None:
            ev["xt"] = grid_url(run, info.x, n, noisy=True)
        job.replace_progress(ev)

    return callback


def grid_url(run, x: torch.Tensor, n: int, *, noisy: bool = False) -> str:
    """A batch as one PNG grid (a row) in a data: URL; x_t is scaled into view by its noise."""
    with torch.no_grad():
        x = run.decode(x.detach()) if not noisy else x.detach()
    x = x.float().cpu()
    if noisy:
        x = x / x.flatten(1).abs().amax(1).clamp_min(1.0).view(-1, *[1] * (x.ndim - 1))
    img = make_grid(x, nrow=min(len(x), max(1, n)), pad=1)
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
