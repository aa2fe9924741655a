"""Editing with a trained run (``Run.edit``, ``outpaint``, ``invert``, ``interpolate``, ...): the
request checked against the run's process, the guided denoiser built once, the image sized and
tiled, and ``unblur.editing`` doing the work. One record per output, as ``Run.sample`` gives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..editing import METHODS as METHODS  # named here for the front ends' requests: masks, canvases, methods
from ..editing import (
    any_size,
    blend_denoisers,
    check_mask,
    check_strength,
    cold_inpaint,
    edit,
    extend_canvas,
    interpolate_states,
    invert,
    reconstruct,
    strength_grid,
    tiled,
)
from ..editing import box_mask as box_mask
from ..editing import parse_box as parse_box
from ..editing import parse_extend as parse_extend
from ..editing import read_mask as read_mask
from ..processes import DEGRADATIONS, gaussian_processes
from ..types import Callback, Denoiser
from ..utils import seeded_generators
from .build import downsampling

# What each edit needs of a run's process: a noise process (``restores`` False: levels are noise
# levels) does every edit; a restorer does img2img (degrade, then restore) and, where its process
# ``inpaints`` (mask), inpainting and outpainting.
GAUSSIAN_ONLY = ("repaint", "invert", "interpolate")


@dataclass
class EditResult:
    """The outputs of one edit request: ``x`` (N, *shape) float32 on the CPU in the data scale, and
    one record per output (which input, seed, method, strength, sampler, steps and context)."""

    x: Tensor
    records: list[dict]


@dataclass
class Inversion:
    """Inverted images: ``noise`` the states at ``level`` (the top of the walked grid), and
    ``reconstruction`` the deterministic walk back down from them."""

    noise: Tensor
    reconstruction: Tensor
    level: float
    records: list[dict]


class Editing:
    """The editing methods of ``Run`` (a mixin: ``self`` is a ``Run``)."""

    def check_edit(self, what: str) -> None:
        """Refuse an edit the run's process cannot do, in words that say which run can."""
        process = self.process
        if not process.restores:  # a noise process: every edit
            return
        kind = process.kind
        gaussian = ", ".join(gaussian_processes())
        masking = " or ".join(name for name, cls in DEGRADATIONS.items() if cls.inpaints)
        if what in GAUSSIAN_ONLY:
            raise ValueError(f"{what} needs a Gaussian run ({gaussian}); {self.name} is a cold {kind} run, which "
                             f"only restores: use img2img (--strength), or inpaint with a {masking} run")
        if what in ("inpaint", "outpaint") and not process.inpaints:
            raise ValueError(f"{what}ing needs a Gaussian run or a cold {masking} run; {self.name} is a cold {kind} "
                             f"run: its restorer only undoes {kind}")

    def _check_images(self, images: Tensor) -> Tensor:
        shape = tuple(self.image_shape)
        if images.ndim != len(shape) + 1 or images.shape[1] != shape[0]:
            raise ValueError(f"{self.name} edits data of shape {shape}; got a batch of shape {tuple(images.shape)}")
        if not self.is_image and tuple(images.shape[1:]) != shape:
            raise ValueError(f"{self.name} edits vectors of shape {shape}; got {tuple(images.shape[1:])}")
        if not bool(torch.isfinite(images).all()):
            raise ValueError("the images to edit hold NaN or infinite values")
        if self.latent is not None and (images.shape[-2] % self.latent.factor or images.shape[-1] % self.latent.factor):
            f = self.latent.factor
            raise ValueError(f"{self.name} works in latents of an autoencoder that downsamples by {f}: the image's "
                             f"sides must be multiples of {f}, got {images.shape[-1]}x{images.shape[-2]}")
        return images.to(self.device, torch.float32)

    def _canvas(self, den: Denoiser, size: tuple[int, ...]) -> Denoiser:
        """``den`` for a canvas of ``size`` (H, W): padded to the network's multiple, and in
        overlapping tiles of the run's own size where the canvas is larger (MultiDiffusion)."""
        if not self.is_image:
            return den
        den = any_size(den, downsampling(self.net))
        own = tuple(self.data.shape[-2:])
        if size[0] > own[0] or size[1] > own[1]:
            if self.config.cond.image != "none":
                raise ValueError(f"{self.name} is conditioned on an image of its own size, so it cannot work on a "
                                 f"{size[1]}x{size[0]} canvas in tiles")
            den = tiled(den, own)
        return den

    def edit(self, images: Tensor, mask: Tensor | None = None, *, strength: float = 1.0, method: str = "replace",
             jump_length: int = 10, jump_n: int = 10, n: int = 1, classes: Sequence[str | int] = (),
             prompts: Sequence[str] = (), negative_prompt: str | None = None, guidance: float | None = None,
             sampler: str | None = None, steps: int | None = None, grid: str | None = None, seed: int = 0,
             batch: int = 64, callback: Callback | None = None, what: str | None = None) -> EditResult:
        """img2img (no ``mask``) or inpainting (``mask``: True = regenerate, (B or 1, 1, H, W)) of
        ``images`` (B, C, H, W) in [-1, 1], ``n`` outputs per image and per class or prompt.

        Output j of every image uses seed ``seed + j``, so an image's outputs do not depend on the
        others in the request; up to ``batch`` outputs are made in one pass. On a cold run, img2img
        degrades the input to level ``strength`` and restores it, and a mask run inpaints with its
        restorer (``editing.cold_inpaint``).
        """
        if method not in METHODS:
            from ..utils import choice_error

            raise choice_error("inpainting method", method, METHODS)
        what = what or ("inpaint" if mask is not None else "img2img")
        self.check_edit("repaint" if method == "repaint" else what)
        strength = check_strength(strength)
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        images = self._check_images(images)
        if mask is not None:
            mask = check_mask(mask).to(self.device)
            if mask.shape[0] not in (1, images.shape[0]) or mask.shape[-2:] != images.shape[-2:]:
                raise ValueError(f"the mask has shape {tuple(mask.shape)} but the images {tuple(images.shape)}: "
                                 "give one mask per image, or one for all, of the images' size")
        elif method == "repaint":
            raise ValueError("repaint resamples the region a mask regenerates: give a mask, or use img2img")
        pixels, pixel_mask = images, mask  # a latent run edits latents; the kept pixels are re-imposed at the end
        if self.latent is not None:
            images = self.encode(images)
            mask = None if mask is None else self.latent.mask_to_latent(mask)
        if method == "repaint" and sampler is not None and self.plan(sampler, steps, grid).sampler != "ddpm":
            raise ValueError(f"repaint walks ancestral (ddpm) steps with its own jumps, so it takes no other "
                             f"sampler (asked for {sampler!r}): drop the sampler, or use method 'replace'")
        plan = self.plan(sampler or ("ddpm" if method == "repaint" else None), steps, grid)
        ctx = self.requests(classes=classes, prompts=prompts, negative_prompt=negative_prompt, guidance=guidance)
        reqs = ctx.requests(int(n))
        if isinstance(batch, bool) or int(batch) != batch or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        cold = self.process.restores  # img2img as degrade-then-restore, inpainting by the restorer
        label = ("cold-mask" if cold else method) if mask is not None else "img2img"
        extra = {"jump_length": int(jump_length), "jump_n": int(jump_n)} if label == "repaint" else {}
        items = [(i, j) for i in range(len(images)) for j in range(len(reqs))]  # output j of image i: seed + j
        outs, records = [], []
        for first in range(0, len(items), int(batch)):
            chunk = items[first : first + int(batch)]
            idx = torch.tensor([i for i, _ in chunk], device=self.device)
            part = [reqs[j] for _, j in chunk]
            x = images[idx]
            m = None if mask is None else (mask[idx] if mask.shape[0] > 1 else mask.expand(len(chunk), *mask.shape[1:]))
            cond, uncond = ctx.cond(part)
            den = self._canvas(self.sampling_denoiser(guidance=ctx.guidance, uncond=uncond), tuple(images.shape[2:]))
            gens = seeded_generators([seed + j for _, j in chunk], device=self.device)
            with torch.no_grad():
                if cold and m is not None:
                    out = cold_inpaint(den, x, m, process=self.process, steps=plan.steps, cond=cond,
                                       callback=callback)
                elif cold:
                    out = self._cold_img2img(den, x, strength, plan, cond, gens, callback)
                else:
                    out = edit(den, x, process=self.process, sampler=None if method == "repaint" else plan.sampler,
                               steps=plan.steps, grid=plan.grid, strength=strength, mask=m, method=method,
                               jump_length=jump_length, jump_n=jump_n, cond=cond, generator=gens, callback=callback)
            out = self.decode(out)
            if self.latent is not None and pixel_mask is not None:  # pixel runs keep them in ``edit`` already
                pm = pixel_mask[idx] if pixel_mask.shape[0] > 1 else pixel_mask
                out = torch.where(pm, out, pixels[idx])
            outs.append(out.float().cpu())
            records += [{"input": i, "output": j, "seed": seed + j, "method": label, "strength": strength,
                         "sampler": "ddpm" if label == "repaint" else plan.sampler, "steps": plan.steps,
                         "grid": plan.grid, **extra, **ctx.record(reqs[j])} for i, j in chunk]
        x = torch.cat(outs)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"the edit made NaN or infinite values: {self.name}'s weights may be damaged")
        return EditResult(x, records)

    def _cold_img2img(self, den, x, strength, plan, cond, gens, callback) -> Tensor:
        from ..sampling.cold import restore

        if strength == 0:
            return x.clone()
        x_t = self.process.degrade(x, strength, generator=gens)
        return restore(den, x_t, strength, process=self.process, sampler=plan.sampler, steps=plan.steps, cond=cond,
                       generator=gens, callback=callback)

    def outpaint(self, images: Tensor, extend: tuple[int, int, int, int], **kwargs) -> EditResult:
        """Extend ``images`` (B, C, H, W) by ``extend`` = (left, right, top, bottom) pixels and fill
        the new region by inpainting (``edit``'s options); canvases larger than the run's size are
        worked in overlapping tiles of that size, blended. The original pixels are unchanged."""
        self.check_edit("outpaint")
        if not self.is_image:
            raise ValueError(f"outpainting extends images; {self.name} makes vectors")
        canvas, mask = extend_canvas(self._check_images(images), extend, model_size=tuple(self.image_shape[-2:]))
        result = self.edit(canvas, mask, what="outpaint", **kwargs)
        for r in result.records:
            r["extend"] = list(extend)
        return result

    def _inversion_grid(self, steps: int | None, grid: str | None, strength: float) -> tuple[Tensor, object]:
        plan = self.plan("euler", steps, grid)
        tail = strength_grid(self.process.levels(plan.steps, plan.grid), strength)
        if tail is None:
            raise ValueError("strength 0 inverts nothing: give a strength in (0, 1]")
        return tail.to(self.device), plan

    def _plain_denoiser(self, classes, prompts, size) -> tuple[Denoiser, object, object]:
        """The conditional denoiser (no guidance: inversion must walk one ODE both ways)."""
        ctx = self.requests(classes=classes, prompts=prompts)
        if len(ctx.requests(1)) > 1:
            raise ValueError("inversion takes one class or one prompt (or none)")
        cond, _ = ctx.cond(ctx.requests(1))
        den = self._canvas(self.denoiser, size)

        def D(x: Tensor, sigma: Tensor, c=None) -> Tensor:
            cc = None if cond is None else {k: v.expand(len(x), *v.shape[1:]) for k, v in cond.items()}
            return den(x, sigma, cc)

        return D, ctx, ctx.requests(1)[0]

    def invert(self, images: Tensor, *, steps: int | None = None, grid: str | None = None, strength: float = 1.0,
               iterations: int = 5, classes: Sequence[str | int] = (), prompts: Sequence[str] = (),
               callback: Callback | None = None) -> Inversion:
        """Invert ``images`` to the state at the top of the grid (``strength`` 1: the prior level)
        by the probability-flow ODE (``editing.invert``), and reconstruct them from it."""
        self.check_edit("invert")
        images = self.encode(self._check_images(images))  # latents, on a latent run
        tail, plan = self._inversion_grid(steps, grid, check_strength(strength))
        den, ctx, req = self._plain_denoiser(classes, prompts, tuple(images.shape[2:]))
        noise = invert(den, images, tail, iterations=iterations, callback=callback)
        recon = self.decode(reconstruct(den, noise, tail))
        records = [{"input": i, "method": "invert", "strength": strength, "sampler": "euler", "steps": len(tail) - 1,
                    "grid": plan.grid, "iterations": int(iterations), "level": float(tail[0]),
                    **{k: v for k, v in ctx.record(req).items() if k != "guidance"}} for i in range(len(images))]
        return Inversion(noise.float().cpu(), recon.float().cpu(), float(tail[0]), records)

    def interpolate(self, a: Tensor, b: Tensor, *, frames: int = 8, steps: int | None = None, grid: str | None = None,
                    strength: float = 1.0, iterations: int = 5, classes: Sequence[str | int] = (),
                    prompts: Sequence[str] = (), callback: Callback | None = None) -> Tensor:
        """``frames`` images from a (1, C, H, W) to b through their inversions at ``strength``'s level:
        the clean parts linearly, the noises spherically (``editing.interpolate_states``)."""
        self.check_edit("interpolate")
        if isinstance(frames, bool) or int(frames) != frames or frames < 2:
            raise ValueError(f"frames must be an integer >= 2, got {frames!r}")
        a, b = self.encode(self._check_images(a)), self.encode(self._check_images(b))
        if a.shape != b.shape:
            raise ValueError(f"the two images differ in shape: {tuple(a.shape[1:])} and {tuple(b.shape[1:])}")
        tail, _ = self._inversion_grid(steps, grid, check_strength(strength))
        den, _, _ = self._plain_denoiser(classes, prompts, tuple(a.shape[2:]))
        za, zb = invert(den, a, tail, iterations=iterations), invert(den, b, tail, iterations=iterations)
        ts = torch.linspace(0, 1, int(frames)).tolist()
        states = interpolate_states(a, za, b, zb, float(tail[0]), ts)  # (frames, B, ...)
        flat = states.reshape(-1, *a.shape[1:])
        out = self.decode(reconstruct(den, flat, tail, callback=callback))
        out = out.reshape(len(ts), a.shape[0], *out.shape[1:]).transpose(0, 1)  # (B, frames, ...)
        return out.reshape(-1, *out.shape[2:]).float().cpu()

    def interpolate_contexts(self, frames: int = 8, *, classes: Sequence[str | int] = (), prompts: Sequence[str] = (),
                             n: int = 1, guidance: float | None = None, sampler: str | None = None,
                             steps: int | None = None, grid: str | None = None, seed: int = 0,
                             callback: Callback | None = None) -> Tensor:
        """(n * frames, *shape): from the first of two classes (or prompts) to the second at a
        fixed noise (seed), the x0 estimates of the two contexts blended (``blend_denoisers``)."""
        from ..sampling import generate

        if len(classes) + len(prompts) != 2 or (classes and prompts):
            raise ValueError("interpolating contexts takes two classes or two prompts")
        if isinstance(frames, bool) or int(frames) != frames or frames < 2:
            raise ValueError(f"frames must be an integer >= 2, got {frames!r}")
        plan = self.plan(sampler, steps, grid)
        ctx = self.requests(classes=classes, prompts=prompts, guidance=guidance)
        ends = ctx.requests(n)  # n of the first context, then n of the second
        dens = []
        for part in (ends[:n], ends[n:]):
            cond, uncond = ctx.cond(part)
            guided = self.sampling_denoiser(guidance=ctx.guidance, uncond=uncond)
            dens.append(lambda x, s, c=None, g=guided, k=cond: g(x, s, k))
        out = []
        for t in torch.linspace(0, 1, int(frames)).tolist():
            gens = seeded_generators(range(seed, seed + n), device=self.device)
            with torch.no_grad():
                z = generate(blend_denoisers(dens[0], dens[1], t), (n, *self.data.shape), process=self.process,
                             sampler=plan.sampler, steps=plan.steps, grid=plan.grid, generator=gens,
                             device=self.device, callback=callback)
                out.append(self.decode(z).float().cpu())
        return torch.stack(out, 1).reshape(-1, *self.image_shape)
