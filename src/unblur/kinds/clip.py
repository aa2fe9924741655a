"""``model.kind = clip``: a contrastive encoder of images and captions, trained with the
symmetric InfoNCE loss over image-caption pairs with a learned temperature (Radford et al.
2021), a held-out split, and its retrieval and zero-shot metrics. Its folder opens as
``pipelines.unclip.ClipEncoder``; a prior and a decoder are trained with it (``--clip RUN``).
Defaults: batches of 256, as its benchmark (``benchmarks/unclip.py encoder``).

Caption features are computed once per distinct caption by the frozen encoder
(``clip.text_encoder``, MiniLM by default; cached in the run folder) and mean-pooled; with
``clip.text_encoder=learned`` the token ids go through a learned transformer trained with the
rest. The logit scale is clamped to [1, ``clip.max_logit_scale``] after every step.

Metrics on the held-out pairs (``metrics.jsonl``, at every checkpoint): text->image and
image->text top-1 retrieval among the held-out pairs (a hit is an item with the query's own
caption, so repeated captions count), and, where the data has class names, zero-shot
classification: each image takes the class whose prompt "a NAME" embeds nearest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..config import Config
from ..data import Data, augment
from ..nets.clip import ClipModel
from ..objectives import info_nce
from ..pipelines.unclip import build_clip, caption_inputs, clip_text_dim, load_clip
from ..types import DataInfo
from ..utils import read_jsonl
from .autoencoder import holdout_split
from .base import ModelKind, PrepareContext, Prepared, TaskContext, contexts_asked, register
from .build import data_info_of

EVAL_BATCH = 256


class ContrastiveLoss(nn.Module):
    """``forward(x, text, mask) -> (per-pair loss (B,), terms)`` (one module for DistributedDataParallel)."""

    def __init__(self, model: ClipModel):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, text: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        img, txt, scale = self.model(x, text, mask)
        loss = info_nce(img, txt, scale)
        with torch.no_grad():
            hits = (img @ txt.T).argmax(1) == torch.arange(len(img), device=img.device)
        return loss, {"logit_scale": scale.detach(), "batch_top1": hits.float().mean()}


class ContrastiveTraining:
    """The split, the caption inputs of every pair and the held-out metrics of an encoder run."""

    def __init__(self, cfg: Config, net: ClipModel, data, out, device: torch.device, *, progress: bool):
        if data.kind != "image":
            raise ValueError(f"model.kind=clip needs images with captions, but {data.source!r} holds vectors")
        captions = data.captions or []
        missing = sum(1 for c in captions if not c) if captions else len(data)
        if missing:
            raise ValueError(f"model.kind=clip learns from image-caption pairs, but {missing} of {len(data)} images of "
                             f"{data.source!r} have no caption: give each a same-stem .txt file or a metadata.jsonl "
                             "line (file_name, text), or use builtin:shapes")
        self.cfg, self.net, self.device = cfg, net, device
        self.train_idx, self.held_idx = holdout_split(len(data), cfg.clip.holdout, cfg.train.seed)
        text, mask = caption_inputs(cfg, captions, device=device, cache=out, progress=progress)
        self.text_train, self.mask_train = text[self.train_idx].to(device), mask[self.train_idx].to(device)
        self.text_held, self.mask_held = text[self.held_idx].to(device), mask[self.held_idx].to(device)
        self.captions_held = [captions[i] for i in self.held_idx.tolist()]
        self.labels_held = data.labels[self.held_idx] if data.labels is not None and data.class_names else None
        self.class_names = list(data.class_names or [])
        self.class_text = None  # the zero-shot prompts' inputs, made once
        if self.labels_held is not None and len(self.class_names) >= 2:
            t, m = caption_inputs(cfg, [f"a {name}" for name in self.class_names], device=device)
            self.class_text = (t.to(device), m.to(device))
        self.loss_module = ContrastiveLoss(net)

    def batch(self, idx: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The caption inputs of the training pairs ``idx`` (indices into the training split); with
        ``clip.token_dropout`` each real token leaves the caption's mask with that probability
        (one is always kept), drawn from ``generator``."""
        text, mask = self.text_train[idx], self.mask_train[idx]
        return text, drop_tokens(mask, self.cfg.clip.token_dropout, generator)

    @torch.no_grad()
    def heldout_metrics(self, model: ClipModel, x_held: Tensor) -> dict[str, float]:
        img = torch.cat([model.embed_images(c) for c in x_held.split(EVAL_BATCH)])
        txt = torch.cat([model.embed_texts(t, m) for t, m in zip(self.text_held.split(EVAL_BATCH),
                                                                  self.mask_held.split(EVAL_BATCH))])
        sim = img @ txt.T  # (N, N): image i against caption j
        caps = self.captions_held
        t2i = sim.argmax(0).tolist()  # per caption, the nearest image
        i2t = sim.argmax(1).tolist()  # per image, the nearest caption
        n = len(caps)
        out = {"heldout_t2i_top1": sum(caps[j] == caps[k] for k, j in zip(range(n), t2i)) / n,
               "heldout_i2t_top1": sum(caps[i] == caps[j] for i, j in enumerate(i2t)) / n,
               "heldout_pair_cosine": float(sim.diagonal().mean()),
               "logit_scale": float(model.scale())}
        if self.class_text is not None:
            cls = model.embed_texts(*self.class_text)  # (K, E)
            pred = (img @ cls.T).argmax(1).cpu()
            out["heldout_zero_shot"] = float((pred == self.labels_held).float().mean())
        return out


