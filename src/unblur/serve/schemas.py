"""What a request to ``unblur serve`` may hold: the pydantic models of the JSON bodies (unknown
fields are refused) and the bounds on what a request controls (``Limits``, checked by
``check_limits`` with a 4xx that names the field)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

PREVIEWS = ("x0", "xt", "both", "none")  # what a job's progress events show


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
    prior_sampler: str | None = Field(None, description="an unCLIP decoder's prior: its sampler")
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
    """The HTTP error of a refused request; ``message`` names the field and what to do."""
    return HTTPException(status_code=status, detail=message)


def check_limits(req: BaseModel, lim: Limits) -> None:
    """Refuse (422) a request whose steps, image count, prompts, guidance or preview exceed ``lim``."""
    for field in ("steps", "prior_steps"):
        v = getattr(req, field, None)
        if v is not None and not 1 <= v <= lim.max_steps:
            raise bad(422, f"{field}: {v} is outside 1..{lim.max_steps}")
    n = getattr(req, "n", 1)
    if n > lim.max_n:
        raise bad(422, f"n: {n} images is more than the limit of {lim.max_n} per request")
    for field in ("prompt", "negative_prompt"):
        v = getattr(req, field, None)
        if v is not None and len(v) > lim.max_prompt_chars:
            raise bad(422, f"{field}: {len(v)} characters, more than the limit of {lim.max_prompt_chars}")
    for field in ("guidance", "prior_guidance"):
        g = getattr(req, field, None)
        if g is not None and not 0.0 <= g <= lim.max_guidance:
            raise bad(422, f"{field}: {g} is outside 0..{lim.max_guidance:g}")
    preview = getattr(req, "preview", "x0")
    if preview not in PREVIEWS:
        raise bad(422, f"preview: {preview!r} is not one of {', '.join(PREVIEWS)}")
