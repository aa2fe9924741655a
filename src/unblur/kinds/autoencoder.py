"""``model.kind = autoencoder``: Stable Diffusion's KL autoencoder (``nets.autoencoder_kl``),
trained on images alone: the loss, the discriminator, the held-out split and its metrics, the
latent scale written into the export, and the input | reconstruction grids. Its folder opens
as ``pipelines.load_autoencoder``'s object; latent runs name it with ``--latent``.

Defaults: batches of 16 (``benchmarks/latent.py``'s autoencoder, 1222 steps in 10 minutes on
2 cores, 35.6 dB held out on 64x64 shapes; the global batch of 128 gives 39 steps in 5 minutes
and 20.3 dB).

The loss is Rombach et al.'s (2022, app. G; ``LPIPSWithDiscriminator`` of the latent-diffusion
code) with the perceptual network replaced by terms that need no download:

    L = rec(x, x_hat) + w_p P(x_hat, x) + kl_weight * KL(q(z|x) || N(0, I)) / (C H W) [+ w_adv (-D(x_hat))]

per image, rec (``autoencoder.rec_loss``: the squared error by default, SD's L1 on request) and
P averaged over pixels where SD sums them, so every term is divided by the pixel count C H W and
``kl_weight`` keeps the meaning it has there (1e-6). The defaults (squared error, no P) are the
measured best at CPU budgets: on 64x64 shapes they reach 28.7 dB held out in 3 minutes where L1
with 1 - SSIM reaches 20.7, whose reconstructions give every small shape the palette's mean
colour (``benchmarks/latent.py``). x_hat decodes a
draw z ~ q(z | x) made with the trainer's per-step generator (resume stays exact). After
``autoencoder.disc_start`` steps a PatchGAN joins: it trains on the hinge loss with its own
AdamW at the trainer's learning rate, and the generator's term is weighted by
``disc_weight`` times ||grad L_rec|| / ||grad L_adv|| at the decoder's last layer (Esser et al.
2021, eq. 7) when ``disc_adaptive``.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..config import AutoencoderConfig, Config
from ..data import Data, augment
from ..images import grid_scale, make_grid, save_png
from ..nets.autoencoder_kl import AutoencoderKL
from ..nets.patchgan import PatchDiscriminator
from ..objectives import hinge_d_loss, hinge_g_loss, kl_normal, perceptual_loss
from ..pipelines.autoencoder import AUTOENCODER_KEY, LATENT_SHAPE_KEY, build_autoencoder, latent_scale
from ..quality import psnr, ssim
from ..types import DataInfo
from ..utils import mean_flat, randn, read_jsonl
from .base import ModelKind, PrepareContext, Prepared, TaskContext, contexts_asked, register
from .build import data_info_of

SCALE_IMAGES = 2048  # training images the latent scale is measured on (the first of the training split)
EVAL_BATCH = 64


def holdout_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(training indices, held-out indices) of ``n`` items: ``ceil(fraction * n)`` (at least one)
    held out, drawn by a permutation seeded by ``seed``; each part in increasing order."""
    if n < 2:
        raise ValueError(f"an autoencoder run holds out some images for PSNR and SSIM, but the data has {n} image: "
                         "give at least 2")
    k = min(n - 1, max(1, math.ceil(fraction * n)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed ^ 0x5EED_A0E))
    return perm[k:].sort().values, perm[:k].sort().values


