"""``model.kind = auto | unet | mlp``: a denoiser of a forward process (Gaussian or cold), on
images, latents or vectors, with the contexts ``[cond]`` asks for. Its folder opens as a
``runs.Run``.

Training data: the images (or a latent run's latents, ``data.latent``; or a decoder's images
with a contrastive encoder's image embeddings, ``cond.clip``), the data's classes and captions
used by default, sigma_data measured once. Task: the process draws the (level, degraded input)
pair, the loss is the objective's per-sample loss through the process's preconditioning row,
conditions dropped for guidance; its picture is a grid of samples (or restorations of fully
degraded data, with their PSNR/SSIM logged).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..conditioning import Conditioner, default_conditioning, describe_conditioning, drop_cond
from ..config import Config
from ..data import Data, augment
from ..images import grid_scale, make_grid, save_png, scatter_image
from ..nets.presets import describe_model, size_model
from ..objectives import LossModule
from ..quality import psnr, ssim
from ..types import DataInfo, Process
from ..utils import seeded_generators
from .base import ModelKind, PrepareContext, Prepared, TaskContext, register
from .build import build_denoiser, build_process, data_info_of


@register
class DiffusionKind(ModelKind):
    name = "diffusion"
    config_names = ("auto", "unet", "mlp")
    help = "a denoiser of the forward process (auto: a U-Net for images, an MLP for vectors)"
    samples = True

    def check(self, cfg: Config) -> None:
        c = cfg.cond
        if c.clip and cfg.model.kind == "mlp":
            raise ValueError(f"cond.clip conditions a U-Net decoder (or a --model prior) on a contrastive encoder, "
                             f"but model.kind={cfg.model.kind}: drop --clip (cond.clip) or choose --model unet / prior")

    # -- data ----------------------------------------------------------------------------------
    def prepare(self, cfg: Config, data: Data, ctx: PrepareContext) -> Prepared:
        recorded = ctx.recorded or {}
        extras: dict[str, Any] = {"latent": None}
        if cfg.data.latent:  # the data becomes the autoencoder's latents
            from ..pipelines.latent import embed, latent_training_data

            latent, data = latent_training_data(
                data, cfg.data.latent, device=ctx.device, fingerprint=data_info_of(data).fingerprint,
                recorded=recorded.get("latent"), say=ctx.say)
            extras["latent"] = latent
            if cfg.data.embed_ae and ctx.main:
                ctx.say(f"embedded a copy of the autoencoder in {embed(latent.ae, ctx.out)}")
        clip_record = None
        if cfg.cond.clip:
            if ctx.recorded is not None and not Path(cfg.cond.clip).exists():
                raise ValueError(f"the run's contrastive encoder {cfg.cond.clip!r} is not there any more: put it back, "
                                 "or resume with --clip at its new path (the run checks its SHA-256)")
            enc, data = self.embeddings(cfg, data, ctx, recorded.get("clip"))
            clip_record = self.encoder_record(enc)
        if ctx.recorded is None:  # a resumed run keeps its own contexts and network
            cfg = default_conditioning(cfg, data, ctx.explicit)
        ctx.say(describe_conditioning(cfg, data, embedding_words=self.embedding_words(cfg)))
        if cfg.data.shift and data.kind == "image":
            side = min(data.image_size)
            if not 0 <= cfg.data.shift < side:
                raise ValueError(f"data.shift={cfg.data.shift} must lie in 0..{side - 1} pixels for {side}-pixel "
                                 "images")
        if cfg.process.sigma_data is None:  # measured once, then saved with the run
            cfg = replace(cfg, process=replace(cfg.process, sigma_data=round(float(data.x.float().std()), 4)))
        conditioner = Conditioner(cfg, data, ctx.out, ctx.device, progress=ctx.progress)
        latent = extras["latent"]
        info = replace(data_info_of(data), **conditioner.info,
                       latent=latent.record(embedded=cfg.data.embed_ae) if latent is not None else None,
                       clip=clip_record)
        process = build_process(cfg, info)
        start = process.fit_start(data.x, seed=cfg.train.seed)  # e.g. blur's start, fitted once and saved
        if start:
            info = replace(info, cold_start=start)
            process = build_process(cfg, info)
        extras.update(conditioner=conditioner, process=process)
        return Prepared(cfg, data, info, extras)

    def embeddings(self, cfg: Config, data: Data, ctx: PrepareContext, recorded):
        """(encoder, data with each image's embedding): a decoder's contexts."""
        from ..pipelines.unclip import attach_image_embeddings

        return attach_image_embeddings(data, cfg.cond.clip, device=ctx.device, recorded=recorded, say=ctx.say)

    def encoder_record(self, enc):
        return enc.record(for_prior=False)

    def embedding_words(self, cfg: Config) -> tuple[str, str]:
        return (f"the image embeddings of the encoder {cfg.cond.clip} ({cfg.cond.clip_tokens} context tokens)",
                "--prior / --variations-of / --interpolate")

    def preview(self, cfg: Config, data: Data, device: torch.device) -> list[str]:
        cfg = default_conditioning(cfg, data, explicit=set())  # what `unblur train` does given no cond.*
        info = data_info_of(data)
        cfg, preset = self.size(cfg, info, device)
        net = self.build_net(cfg, info).to(device)
        return [describe_conditioning(cfg, data, embedding_words=self.embedding_words(cfg)),
                describe_model(net, info.shape, device, preset or "model.* as given")]

    # -- network -------------------------------------------------------------------------------
    def size(self, cfg: Config, info: DataInfo, device: torch.device) -> tuple[Config, str | None]:
        if info.kind != "image" or cfg.model.kind == "mlp":
            return cfg, None
        return size_model(cfg, info, device)

    def build_net(self, cfg: Config, info: DataInfo) -> nn.Module:
        """The U-Net (images) or the MLP (vectors), with the conditioning inputs ``cfg.cond`` asks for."""
        from ..conditioning import condition_net
        from ..nets import MLPConfig, MLPDenoiserNet, default_unet_config

        m = cfg.model
        is_image = info.kind == "image"
        net_name = {"auto": "unet" if is_image else "mlp"}.get(m.kind, m.kind)
        if (net_name == "unet") != is_image:
            holds, use = ("images", "unet") if is_image else ("vectors", "mlp")
            raise ValueError(f"model.kind={m.kind} does not fit {info.source!r}, which holds {holds}: use {use}")
        # EDM feeds c_noise = log(sigma) / 4 (about -1.6 to 1.1); spread it over the sinusoids'
        # periods as a timestep index 0..999 would be.
        embed_scale = 250.0 if cfg.process.kind == "edm" else 1.0
        if not is_image:
            return MLPDenoiserNet(MLPConfig(dim=info.shape[0], hidden=m.hidden, depth=m.depth,
                                            dropout=m.dropout, noise_embed_scale=embed_scale))
        C, H, W = info.shape
        ucfg = default_unet_config(size=(H, W), channels=C)
        overrides = {k: getattr(m, k) for k in ("base_channels", "channel_mult", "num_res_blocks", "attn_resolutions")
                     if getattr(m, k) is not None}
        if "base_channels" in overrides:
            overrides["norm_groups"] = min(32, overrides["base_channels"])
        ucfg = dataclasses.replace(ucfg, dropout=m.dropout, noise_embed_scale=embed_scale, **overrides)
        return condition_net(cfg, info, ucfg)

    def task(self, ctx: TaskContext) -> DiffusionTask:
        return DiffusionTask(ctx)


class DiffusionTask:
    """A denoiser's training: the process's pairs, the objective's loss, guidance dropout, sample grids."""

    def __init__(self, ctx: TaskContext):
        p = ctx.prepared
        self.ctx, self.cfg = ctx, ctx.cfg
        self.conditioner: Conditioner = p.extras["conditioner"]
        self.process: Process = p.extras["process"]
        self.latent = p.extras.get("latent")
        self.data = p.data
        self.x_train = p.data.x.to(ctx.device)
        self.model = build_denoiser(ctx.cfg, ctx.net, self.process)
        o = ctx.cfg.objective
        self.loss_module = LossModule(self.model, loss=getattr(o, self.process.loss_key), weighting=o.weighting,
                                      min_snr_gamma=o.min_snr_gamma)

    def loss(self, module: nn.Module, x0: Tensor, idx: Tensor, generator: torch.Generator, *,
             step: int) -> tuple[Tensor, dict[str, Tensor]]:
        d = self.cfg.data
        cond = self.conditioner.items(idx)
        x0, cond = augment(x0, cond, generator, hflip=d.hflip, shift=d.shift)
        x0 = self.ctx.layout(x0)
        level, x_t = self.process.training_pair(x0, generator)  # the process's levels and degraded batch
        cond = drop_cond(cond, self.conditioner.p, generator, self.conditioner.num_classes)
        with self.ctx.autocast():
            return module(x0, level, x_t, cond), {}

    def after_step(self, *, step: int, lr: float, grad_clip: float) -> dict[str, float]:
        return {}

    def export(self, ema: nn.Module, *, step: int, evaluate: bool) -> tuple[dict[str, str] | None, dict[str, float]]:
        return None, {}

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def describe(self, how: str) -> str:
        return describe_model(self.ctx.net, self.ctx.prepared.info.shape, self.ctx.device, how)

    def run(self, ema: nn.Module):
        """The run as sampled now: ``ema`` behind the run's process, on the trainer's device."""
        return self.ctx.make_run(ema, self.process, latent=self.latent)

    @torch.no_grad()
    def grid(self, ema: nn.Module, path: Path, *, step: int, log: Callable[[dict], None]) -> Path | None:
        """A grid of samples from ``ema`` (restorations of fully degraded data where the process
        has no image-free start) and, for restorers, their PSNR/SSIM logged."""
        s, run, image = self.cfg.sample, self.run(ema), self.data.kind == "image"
        n = s.grid_n if image else 4000
        plan = run.plan()
        x0 = self.data.x[:n].to(self.ctx.device)
        bar = None
        if self.ctx.progress:  # a grid at 32x32 takes a while on a CPU: show it
            from tqdm import tqdm

            bar = tqdm(total=plan.steps, unit="step", desc=f"sample grid ({n})", leave=False, dynamic_ncols=True)
        tick = (lambda info: bar.update(1)) if bar is not None else None
        if self.process.can_generate:
            gens = seeded_generators(range(n), device=self.ctx.device) if image else \
                torch.Generator(self.ctx.device).manual_seed(0)
            cond = self.conditioner.grid_cond(n)
            uncond = self.conditioner.null(cond) if cond is not None else None
            x = run.generate(n, plan=plan, cond=cond, uncond=uncond, guidance=self.conditioner.guidance,
                             generator=gens, callback=tick)
        else:
            x, _ = run.restore(self.process.degrade(x0, 1.0), 1.0, steps=plan.steps, callback=tick)
        if self.process.restores:
            metrics = restoration_metrics(run.sampling_denoiser(), self.process, x0, level=1.0, steps=plan.steps,
                                          sampler=self.process.restore_sampler)
            if metrics:
                log({"step": step, **metrics})
        x = run.decode(x)  # a latent run's grid shows the decoded images
        if bar is not None:
            bar.close()
        save_png(make_grid(x, scale=grid_scale(x.shape[-2])) if image else scatter_image(x), path)
        return path


@torch.no_grad()
def restoration_metrics(restorer, process: Process, x0: Tensor, *, level: float = 1.0, steps: int = 20,
                        sampler: str = "cold") -> dict:
    """Mean PSNR and SSIM of restored and of degraded images at ``level`` (empty without scikit-image)."""
    from ..sampling.cold import restore

    gens = seeded_generators(range(len(x0)), device=x0.device)
    x_t = process.degrade(x0, level, gens)
    x_hat = restore(restorer, x_t, level, process=process, sampler=sampler, steps=steps,
                    generator=torch.Generator(x0.device).manual_seed(0))
    try:
        out = {"restore_psnr": float(psnr(x_hat, x0).mean()), "degraded_psnr": float(psnr(x_t, x0).mean())}
        if min(x0.shape[-2:]) >= 3:
            out["restore_ssim"] = float(ssim(x_hat, x0).mean())
            out["degraded_ssim"] = float(ssim(x_t, x0).mean())
    except ImportError:
        return {}
    return {"level": level, **out}
