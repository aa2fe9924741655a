"""The unCLIP chain as runs: a decoder run, its contrastive encoder, and optionally a prior run.

    chain = Unclip.open("runs/decoder", prior="runs/prior")
    z, labels = chain.from_prompts(["a red circle"], n=4, guidance=3.0, seed=0)   # text -> prior -> embeddings
    for batch in chain.decoder.sample(1, embeddings=z, embedding_labels=labels, seed=0):
        ...

``from_prompts`` (the prior), ``variations`` (an image's own embedding), ``interpolation``
(slerp between two images' embeddings) and ``text_diff`` (an image's embedding moved towards a
new caption) each return (embeddings (K, E), one label per embedding); the decoder turns them
into images through ``Run.sample`` like any other context, with its own sampler, steps and
guidance. ``shared_seed=True`` there gives every image the same noise (interpolation strips).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..pipelines.unclip import ClipEncoder, check_same_encoder, clip_scores, load_clip, prior_scale, slerp, text_diff
from .run import Run


class Unclip:
    """A decoder run conditioned on a contrastive encoder's image embeddings, that encoder, and a prior."""

    def __init__(self, decoder: Run, prior: Run | None = None, clip: ClipEncoder | None = None):
        rec = decoder.data.get("clip")
        if not rec or rec.get("role") == "prior":
            what = "a prior" if rec else "not conditioned on a contrastive encoder's image embeddings"
            raise ValueError(f"{decoder.name} is {what}: the chain needs a decoder trained with `unblur train --clip "
                             "ENCODER` (give the prior with --prior)")
        if prior is not None:
            check_same_encoder(prior.data, decoder.data, prior=prior.name, decoder=decoder.name)
        if clip is None:
            path = Path(rec["path"])
            if not path.exists():
                raise ValueError(f"{decoder.name} was trained with the encoder {str(path)!r}, which is not there any "
                                 "more: put the encoder run back at that path")
            clip = load_clip(path, device=decoder.device)
        if clip.sha256 != rec.get("sha256"):
            raise ValueError(f"the encoder {str(clip.path)!r} has changed since {decoder.name} was trained (sha256 "
                             f"{clip.sha256[:12]}..., the run expects {str(rec.get('sha256'))[:12]}...)")
        self.decoder, self.prior, self.clip = decoder, prior, clip

    @classmethod
    def open(cls, decoder: str | Path, *, prior: str | Path | None = None,
             device: str | torch.device = "auto") -> Unclip:
        dec = Run.load(decoder, device=device)
        pri = Run.load(prior, device=dec.device) if prior is not None else None
        return cls(dec, pri)

    # -- embeddings ---------------------------------------------------------------------------
    def text_embeddings(self, prompts: Sequence[str]) -> Tensor:
        """The encoder's unit caption embeddings (K, E) of ``prompts``."""
        from ..text.encoders import check_prompts

        return self.clip.embed_texts(check_prompts(list(prompts)))

    def image_embeddings(self, images: Tensor) -> Tensor:
        """The encoder's unit image embeddings (B, E) of images (B, C, H, W) in [-1, 1]."""
        return self.clip.embed_images(images)

    def from_prompts(self, prompts: Sequence[str], n: int = 1, *, sampler: str | None = None,
                     steps: int | None = None, guidance: float | None = None, seed: int = 0,
                     callback=None) -> tuple[Tensor, list[str]]:
        """``n`` image embeddings per prompt drawn from the prior given its caption embedding
        (prompt-major order), renormalised to the unit sphere, and their labels."""
        if self.prior is None:
            raise ValueError(f"prompts go through a prior: give one (--prior RUN) for {self.decoder.name}")
        z_txt = self.text_embeddings(prompts)
        xs = [b.x for b in self.prior.sample(n, embeddings=z_txt, embedding_labels=list(prompts), guidance=guidance,
                                             sampler=sampler, steps=steps, seed=seed, batch=max(1, n * len(prompts)),
                                             callback=callback)]
        z = torch.cat(xs) / prior_scale(self.clip.dim)
        z = torch.nn.functional.normalize(z, dim=-1)
        labels = [f"prompt {p!r} (prior sample {k})" for p in prompts for k in range(n)]
        return z, labels

    def variations(self, images: Tensor, names: Sequence[str] | None = None) -> tuple[Tensor, list[str]]:
        """The images' own embeddings: decoded with new noise, they are variations of the images."""
        z = self.image_embeddings(images)
        names = list(names) if names is not None else [f"image {i}" for i in range(len(z))]
        return z, [f"variation of {name}" for name in names]

    def interpolation(self, a: Tensor, b: Tensor, frames: int, names: tuple[str, str] = ("A", "B")
                      ) -> tuple[Tensor, list[str]]:
        """``frames`` embeddings on the great circle from image a's to image b's (each (1, C, H, W))."""
        if frames < 2:
            raise ValueError(f"an interpolation needs at least 2 frames, got {frames}")
        za, zb = self.image_embeddings(torch.cat([a, b]))
        t = torch.linspace(0, 1, frames)
        return slerp(za.expand(frames, -1), zb.expand(frames, -1), t), \
            [f"slerp({names[0]}, {names[1]}, {v:.3f})" for v in t.tolist()]

    def text_diff(self, image: Tensor, source: str, target: str, frames: int, *, amount: float = 0.5,
                  name: str = "the image") -> tuple[Tensor, list[str]]:
        """``frames`` embeddings from the image's own (amount 0) towards ``target`` (up to ``amount``)."""
        if frames < 2:
            raise ValueError(f"a text diff needs at least 2 frames, got {frames}")
        if not 0 < amount <= 1:
            raise ValueError(f"the text diff's amount must lie in (0, 1], got {amount}")
        zi = self.image_embeddings(image)
        zs, zt = self.text_embeddings([source, target])
        t = torch.linspace(0, amount, frames)
        z = text_diff(zi.expand(frames, -1), zs.expand(frames, -1), zt.expand(frames, -1), t)
        return z, [f"{name} moved from {source!r} towards {target!r} by {v:.3f}" for v in t.tolist()]

    def clip_score(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        """Cosine similarity (B,) of each image to its prompt under the encoder (a CLIP score)."""
        from ..text.encoders import check_prompts

        return clip_scores(self.clip, images, check_prompts(list(prompts)))


__all__ = ["Unclip"]
