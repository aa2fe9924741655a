"""The DALL-E 2 chain (Ramesh et al. 2022, "unCLIP"): a contrastive encoder, a prior, a decoder.

* The **encoder** is a run of ``model.kind=clip`` (``nets.clip.ClipModel``); ``load_clip``
  opens it as a ``ClipEncoder`` that embeds images and captions into unit vectors.
* The **prior** is a Gaussian diffusion run over the encoder's image embeddings, scaled by
  sqrt(E) so that each coordinate has about unit variance (DALLE2-pytorch's
  ``image_embed_scale``), conditioned on the text embedding (``prior_training_data``).
* The **decoder** is an image run conditioned on the image embedding of each training image
  (``attach_image_embeddings``; the U-Net's ``embedding`` input).

Both the prior and the decoder record the encoder they were trained with (path, SHA-256,
width, and whether the run is the prior) in ``DataInfo.clip``, a ``types.ClipRecord``;
``check_same_encoder`` refuses a prior and a decoder that were trained with different encoders.
The embedding-space operations of the paper are here too: ``slerp`` (interpolations, sec. 3.2)
and ``text_diff`` (sec. 3.3).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import Tensor

from ..config import Config
from ..nets.clip import ClipModel, ClipNetConfig, pool_tokens
from ..types import ClipRecord
from ..utils import resolve_device

RUN_MODEL_FILE = "model.safetensors"
EMBED_BATCH = 256


def clip_net_config(cfg: Config, channels: int, text_dim: int) -> ClipNetConfig:
    c = cfg.clip
    return ClipNetConfig(channels=channels, embed_dim=c.embed_dim, widths=tuple(c.widths), text_dim=text_dim,
                         text_hidden=c.text_hidden, text_head=c.text_head, temperature=c.temperature,
                         max_logit_scale=c.max_logit_scale,
                         learned_text=c.text_encoder == "learned", max_tokens=c.max_tokens,
                         learned_layers=c.learned_layers)


def clip_text_dim(cfg: Config) -> int:
    """The width of the caption features the encoder's text tower reads."""
    from ..text import text_feature_dim

    return text_feature_dim(cfg.clip.text_encoder, learned_dim=cfg.clip.learned_dim)


def build_clip(cfg: Config, data_info) -> ClipModel:
    """The untrained ``ClipModel`` of a run's config for its images (``data_info.shape`` (C, H, W))."""
    if data_info.kind != "image":
        raise ValueError(f"model.kind=clip needs images with captions, but {data_info.source!r} holds vectors")
    text_dim = data_info.get("text_dim") or clip_text_dim(cfg)
    return ClipModel(clip_net_config(cfg, data_info.shape[0], text_dim))


def caption_inputs(cfg: Config, captions: Sequence[str], *, device: torch.device | str = "cpu",
                   cache: str | Path | None = None, progress: bool = False) -> tuple[Tensor, Tensor]:
    """What the text tower reads for ``captions``: (pooled frozen features (N, 1, D), mask (N, 1))
    or, for the learned encoder, (token ids (N, L), mask (N, L)). Frozen features are computed
    once per distinct caption (cached in ``cache`` when given)."""
    c = cfg.clip
    if c.text_encoder == "learned":
        from ..text import HashTokenizer

        return HashTokenizer(max_tokens=c.max_tokens)(list(captions))
    from ..text import cached_caption_features, get_text_encoder

    enc = get_text_encoder(c.text_encoder, max_tokens=c.max_tokens, device=device)
    if cache is not None:
        feats, mask, index, _ = cached_caption_features(enc, list(captions), cache, progress=progress)
        pooled = pool_tokens(feats.float(), mask)  # (U, D)
        out = pooled[index.clamp_min(0)]  # (N, D)
    else:
        f, m = enc.encode(list(captions))
        out = pool_tokens(f.float(), m)
    # Pooled once here: the tower's masked mean of one token with mask 1 is the token itself.
    return out[:, None, :], torch.ones(len(out), 1, dtype=torch.bool)


