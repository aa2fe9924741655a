"""Conditioning: which contexts a run uses, how a batch's context is built and dropped, and the
null context that classifier-free guidance pushes away from.

A context is a ``Cond`` mapping with any of

* ``"class"`` (B,) long: index ``num_classes`` is the learned null class;
* ``"text"`` (B, L, D) and ``"text_mask"`` (B, L) bool from a frozen encoder (features cached on
  disk), or ``"text_ids"`` (B, L) and ``"text_mask"`` for the learned encoder; a row with every
  token masked out is the null caption;
* ``"image"`` (B, C, H, W): a low-resolution copy resized to the model's size; zeros are null.

Every null is expressed with the same keys and shapes as a real context, so the conditional and
unconditional halves of guidance run as one batch, and dropout (``cond.dropout``, drawn
independently per key and per sample) replaces entries in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Config
from .types import Cond, Generator
from .utils import choice_error, rand

IMAGE_CONDITIONS = ("none", "superres")


# -- the network -------------------------------------------------------------------------------


def text_dim_of(cfg: Config) -> int | None:
    c = cfg.cond
    if c.text_encoder in ("none", ""):
        return None
    from .text import text_feature_dim

    return text_feature_dim(c.text_encoder, learned_dim=c.learned_dim)


def condition_net(cfg: Config, data_info: dict, ucfg) -> nn.Module:
    """The U-Net of ``ucfg`` with the class, text and image inputs that ``cfg.cond`` asks for."""
    import dataclasses

    from .nets import UNet

    c = cfg.cond
    changes: dict = {}
    if c.classes:
        names = data_info.get("class_names")
        if not names:
            raise ValueError(
                f"cond.classes=true but {data_info['source']!r} has no class labels: use a folder with one "
                "sub-folder per class, a NAME.labels.npy beside NAME.npy, or builtin:digits"
            )
        changes["num_classes"] = len(names)
    if c.text_encoder not in ("none", ""):
        dim = data_info.get("text_dim") or text_dim_of(cfg)
        changes["context_dim"] = dim
        changes["mid_attention"] = True
        if c.cross_attn_resolutions is not None:
            changes["cross_attn_resolutions"] = tuple(c.cross_attn_resolutions)
    if c.image not in IMAGE_CONDITIONS:
        raise choice_error("cond.image", c.image, IMAGE_CONDITIONS)
    if c.image == "superres":
        changes["image_cond_channels"] = ucfg.in_channels
    net = UNet(dataclasses.replace(ucfg, **changes))
    if c.text_encoder == "learned":
        from .text import LearnedTextEncoder, TextConditionedNet

        enc = LearnedTextEncoder(c.learned_dim, layers=c.learned_layers, max_tokens=c.max_tokens)
        return TextConditionedNet(net, enc)
    return net


# -- contexts ----------------------------------------------------------------------------------


def null_cond(cond: Cond, num_classes: int) -> Cond:
    """The null context with the same keys and shapes as ``cond``."""
    if cond is None:
        return None
    out = {}
    for k, v in cond.items():
        if k == "class":
            out[k] = torch.full_like(v, num_classes)
        elif k == "text_mask":
            out[k] = torch.zeros_like(v, dtype=torch.bool)
        else:  # text features, token ids, image: zeros
            out[k] = torch.zeros_like(v)
    return out


def drop_cond(cond: Cond, p: float, generator: Generator, num_classes: int) -> Cond:
    """Replace each key's entry by its null with probability ``p``, independently per key and sample.

    ``text`` and ``text_mask`` (or ``text_ids``) count as one key. Nothing is drawn when
    ``p == 0`` or there is no context, so an unconditional run keeps its random stream.
    """
    if cond is None or p <= 0:
        return cond
    null = null_cond(cond, num_classes)
    out = dict(cond)
    groups = [["class"], ["text", "text_ids", "text_mask"], ["image"]]
    for keys in groups:
        present = [k for k in keys if k in cond]
        if not present:
            continue
        B = cond[present[0]].shape[0]
        ref = cond[present[0]]
        drop = rand((B,), generator=generator, device=ref.device) < p  # (B,)
        for k in present:
            d = drop.view(-1, *([1] * (cond[k].ndim - 1)))
            out[k] = torch.where(d, null[k], cond[k])
    return out


def make_lowres(x: Tensor, factor: int) -> Tensor:
    """(B, C, H, W) -> the same size after an area downsample by ``factor`` and a bicubic upsample."""
    if factor < 1:
        raise ValueError(f"cond.superres_factor must be >= 1, got {factor}")
    H, W = x.shape[-2:]
    if H % factor or W % factor:
        raise ValueError(f"cond.superres_factor={factor} must divide the image size {H}x{W}")
    low = F.avg_pool2d(x, factor)  # (B, C, H/f, W/f)
    return upsample_to(low, (H, W))


def upsample_to(low: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(low.shape[-2:]) == tuple(size):
        return low
    return F.interpolate(low, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)


def class_index(value: str | int, class_names: Sequence[str]) -> int:
    """A class given by name or index; an error naming the accepted ones otherwise."""
    names = list(class_names)
    s = str(value).strip()
    if s in names:
        return names.index(s)
    if s.lstrip("-").isdigit() and 0 <= int(s) < len(names):
        return int(s)
    raise ValueError(
        f"unknown class {s!r}; accepted: the names {', '.join(names[:50])}{' ...' if len(names) > 50 else ''} "
        f"or an index 0..{len(names) - 1}"
    )


# -- training ----------------------------------------------------------------------------------


class Conditioner:
    """Per-item contexts of a data set, precomputed once, and the batch contexts of training."""

    def __init__(self, cfg: Config, data, out: str | Path, device: torch.device, *, progress: bool = True):
        c = cfg.cond
        self.cfg, self.device = cfg, device
        self.p = float(c.dropout)
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"cond.dropout must be in [0, 1], got {c.dropout}")
        self.info: dict = {}
        self.num_classes = 0
        self.labels = self.ids = self.feats = self.mask = self.index = self.lowres = None
        if c.classes:
            if data.labels is None or not data.class_names:
                raise ValueError(
                    f"cond.classes=true but {data.source!r} has no class labels: use a folder with one sub-folder "
                    "per class, a NAME.labels.npy beside NAME.npy, or builtin:digits"
                )
            self.num_classes = len(data.class_names)
            self.labels = data.labels.to(device)
        if c.text_encoder not in ("none", ""):
            if not data.has_captions:
                raise ValueError(
                    f"cond.text_encoder={c.text_encoder!r} but {data.source!r} has no captions: give same-stem .txt "
                    "files or a metadata.jsonl (file_name, text), or use builtin:shapes"
                )
            captions = list(data.captions)
            if c.text_encoder == "learned":
                from .text import HashTokenizer

                tok = HashTokenizer(max_tokens=c.max_tokens)
                have = [i for i, t in enumerate(captions) if t]
                ids = torch.zeros(len(captions), c.max_tokens, dtype=torch.long)
                if have:
                    ids[have] = tok([captions[i] for i in have])[0]
                self.ids = ids.to(device)
                self.info["text_dim"] = c.learned_dim
            else:
                from .text import cached_caption_features, get_text_encoder

                enc = get_text_encoder(c.text_encoder, max_tokens=c.max_tokens, device=device)
                feats, mask, index, _ = cached_caption_features(enc, captions, out, progress=progress)
                # Row U is the null caption (zero features, no token).
                self.feats = torch.cat([feats, feats.new_zeros(1, *feats.shape[1:])]).to(device)
                self.mask = torch.cat([mask, mask.new_zeros(1, mask.shape[1])]).to(device)
                self.index = torch.where(index < 0, len(feats), index).to(device)
                self.info["text_dim"] = enc.dim
        if c.image not in IMAGE_CONDITIONS:
            raise choice_error("cond.image", c.image, IMAGE_CONDITIONS)
        if c.image == "superres":
            if data.kind != "image":
                raise ValueError("cond.image=superres needs image data")
            self.lowres = make_lowres(data.x, c.superres_factor).to(device)

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.labels, self.ids, self.feats, self.lowres))

    def items(self, idx: Tensor) -> Cond:
        """The context of the items ``idx`` (a LongTensor on the device), before dropout."""
        if not self.active:
            return None
        cond = {}
        if self.labels is not None:
            cond["class"] = self.labels[idx]
        if self.ids is not None:
            ids = self.ids[idx]
            cond["text_ids"], cond["text_mask"] = ids, ids != 0
        if self.feats is not None:
            rows = self.index[idx]
            cond["text"], cond["text_mask"] = self.feats[rows].float(), self.mask[rows]
        if self.lowres is not None:
            cond["image"] = self.lowres[idx]
        return cond

    def batch(self, idx: Tensor, generator: Generator) -> Cond:
        """The training context of the items ``idx``, with condition dropout applied."""
        return drop_cond(self.items(idx), self.p, generator, self.num_classes)

    @property
    def guidance(self) -> float:
        """The guidance of training grids: the configured scale for class or text, 1 for images only."""
        if self.labels is None and self.ids is None and self.feats is None:
            return 1.0
        return float(self.cfg.cond.guidance)

    def null(self, cond: Cond) -> Cond:
        return null_cond(cond, self.num_classes)

    def grid_cond(self, n: int) -> Cond:
        """Contexts of a training grid: the classes in turn, and captions / images spread over the data."""
        if not self.active:
            return None
        N = len(self.labels if self.labels is not None else self.ids if self.ids is not None
                 else self.index if self.index is not None else self.lowres)
        idx = torch.linspace(0, N - 1, n).round().long().to(self.device)
        cond = dict(self.items(idx))
        if self.labels is not None:
            cond["class"] = torch.arange(n, device=self.device) % self.num_classes
        return cond


# -- sampling ----------------------------------------------------------------------------------


def load_cond_image(path: str | Path, channels: int, size: tuple[int, int]) -> Tensor:
    """An image file as (1, channels, H, W) in [-1, 1], resized (bicubic) to the model's size."""
    import numpy as np
    from PIL import Image, ImageOps

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--image {str(path)!r} does not exist: give an image file (PNG, JPEG, ...)")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img = img.convert("L" if channels == 1 else "RGB")
            a = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    except OSError as e:
        raise ValueError(f"--image {str(path)!r} cannot be read as an image ({e})") from None
    t = torch.from_numpy(a)
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]  # (1, C, h, w)
    if tuple(t.shape[-2:]) != tuple(size):
        shrink = t.shape[-2] > size[0] or t.shape[-1] > size[1]
        t = F.interpolate(t, size=tuple(size), mode="bicubic", align_corners=False, antialias=shrink)
    return t.clamp(-1, 1)