def drop_tokens(mask: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """``mask`` (B, L) with each True entry turned False with probability ``p``; a row that would
    lose every token keeps its own mask."""
    if p <= 0:
        return mask
    u = torch.rand(mask.shape, generator=generator, device=generator.device if generator is not None else None)
    dropped = mask & (u.to(mask.device) >= p)
    return torch.where(dropped.any(1, keepdim=True), dropped, mask)


def describe_clip(net: ClipModel, tr: ContrastiveTraining) -> str:
    from ..nets import count_parameters

    c = net.cfg
    text = "a learned text encoder" if c.learned_text else f"{tr.cfg.clip.text_encoder} caption features (frozen)"
    return (f"model: contrastive encoder (CLIP), CNN widths {','.join(map(str, c.widths))} -> {c.embed_dim}-wide "
            f"embeddings; captions through {text}; temperature {c.temperature:g} learned, logit scale at most "
            f"{c.max_logit_scale:g}; {count_parameters(net) / 1e6:.2f} M parameters; {len(tr.held_idx)} pairs held "
            "out for retrieval and zero-shot accuracy")


@register
class ClipKind(ModelKind):
    name = "clip"
    config_names = ("clip",)
    help = "a contrastive encoder of images and captions (CLIP), for a prior and a decoder (--clip RUN)"
    sizes_section = "clip"
    defaults: ClassVar[dict[str, Any]] = {"train.batch_size": 256}

    def check(self, cfg: Config) -> None:
        used = contexts_asked(cfg)
        if used:
            raise ValueError(f"model.kind=clip is trained on image-caption pairs alone, but {', '.join(used)} asks for "
                             "conditioning: drop it (the caption encoder is clip.text_encoder)")
        if cfg.data.latent:
            raise ValueError("model.kind=clip encodes pixels: drop --latent (data.latent)")
        if 1.0 / cfg.clip.temperature > cfg.clip.max_logit_scale:
            raise ValueError(f"clip.temperature={cfg.clip.temperature} starts the logit scale at "
                             f"{1 / cfg.clip.temperature:.4g}, above clip.max_logit_scale={cfg.clip.max_logit_scale}")

    def prepare(self, cfg: Config, data: Data, ctx: PrepareContext) -> Prepared:
        if data.kind != "image":
            raise ValueError(f"model.kind=clip needs image data, but {cfg.data.source!r} holds vectors")
        # the width of the caption features its text tower reads
        return Prepared(cfg, data, replace(data_info_of(data), text_dim=clip_text_dim(cfg)))

    def build_net(self, cfg: Config, info: DataInfo) -> nn.Module:
        return build_clip(cfg, info)

    def task(self, ctx: TaskContext) -> ContrastiveTask:
        return ContrastiveTask(ctx)

    def refusal(self, path: Path, cfg: Config, info: DataInfo) -> str:
        return (f"{str(path)!r} is a contrastive encoder run (images and captions -> {cfg.clip.embed_dim}-wide "
                f"embeddings): it does not sample; a prior (--model prior --clip {str(path)!r}) and a decoder (--clip "
                f"{str(path)!r}) are trained with it, and `unblur eval --clip` scores images with it")

    def open(self, path: str | Path, *, device: str | torch.device = "cpu"):
        return load_clip(path, device=device)

    def describe_folder(self, path: Path, cfg: Config, info: DataInfo) -> list[str]:
        """``unblur info``: towers, embedding width, held-out retrieval."""
        from ..nets import count_parameters

        enc = self.open(path, device="cpu")
        folder, c = Path(enc.path), enc.config.clip
        held = [r for r in read_jsonl(folder / "metrics.jsonl") if "heldout_t2i_top1" in r]
        C, H, W = enc.image_shape
        text = "a learned text encoder" if c.text_encoder == "learned" else \
            f"{c.text_encoder} caption features (frozen)"
        lines = [f"run:        {path}",
                 f"kind:       contrastive encoder: {C}x{H}x{W} images and captions -> {enc.dim}-wide unit embeddings",
                 f"data:       {enc.config.data.source}",
                 f"network:    CNN widths {','.join(map(str, c.widths))}; {text}, {c.text_head} head; "
                 f"{count_parameters(enc.model, trainable_only=False):,} parameters; logit scale "
                 f"{float(enc.model.scale()):.2f} (bound {c.max_logit_scale:g})"]
        if held:
            last = held[-1]
            zs = f", zero-shot {last['heldout_zero_shot']:.3f}" if "heldout_zero_shot" in last else ""
            lines.append(f"held out:   {c.holdout:.0%} of the pairs: text->image top-1 {last['heldout_t2i_top1']:.3f}, "
                         f"image->text top-1 {last['heldout_i2t_top1']:.3f}, pair cosine "
                         f"{last['heldout_pair_cosine']:.3f}{zs} (step {last['step']})")
        lines += [f"weights:    sha256 {enc.sha256}",
                  f"use:        a prior (unblur train --model prior --clip {str(path)!r}), a decoder (unblur train "
                  f"--clip {str(path)!r}), unblur eval --clip {str(path)!r}; in Python, unblur.kinds.open_folder"]
        return lines


class ContrastiveTask(ContrastiveTraining):
    """The encoder's training task: image-caption pairs, the other pairs of a micro-batch the negatives."""

    def __init__(self, ctx: TaskContext):
        data = ctx.prepared.data
        super().__init__(ctx.cfg, ctx.net, data, ctx.out, ctx.device, progress=ctx.progress)
        self.ctx = ctx
        x = data.x.to(ctx.device)
        self.x_held = x[self.held_idx.to(ctx.device)]
        self.x_train = x[self.train_idx.to(ctx.device)]

    def loss(self, module: nn.Module, x0: Tensor, idx: Tensor, generator: torch.Generator, *,
             step: int) -> tuple[Tensor, dict[str, Tensor]]:
        d = self.cfg.data
        x0, _ = augment(x0, None, generator, hflip=d.hflip, shift=d.shift)
        x0 = self.ctx.layout(x0)
        text, mask = self.batch(idx, generator)
        with self.ctx.autocast():
            return module(x0, text, mask)

    def after_step(self, *, step: int, lr: float, grad_clip: float) -> dict[str, float]:
        self.net.clamp_()  # the temperature stays in its bounds
        return {}

    def export(self, ema: nn.Module, *, step: int, evaluate: bool) -> tuple[None, dict[str, Any]]:
        return None, (self.heldout_metrics(ema, self.x_held) if evaluate else {})

    def grid(self, ema: nn.Module, path: Path, *, step: int, log: Callable[[dict], None]) -> Path | None:
        return None  # an encoder draws nothing

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def describe(self, how: str) -> str:
        return describe_clip(self.net, self)