@dataclass
class ClipEncoder:
    """A trained contrastive encoder: ``embed_images`` and ``embed_texts`` give unit vectors."""

    model: ClipModel
    config: Config
    path: Path
    sha256: str
    device: torch.device
    image_shape: tuple[int, ...]  # (C, H, W) of the images it was trained on

    @property
    def dim(self) -> int:
        return self.model.cfg.embed_dim

    def record(self, role: str | None = None, *, for_prior: bool | None = None) -> ClipRecord:
        """What a prior (``for_prior=True``) or a decoder (False) remembers about the encoder it was
        trained with; ``role`` ("prior" or "decoder", the word a run's JSON holds) says the same."""
        if (role is None) == (for_prior is None):
            raise TypeError("give one of role= and for_prior= to ClipEncoder.record")
        if for_prior is None:
            for_prior = ClipRecord.is_prior_role(role)
        return ClipRecord(path=str(self.path), sha256=self.sha256, dim=self.dim, for_prior=bool(for_prior),
                          image_shape=tuple(self.image_shape))

    def check_images(self, x: Tensor, what: str = "the images") -> None:
        C, H, W = self.image_shape
        if x.ndim != 4 or tuple(x.shape[1:]) != (C, H, W):
            raise ValueError(f"the encoder {str(self.path)!r} embeds {C}x{H}x{W} images, but {what} have shape "
                             f"{tuple(x.shape[1:])}: resize them to {H}x{W} with {C} channel(s)")

    @torch.no_grad()
    def embed_images(self, x: Tensor, *, batch: int = EMBED_BATCH) -> Tensor:
        """Unit embeddings (N, E) on the CPU of images x (N, C, H, W) in [-1, 1]."""
        self.check_images(x)
        out = [self.model.embed_images(chunk.to(self.device).float()).cpu() for chunk in x.split(batch)]
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    @torch.no_grad()
    def embed_texts(self, prompts: Sequence[str], *, cache: str | Path | None = None) -> Tensor:
        """Unit embeddings (N, E) on the CPU of captions or prompts."""
        if not prompts:
            return torch.zeros(0, self.dim)
        text, mask = caption_inputs(self.config, prompts, device=self.device, cache=cache)
        out = [self.model.embed_texts(t.to(self.device), m.to(self.device)).cpu()
               for t, m in zip(text.split(EMBED_BATCH), mask.split(EMBED_BATCH))]
        return torch.cat(out)


def load_clip(path: str | Path, *, device: str | torch.device = "cpu") -> ClipEncoder:
    """Open a contrastive encoder run (its folder or ``model.safetensors``); anything else is a
    ValueError naming the path and what to give instead."""
    p = Path(path).expanduser()
    file = p / RUN_MODEL_FILE if p.is_dir() else p
    if not file.is_file():
        raise ValueError(f"no contrastive encoder at {str(path)!r}: give a run trained with `unblur train --model "
                         "clip --out DIR`")
    try:
        data = file.read_bytes()
        state = st_load(data)
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
        cfg = Config.from_dict(json.loads(meta["config"]))
        info = json.loads(meta.get("data_info", "{}"))
    except (SafetensorError, ValueError, KeyError, TypeError, json.JSONDecodeError, OSError) as e:
        raise ValueError(f"{str(file)!r} is not a readable unblur run ({e!r}); it may be truncated") from None
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    shape = tuple(int(v) for v in info["shape"])
    model = ClipModel(clip_net_config(cfg, shape[0], int(info.get("text_dim") or clip_text_dim(cfg))))
    if set(state) != set(model.state_dict()):  # the weights say what the run is: another kind has others
        raise ValueError(f"{str(file.parent)!r} is a model.kind={cfg.model.kind} run, not a contrastive encoder: give "
                         "a run trained with `unblur train --model clip`")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{str(file)!r}: its weights do not fit its config ({str(e).splitlines()[0]})") from None
    model = model.to(dev).eval().requires_grad_(False)
    digest = hashlib.sha256(data).hexdigest()
    return ClipEncoder(model, cfg, file.parent.resolve(), digest, dev, shape)


def prior_scale(dim: int) -> float:
    """The factor between unit embeddings and the prior's data: sqrt(E) (unit variance per coordinate)."""
    return math.sqrt(dim)


def _images_of(data) -> Tensor:
    """The pixels of a data set (a latent set keeps them in ``pixels``)."""
    return data.pixels if getattr(data, "pixels", None) is not None else data.x


def _check_encoder_record(enc: ClipEncoder, recorded: ClipRecord | Mapping | None) -> None:
    recorded = ClipRecord.of(recorded)
    if recorded is not None and recorded.sha256 and recorded.sha256 != enc.sha256:
        raise ValueError(f"the encoder {str(enc.path)!r} has changed since this run was trained: its weights have "
                         f"sha256 {enc.sha256[:16]}..., the run expects {recorded.sha256[:16]}...")


def attach_image_embeddings(data, source: str, *, device: torch.device | str = "cpu",
                            recorded: ClipRecord | Mapping | None = None, say: Callable[[str], None] = print):
    """(encoder, ``data`` with ``embeddings`` = the encoder's image embedding of every image):
    the training contexts of a decoder. ``recorded``: a resumed run's ``DataInfo.clip`` (or its
    dict form from a resume state), whose hash the encoder must have."""
    if data.kind != "image":
        raise ValueError(f"cond.clip conditions an image decoder, but {data.source!r} holds vectors")
    enc = load_clip(source, device=device)
    _check_encoder_record(enc, recorded)
    images = _images_of(data)
    enc.check_images(images, f"the images of {data.source!r}")
    z = enc.embed_images(images)
    say(f"embeddings: {len(z)} images -> {enc.dim}-wide image embeddings with the encoder {enc.path} "
        f"(sha256 {enc.sha256[:12]})")
    return enc, replace(data, embeddings=z)