class SampleContext:
    """The contexts ``unblur sample`` asks for: classes, prompts, a negative prompt, an image.

    Every combination of the given classes and prompts gets ``n`` samples; a class-conditional
    run given no class draws the classes in turn. ``guidance`` defaults to ``cond.guidance``
    for class and text contexts and to 1 for an image alone.
    """

    def __init__(self, cfg: Config, info: dict, net: nn.Module, device: torch.device, *,
                 classes: Sequence[str] = (), prompts: Sequence[str] = (), negative: str | None = None,
                 image: str | None = None, guidance: float | None = None, run: str = "this run"):
        c = cfg.cond
        self.cfg, self.net, self.device = cfg, net, device
        names = info.get("class_names") or []
        self.num_classes = len(names) if c.classes else 0
        self.class_names = names
        if classes and not c.classes:
            raise ValueError(f"{run} is not class-conditional (it was trained with cond.classes=false): drop --class")
        self.classes = [class_index(v, names) for v in classes]
        has_text = c.text_encoder not in ("none", "")
        if (prompts or negative is not None) and not has_text:
            raise ValueError(f"{run} has no text conditioning (cond.text_encoder=none): drop --prompt")
        from .text.encoders import check_prompts

        self.prompts = check_prompts(prompts) if prompts else []
        self.negative = check_prompts([negative])[0] if negative is not None else None
        if image is not None and c.image == "none":
            raise ValueError(f"{run} takes no image (cond.image=none): drop --image")
        self.image, self.image_path = None, image
        if image is not None:
            C, H, W = info["shape"]
            self.image = load_cond_image(image, C, (H, W)).to(device)
        self.learned = c.text_encoder == "learned"
        self._text: dict[str, tuple[Tensor, Tensor]] = {}
        wanted = self.prompts + ([self.negative] if self.negative is not None else [])
        if wanted:
            if self.learned:
                from .text import HashTokenizer

                ids, mask = HashTokenizer(max_tokens=c.max_tokens)(wanted)
            else:
                from .text import get_text_encoder

                enc = get_text_encoder(c.text_encoder, max_tokens=c.max_tokens, device=device)
                if info.get("text_dim") not in (None, enc.dim):
                    raise ValueError(f"{run} was trained on {info['text_dim']}-wide text features, but "
                                     f"{c.text_encoder!r} gives {enc.dim}")
                ids, mask = enc.encode(wanted)
            self._text = {p: (ids[k], mask[k]) for k, p in enumerate(wanted)}
        self.conditional = bool(self.classes or self.prompts or self.image is not None or self.num_classes)
        if guidance is not None and not self.conditional:
            raise ValueError(f"--guidance needs a context to guide towards, and {run} is given none: add --class, "
                             "--prompt or --image, or drop --guidance")
        if guidance is None:
            guidance = float(c.guidance) if (self.num_classes or self.prompts) else 1.0
        self.guidance = float(guidance)
        if self.guidance < 0:
            raise ValueError(f"--guidance must be >= 0, got {guidance}")

    def requests(self, n: int) -> list[dict]:
        """One dict per sample: ``{"class": index or None, "prompt": text or None}``."""
        if self.classes or self.prompts:
            combos = [(k, p) for k in (self.classes or [None]) for p in (self.prompts or [None])]
            return [{"class": k, "prompt": p} for k, p in combos for _ in range(n)]
        if self.num_classes:
            return [{"class": i % self.num_classes, "prompt": None} for i in range(n)]
        return [{"class": None, "prompt": None} for _ in range(n)]

    def record(self, req: dict) -> dict:
        """What samples.jsonl says about a sample's context."""
        out: dict = {"guidance": self.guidance if self.conditional else None}
        if req["class"] is not None:
            out["class"] = req["class"]
            out["class_name"] = self.class_names[req["class"]]
        if req["prompt"] is not None:
            out["prompt"] = req["prompt"]
        if self.negative is not None:
            out["negative_prompt"] = self.negative
        if self.image_path is not None:
            out["image"] = str(self.image_path)
        return out

    def cond(self, reqs: list[dict]) -> tuple[Cond, Cond]:
        """(context, unconditional context) of a batch of requests, same keys and shapes."""
        if not self.conditional:
            return None, None
        B, dev = len(reqs), self.device
        cond: dict[str, Tensor] = {}
        if self.num_classes:
            cond["class"] = torch.tensor([r["class"] for r in reqs], dtype=torch.long, device=dev)
        if self._text:
            some = next(iter(self._text.values()))
            rows, masks = [], []
            for r in reqs:
                f, m = self._text[r["prompt"]] if r["prompt"] is not None else (torch.zeros_like(some[0]),
                                                                                  torch.zeros_like(some[1]))
                rows.append(f)
                masks.append(m)
            key = "text_ids" if self.learned else "text"
            cond[key] = torch.stack(rows).to(dev)
            cond["text_mask"] = torch.stack(masks).to(dev).bool()
        if self.image is not None:
            cond["image"] = self.image.expand(B, -1, -1, -1)
        uncond = null_cond(cond, self.num_classes)
        if self.negative is not None:
            f, m = self._text[self.negative]
            key = "text_ids" if self.learned else "text"
            uncond[key] = f[None].expand(B, *f.shape).to(dev)
            uncond["text_mask"] = m[None].expand(B, *m.shape).to(dev).bool()
        return cond, uncond

    def denoiser(self, base, cond: Cond, uncond: Cond):
        """``base`` guided towards ``cond`` (one batched forward for both halves)."""
        if cond is None or self.guidance == 1.0:
            return base
        from .guidance import cfg as guide

        return guide(base, self.guidance, uncond)