class AutoencoderLoss(nn.Module):
    """The autoencoder's side of a training step as one module (so DistributedDataParallel can wrap it).

    ``forward(x, generator, adversarial=...)`` returns (per-image loss (B,), the reconstruction
    (detached, for the discriminator's step), the batch means of the terms). The discriminator is
    held outside the module's parameters: it is called here with its gradients off, and trained
    by ``AutoencoderTraining.discriminator_step``.
    """

    def __init__(self, net: AutoencoderKL, cfg: AutoencoderConfig, disc: nn.Module | None = None):
        super().__init__()
        self.net, self.cfg = net, cfg
        self._disc = [disc]  # a list: not a sub-module, so not in this module's parameters

    def forward(self, x: Tensor, generator: torch.Generator, *, adversarial: bool = False
                ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        a, net = self.cfg, self.net
        mean, logvar = net.encode(x)  # (B, latent, H / f, W / f) each
        eps = randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * logvar) * eps  # a draw from q(z | x) (Kingma & Welling 2014, eq. 10)
        x_hat = net.decode(z)  # (B, C, H, W)
        err = x_hat.float() - x.float()
        rec = {"l1": lambda: mean_flat(err.abs()), "l2": lambda: mean_flat(err.square()),
               "l1+l2": lambda: mean_flat(err.abs() + err.square())}[a.rec_loss]()  # (B,)
        nll = rec
        parts = {"rec": rec.detach().mean()}
        if a.perceptual != "none" and a.perceptual_weight > 0:
            perc = perceptual_loss(x_hat, x, a.perceptual)
            nll = nll + a.perceptual_weight * perc
            parts["perceptual"] = perc.detach().mean()
        kl = kl_normal(mean, logvar)  # (B,), summed over the latent
        parts["kl"] = kl.detach().mean()
        loss = nll + a.kl_weight * kl / x[0].numel()
        disc = self._disc[0]
        if adversarial and disc is not None:
            g = hinge_g_loss(disc(x_hat))  # (B,)
            weight = torch.tensor(a.disc_weight, device=x.device)
            if a.disc_adaptive and torch.is_grad_enabled():
                last = net.decoder.conv_out.weight
                g_nll = torch.autograd.grad(nll.mean(), last, retain_graph=True)[0]
                g_adv = torch.autograd.grad(g.mean(), last, retain_graph=True)[0]
                weight = weight * (g_nll.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach()
            loss = loss + weight * g
            parts["g_adv"] = g.detach().mean()
            parts["d_weight"] = weight.detach()
        return loss, x_hat.detach(), parts


class AutoencoderTraining:
    """The pieces an autoencoder run adds to the trainer: split, discriminator, metrics, scale, grids."""

    def __init__(self, cfg: Config, net: AutoencoderKL, x: Tensor, *, device: torch.device,
                 autocast: Callable[[], contextlib.AbstractContextManager], world: int = 1):
        a, t = cfg.autoencoder, cfg.train
        self.cfg, self.net, self.device, self.autocast = a, net, device, autocast
        self.train_idx, self.held_idx = holdout_split(len(x), a.holdout, t.seed)
        C, H, W = x.shape[1:]
        f = a.downsampling
        self.latent_shape = (a.latent_channels, H // f, W // f)
        self.disc: nn.Module | None = None
        self.disc_opt: torch.optim.Optimizer | None = None
        if a.discriminator:
            if min(H, W) < 2**a.disc_layers:
                raise ValueError(f"autoencoder.disc_layers={a.disc_layers} halves {H}x{W} images below one pixel: "
                                 f"use at most {max(1, int(math.log2(min(H, W))))} layers")
            torch.manual_seed(t.seed ^ 0xD15C)
            self.disc = PatchDiscriminator(C, width=a.disc_width, layers=a.disc_layers).to(device)
            self.disc.requires_grad_(False)  # on only inside discriminator_step
            self.disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=t.lr, betas=t.betas,
                                              weight_decay=t.weight_decay, foreach=True)
        self.disc_run: nn.Module | None = self.disc
        if self.disc is not None and world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.disc.requires_grad_(True)
            self.disc_run = DDP(self.disc, device_ids=[device.index] if device.type == "cuda" else None)
            self.disc.requires_grad_(False)
        self.loss_module = AutoencoderLoss(net, a, self.disc)

    def adversarial(self, step: int) -> bool:
        """Whether the discriminator takes part in step ``step`` (0-based): from ``disc_start`` on."""
        return self.disc is not None and step >= self.cfg.disc_start

    def discriminator_step(self, pairs: list[tuple[Tensor, Tensor]], lr: float, grad_clip: float) -> dict[str, float]:
        """One AdamW step of the discriminator on the hinge loss over the step's (real, reconstructed)
        micro-batches; returns its loss and mean logits."""
        assert self.disc is not None and self.disc_opt is not None and self.disc_run is not None
        for group in self.disc_opt.param_groups:
            group["lr"] = lr
        self.disc.requires_grad_(True)
        self.disc_opt.zero_grad(set_to_none=True)
        d_loss = real = fake = 0.0
        try:
            for x, x_hat in pairs:
                with self.autocast():
                    logits_real, logits_fake = self.disc_run(x), self.disc_run(x_hat)
                loss = hinge_d_loss(logits_real, logits_fake).mean()
                (loss / len(pairs)).backward()
                d_loss += loss.item() / len(pairs)
                real += logits_real.float().mean().item() / len(pairs)
                fake += logits_fake.float().mean().item() / len(pairs)
            torch.nn.utils.clip_grad_norm_(self.disc.parameters(), grad_clip if grad_clip > 0 else float("inf"))
            self.disc_opt.step()
        finally:
            self.disc.requires_grad_(False)
        return {"d_loss": d_loss, "logits_real": real, "logits_fake": fake}

    def state(self) -> dict:
        """The discriminator's part of the resume state (empty without one)."""
        if self.disc is None or self.disc_opt is None:
            return {}
        return {"disc": self.disc.state_dict(), "disc_opt": self.disc_opt.state_dict()}

    def load_state(self, state: dict) -> None:
        if self.disc is not None and self.disc_opt is not None and "disc" in state:
            self.disc.load_state_dict(state["disc"])
            self.disc_opt.load_state_dict(state["disc_opt"])

    @torch.no_grad()
    def reconstruct(self, model: AutoencoderKL, x: Tensor) -> Tensor:
        """Decodes of the latent means of x, ``EVAL_BATCH`` at a time, in [-1, 1]."""
        out = [model.decode(model.encode(chunk)[0]).float().clamp(-1, 1) for chunk in x.split(EVAL_BATCH)]
        return torch.cat(out)

    def heldout_metrics(self, model: AutoencoderKL, x: Tensor) -> dict[str, float]:
        """Mean reconstruction PSNR (dB) and SSIM of the held-out images x (empty without scikit-image)."""
        x_hat = self.reconstruct(model, x)
        try:
            out = {"heldout_psnr": float(psnr(x_hat, x).mean())}
            if min(x.shape[-2:]) >= 3:
                out["heldout_ssim"] = float(ssim(x_hat, x).mean())
        except ImportError:
            return {}
        return out

    def measure_scale(self, model: AutoencoderKL, x_train: Tensor) -> float:
        """The latent scale factor 1 / std of the latent means, over the first ``SCALE_IMAGES``
        training images (deterministic: the same weights give the same factor)."""
        return latent_scale(model, x_train[:SCALE_IMAGES], batch=EVAL_BATCH)

    def picture(self, model: AutoencoderKL, x_held: Tensor, x_train: Tensor, n: int):
        """A picture of ``n`` held-out images (training ones after those), each with its
        reconstruction on its right (input | reconstruction), the pairs in a grid."""
        x = torch.cat([x_held[:n], x_train[: max(0, n - len(x_held))]])
        x_hat = self.reconstruct(model, x)
        pairs = torch.cat([x, x_hat], dim=-1).cpu()  # (n, C, H, 2W): each input with its reconstruction on the right
        return make_grid(pairs, nrow=max(1, math.ceil(math.sqrt(len(x)))), scale=grid_scale(x.shape[-2]))


def describe_autoencoder(net: AutoencoderKL, ae: AutoencoderTraining, cfg: AutoencoderConfig, how: str) -> str:
    """One line on the autoencoder as built: widths, factor, latent shape, parameters, the terms of its loss."""
    from ..nets import count_parameters

    c = net.config
    lat = "x".join(map(str, ae.latent_shape))
    rec = {"l1": "L1", "l2": "squared error", "l1+l2": "L1 + squared error"}[cfg.rec_loss]
    terms = [rec, f"KL x {cfg.kl_weight:g}"]
    if cfg.perceptual != "none" and cfg.perceptual_weight > 0:
        terms.append(f"{cfg.perceptual} x {cfg.perceptual_weight:g}")
    if ae.disc is not None:
        terms.append(f"PatchGAN x {cfg.disc_weight:g}{' (adaptive)' if cfg.disc_adaptive else ''} from step "
                     f"{cfg.disc_start} ({count_parameters(ae.disc, trainable_only=False) / 1e6:.2f} M parameters)")
    mid = ", middle attention" if c.mid_block_add_attention else ""
    return (f"model: autoencoder (KL), widths {','.join(map(str, c.block_out_channels))}, {c.layers_per_block} "
            f"resnet(s) per level{mid}, downsampling {net.downsampling} -> {lat} latents ({how}); "
            f"{count_parameters(net) / 1e6:.2f} M parameters; loss {' + '.join(terms)}; "
            f"{len(ae.held_idx)} images held out for PSNR/SSIM")


@register
class AutoencoderKind(ModelKind):
    name = "autoencoder"
    config_names = ("autoencoder",)
    help = "Stable Diffusion's KL autoencoder, for latent runs (--latent RUN)"
    sizes_section = "autoencoder"
    defaults: ClassVar[dict[str, Any]] = {"train.batch_size": 16}

    def check(self, cfg: Config) -> None:
        """An autoencoder has no forward process and no conditioning: say so rather than ignore them."""
        used = contexts_asked(cfg)
        if used:
            raise ValueError(f"model.kind=autoencoder takes no conditioning, but {', '.join(used)} asks for it: "
                             "drop it (an autoencoder encodes and decodes the images alone)")
        if cfg.process.kind != "edm":
            raise ValueError(f"process.kind={cfg.process.kind} does not apply to model.kind=autoencoder (an "
                             "autoencoder has no forward process): drop --process")
        if cfg.data.latent:
            raise ValueError("an autoencoder is trained on pixels: drop --latent (data.latent) from --model "
                             "autoencoder")

    def prepare(self, cfg: Config, data: Data, ctx: PrepareContext) -> Prepared:
        if data.kind != "image":
            raise ValueError(f"model.kind=autoencoder needs image data, but {cfg.data.source!r} holds vectors")
        return Prepared(cfg, data, data_info_of(data))

    def build_net(self, cfg: Config, info: DataInfo) -> nn.Module:
        if info.kind != "image":
            raise ValueError(f"model.kind=autoencoder needs image data, but {info.source!r} holds vectors")
        return build_autoencoder(cfg, info.shape)

    def task(self, ctx: TaskContext) -> AutoencoderTask:
        return AutoencoderTask(ctx)

    def refusal(self, path: Path, cfg: Config, info: DataInfo) -> str:
        C, H, W = info.shape
        f, c = cfg.autoencoder.downsampling, cfg.autoencoder.latent_channels
        return (f"{str(path)!r} is an autoencoder run ({C}x{H}x{W} images <-> {c}x{H // f}x{W // f} latents, "
                f"downsampling {f}): it encodes and decodes images, it does not sample, evaluate, edit or restore; a "
                f"latent diffusion run uses it with --latent {str(path)!r} (`unblur info {str(path)!r}` describes it)")

    def open(self, path: str | Path, *, device: str | torch.device = "cpu"):
        from ..pipelines import load_autoencoder

        return load_autoencoder(path, device=device)

    def describe_folder(self, path: Path, cfg: Config, info: DataInfo) -> list[str]:
        """``unblur info``: factor, latent shape, scale factor, held-out PSNR/SSIM (the steps and the
        config follow, as for every kind)."""
        from ..nets import count_parameters

        ae = self.open(path, device="cpu")
        folder = Path(ae.path)
        C, H, W = info.shape
        c, h, w = ae.latent_shape(H, W)
        net = ae.model.config
        held = [r for r in read_jsonl(folder / "metrics.jsonl") if "heldout_psnr" in r]
        lines = [
            f"run:        {path}",
            f"kind:       autoencoder (KL), downsampling {ae.downsampling}: {C}x{H}x{W} images <-> {c}x{h}x{w} "
            f"latents ({C * H * W / (c * h * w):.3g}x fewer values)",
            f"data:       {info.source} ({info.num_items} images)",
            f"network:    AutoencoderKL, widths {','.join(map(str, net.block_out_channels))}, "
            f"{count_parameters(ae.model, trainable_only=False):,} parameters, middle attention "
            f"{'on' if net.mid_block_add_attention else 'off'}",
            f"latents:    scaling_factor {ae.scaling_factor:.6g} (1 / std of the latent means on the training "
            f"images), shift_factor {ae.shift_factor:g}"]
        if held:
            last = held[-1]
            ssim_ = f", SSIM {last['heldout_ssim']:.4f}" if "heldout_ssim" in last else ""
            n_held = len(holdout_split(info.num_items, cfg.autoencoder.holdout, cfg.train.seed)[1])
            lines.append(f"held out:   {n_held} images ({cfg.autoencoder.holdout:.0%}): reconstruction PSNR "
                         f"{last['heldout_psnr']:.2f} dB{ssim_} (step {last['step']})")
        lines += [f"weights:    sha256 {ae.sha256}",
                  f"use:        a latent diffusion run takes it with --latent {str(path)!r}; in Python, "
                  "unblur.pipelines.load_autoencoder opens it"]
        return lines


class AutoencoderTask(AutoencoderTraining):
    """The autoencoder's training task: reconstruct a draw from q(z | x0), no process, no condition."""

    def __init__(self, ctx: TaskContext):
        data = ctx.prepared.data
        super().__init__(ctx.cfg, ctx.net, data.x, device=ctx.device, autocast=ctx.autocast, world=ctx.world)
        self.ctx, self.run_cfg = ctx, ctx.cfg
        x = data.x.to(ctx.device)
        self.x_held = x[self.held_idx.to(ctx.device)]
        self.x_train = x[self.train_idx.to(ctx.device)]
        self._pairs: list[tuple[Tensor, Tensor]] = []  # the step's (real, reconstructed) micro-batches

    def loss(self, module: nn.Module, x0: Tensor, idx: Tensor, generator: torch.Generator, *,  # type: ignore[override]
             step: int) -> tuple[Tensor, dict[str, Tensor]]:
        d = self.run_cfg.data
        x0, _ = augment(x0, None, generator, hflip=d.hflip, shift=d.shift)
        x0 = self.ctx.layout(x0)
        with self.ctx.autocast():
            per_image, x_hat, terms = module(x0, generator, adversarial=self.adversarial(step))
        self._pairs.append((x0, x_hat))
        return per_image, terms

    def after_step(self, *, step: int, lr: float, grad_clip: float) -> dict[str, float]:
        pairs, self._pairs = self._pairs, []
        return self.discriminator_step(pairs, lr, grad_clip) if self.adversarial(step) else {}

    def export(self, ema: nn.Module, *, step: int, evaluate: bool) -> tuple[dict[str, str], dict[str, Any]]:
        """Its diffusers config with the latent scale measured now on the training images, and the
        latent shape; the held-out PSNR and SSIM when ``evaluate``."""
        scale = self.measure_scale(ema, self.x_train)
        config = replace(ema.config, scaling_factor=float(f"{scale:.6g}"))
        ema.config = self.ctx.net.config = config  # the modules say what the export says
        metrics = {**self.heldout_metrics(ema, self.x_held), "scaling_factor": config.scaling_factor,
                   "latent_shape": list(self.latent_shape)} if evaluate else {}
        return {AUTOENCODER_KEY: json.dumps(config.to_dict()), LATENT_SHAPE_KEY: json.dumps(list(self.latent_shape))}, \
            metrics

    def grid(self, ema: nn.Module, path: Path, *, step: int, log: Callable[[dict], None]) -> Path | None:
        save_png(self.picture(ema, self.x_held, self.x_train, self.run_cfg.sample.grid_n), path)
        return path

    def describe(self, how: str) -> str:
        return describe_autoencoder(self.ctx.net, self, self.run_cfg.autoencoder, how)