def prior_training_data(data, source: str, *, device: torch.device | str = "cpu",
                        recorded: ClipRecord | Mapping | None = None, cache: str | Path | None = None,
                        say: Callable[[str], None] = print):
    """(encoder, the prior's training data): vectors x = sqrt(E) * image embedding of each image,
    with ``embeddings`` = the text embedding of its caption (what the prior is conditioned on).
    ``recorded`` as in ``attach_image_embeddings``."""
    from ..data import Data

    if data.kind != "image" or not data.has_captions:
        raise ValueError(f"a prior learns image embeddings from caption embeddings: it needs captioned images, but "
                         f"{data.source!r} has {'no captions' if data.kind == 'image' else 'vectors'}")
    missing = sum(1 for c in data.captions if not c)
    if missing:
        raise ValueError(f"{missing} of {len(data)} images of {data.source!r} have no caption: a prior needs a caption "
                         "per image (give each a same-stem .txt file or a metadata.jsonl line)")
    enc = load_clip(source, device=device)
    _check_encoder_record(enc, recorded)
    images = _images_of(data)
    enc.check_images(images, f"the images of {data.source!r}")
    z_img = enc.embed_images(images)
    z_txt = enc.embed_texts(list(data.captions), cache=cache)
    cos = float((z_img * z_txt).sum(1).mean())
    say(f"embeddings: {len(z_img)} image-caption pairs -> {enc.dim}-wide embeddings with the encoder {enc.path} "
        f"(sha256 {enc.sha256[:12]}); mean image-caption cosine {cos:.3f}")
    x = (z_img * prior_scale(enc.dim)).float()
    return enc, Data(x=x, kind="vector", source=data.source, labels=data.labels, class_names=data.class_names,
                     captions=data.captions, embeddings=z_txt.float(),
                     notes=[*data.notes, f"image embeddings of {enc.path}"])


def check_same_encoder(prior_info, decoder_info, *, prior: str, decoder: str) -> None:
    """Refuse a prior and a decoder (their ``DataInfo``) trained with different contrastive encoders."""
    p, d = prior_info.clip, decoder_info.clip
    if d is None:
        raise ValueError(f"{decoder} is not conditioned on a contrastive encoder's image embeddings (it was trained "
                         "without --clip): train a decoder with `unblur train --clip ENCODER ...`")
    if p is None or not p.for_prior:
        raise ValueError(f"{prior} is not a prior: give a run trained with `unblur train --model prior --clip ENCODER`")
    if p.sha256 != d.sha256:
        raise ValueError(f"the prior {prior} was trained with the encoder {p.path!r} (sha256 {p.sha256[:12]}...), "
                         f"the decoder {decoder} with {d.path!r} (sha256 {d.sha256[:12]}...): a prior's embeddings "
                         "only mean something to a decoder of the same encoder")


def clip_scores(clip: ClipEncoder, images: Tensor, prompts: Sequence[str]) -> Tensor:
    """Cosine similarity (B,) of image i (B, C, H, W in [-1, 1]) to prompt i under ``clip``
    (the CLIP score of Hessel et al. 2021 before their rescaling 2.5 * max(cos, 0))."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images for {len(prompts)} prompts: give one prompt per image")
    zi = clip.embed_images(images)
    zt = clip.embed_texts(list(prompts))
    return (zi * zt).sum(-1)


def slerp(a: Tensor, b: Tensor, t: Tensor | float) -> Tensor:
    """Spherical interpolation between unit vectors a and b (..., E) at t in [0, 1] (broadcast):
    sin((1 - t) w) / sin w * a + sin(t w) / sin w * b with cos w = <a, b> (Shoemake 1985); the
    straight line, renormalised, where a and b (nearly) coincide."""
    a, b = F.normalize(a.double(), dim=-1), F.normalize(b.double(), dim=-1)
    t = torch.as_tensor(t, dtype=torch.float64)
    if t.ndim:
        t = t[..., None]
    dot = (a * b).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    w = torch.arccos(dot)
    s = torch.sin(w)
    near = s.abs() < 1e-6
    safe = torch.where(near, torch.ones_like(s), s)
    out = torch.where(near, (1 - t) * a + t * b, (torch.sin((1 - t) * w) * a + torch.sin(t * w) * b) / safe)
    return F.normalize(out, dim=-1).float()


def text_diff(image: Tensor, source: Tensor, target: Tensor, amount: Tensor | float) -> Tensor:
    """Move an image embedding towards a new caption (Ramesh et al. 2022, sec. 3.3): the text diff
    d = normalise(z_t(target) - z_t(source)), and slerp(z_i, d, amount); amount 0 is the image."""
    d = F.normalize(target.double() - source.double(), dim=-1)
    return slerp(image, d.float(), amount)


__all__ = [
    "ClipEncoder",
    "attach_image_embeddings",
    "build_clip",
    "caption_inputs",
    "check_same_encoder",
    "clip_scores",
    "load_clip",
    "prior_scale",
    "prior_training_data",
    "slerp",
    "text_diff",
]
