"""The unCLIP chain as runs: a decoder run, its contrastive encoder, and optionally a prior run.

    chain = Unclip.open("runs/decoder", prior="runs/prior")
    for batch in chain.sample(4, prompts=["a red circle"], steps=20, prior_steps=30, seed=0):
        ...  # batch.x (b, C, H, W) in [-1, 1]; batch.records say what each image is

``Unclip.sample`` is the chain's one door for the four requests of the paper, each a stream of
``SampleBatch``es like ``Run.sample``'s:

* ``prompts``: ``n`` image embeddings per prompt drawn from the prior given the prompt's text
  embedding, each decoded once;
* ``variations_of`` images: each image's own embedding decoded ``n`` times with new noise;
* ``interpolate`` two images: ``frames`` embeddings on the great circle between theirs (sec. 3.2),
  all decoded with the same noise;
* ``variations_of`` one image with ``text_diff=(FROM, TO)``: ``frames`` embeddings moved from the
  image's own towards the text diff of the two captions (sec. 3.3), the same noise.

The request is checked when ``sample`` is called; the embeddings (the prior's draws, or the
encoder's of the images) are made when the stream is first iterated, then the decoder draws the
images through ``Run.sample`` with its own sampler, steps and guidance. Each record gains what the
sample is (``RECORD_FIELDS``). The steps of the chain are methods too: ``from_prompts``,
``variations``, ``interpolation`` and ``text_diff`` return (embeddings (K, E), a label each).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..pipelines.unclip import ClipEncoder, check_same_encoder, clip_scores, load_clip, prior_scale, slerp, text_diff
from ..text.encoders import check_prompts
from ..types import Callback
from .run import Run, SampleBatch, SampleStream, SamplingPlan

MODES = ("prompt", "variation", "interpolation", "text_diff")  # the values of a record's "unclip" field
RECORD_FIELDS = ("unclip", "prompt", "prior", "prior_sample", "prior_seed", "prior_sampler", "prior_steps",
                 "prior_grid", "prior_guidance", "image_name", "images", "position", "text_from", "text_to",
                 "amount")  # what ``Unclip.sample`` adds to a decoder's sample records


def is_decoder(run: Run) -> bool:
    """Whether ``run`` draws images of a contrastive encoder's image embeddings (an unCLIP decoder)."""
    return run.data.clip is not None and not run.data.clip.for_prior


def is_prior(run: Run) -> bool:
    """Whether ``run`` draws a contrastive encoder's image embeddings from text embeddings (a prior)."""
    return run.data.clip is not None and run.data.clip.for_prior


def chain_fields(record: dict) -> dict[str, Any]:
    """The fields ``Unclip.sample`` added to a sample's record (for the settings a PNG carries);
    none for a record of another kind of request."""
    if "unclip" not in record:
        return {}
    return {k: record[k] for k in RECORD_FIELDS if record.get(k) is not None}


@dataclass
class UnclipStream:
    """A checked unCLIP request (``Unclip.sample``): iterating it makes the embeddings once, then
    the decoder's batches, as ``SampleStream`` does for ``Run.sample``."""

    chain: Unclip
    plan: SamplingPlan  # the decoder's sampler, steps and grid
    mode: str  # one of MODES
    count: int  # embeddings the request decodes
    per: int  # decoder samples per embedding
    make: Callable[[UnclipStream], tuple[Tensor, list[str], list[dict]]]  # (embeddings, labels, record fields)
    guidance: float | None  # the decoder's (None: its own default)
    seed: int
    batch: int
    shared_seed: bool = False  # every image uses ``seed``: a strip
    start: int = 0
    callback: Callback | None = None  # the decoder's sampler steps
    prior_callback: Callback | None = None  # the prior's sampler steps (prompts)
    prior_plan: SamplingPlan | None = None  # the prior's sampler, steps and grid (prompts)
    _made: tuple[Tensor, list[str], list[dict]] | None = field(default=None, repr=False)

    @property
    def total(self) -> int:
        """Images in the whole request."""
        return self.count * self.per

    def embeddings(self) -> tuple[Tensor, list[str], list[dict]]:
        """(embeddings (K, E), their labels, the record fields of each), made on the first call."""
        if self._made is None:
            self._made = self.make(self)
        return self._made

    def __iter__(self) -> Iterator[SampleBatch]:
        return self.starting_at(self.start)

    def starting_at(self, start: int) -> Iterator[SampleBatch]:
        """The batches from image ``start`` on (the embeddings are the same whatever the start)."""
        if not 0 <= start <= self.total:
            raise ValueError(f"start must lie in 0..{self.total}, got {start}")
        return self._batches(start)

    def _batches(self, start: int) -> Iterator[SampleBatch]:
        z, labels, about = self.embeddings()
        p = self.plan
        stream = self.chain.decoder.sample(self.per, embeddings=z, embedding_labels=labels, guidance=self.guidance,
                                           sampler=p.sampler, steps=p.steps, grid=p.grid, seed=self.seed,
                                           batch=self.batch, callback=self.callback, shared_seed=self.shared_seed)
        for b in stream.starting_at(start):
            for r in b.records:
                r.update(about[r["embedding"]])
            yield b


class Unclip:
    """A decoder run conditioned on a contrastive encoder's image embeddings, that encoder, and a prior.

    ``clip``: the encoder, when it is not at the path the decoder recorded (it must have the
    recorded SHA-256)."""

    def __init__(self, decoder: Run, prior: Run | None = None, clip: ClipEncoder | None = None):
        rec = decoder.data.clip
        if rec is None or rec.for_prior:
            what = "a prior" if rec is not None else "not conditioned on a contrastive encoder's image embeddings"
            raise ValueError(f"{decoder.name} is {what}: the chain needs a decoder trained with `unblur train --clip "
                             "ENCODER` (give the prior with --prior)")
        if prior is not None:
            check_same_encoder(prior.data, decoder.data, prior=prior.name, decoder=decoder.name)
        if clip is None:
            path = Path(rec.path)
            if not path.exists():
                raise ValueError(f"{decoder.name} was trained with the encoder {str(path)!r}, which is not there any "
                                 "more: put the encoder run back at that path")
            clip = load_clip(path, device=decoder.device)
        if clip.sha256 != rec.sha256:
            raise ValueError(f"the encoder {str(clip.path)!r} has changed since {decoder.name} was trained (sha256 "
                             f"{clip.sha256[:12]}..., the run expects {rec.sha256[:12]}...)")
        self.decoder, self.prior, self.clip = decoder, prior, clip

    @classmethod
    def open(cls, decoder: str | Path, *, prior: str | Path | None = None, clip: str | Path | None = None,
             device: str | torch.device = "auto") -> Unclip:
        """The chain of the runs at these paths (``clip``: the encoder, if not at its recorded path)."""
        dec = Run.load(decoder, device=device)
        pri = Run.load(prior, device=dec.device) if prior is not None else None
        enc = load_clip(clip, device=dec.device) if clip is not None else None
        return cls(dec, pri, enc)

    # -- the chain's door ---------------------------------------------------------------------
    def sample(self, n: int = 1, *, prompts: Sequence[str] = (), variations_of: Tensor | None = None,
               interpolate: Tensor | None = None, text_diff: tuple[str, str] | None = None,
               names: Sequence[str] | None = None, frames: int = 8, amount: float = 0.5,
               sampler: str | None = None, steps: int | None = None, grid: str | None = None,
               guidance: float | None = None, prior_sampler: str | None = None, prior_steps: int | None = None,
               prior_guidance: float | None = None, seed: int = 0, batch: int = 64, start: int = 0,
               callback: Callback | None = None, prior_callback: Callback | None = None) -> UnclipStream:
        """Images of one of the four requests (see the module), as a checked stream of batches.

        ``n``: images per prompt or per image (variations); a strip (``interpolate``, ``text_diff``)
        has ``frames`` images and takes n = 1. Images (B, C, H, W) in [-1, 1] are at the encoder's
        size (``clip.image_shape``); ``names`` label them in the records (default "image I").
        ``sampler``, ``steps``, ``grid``, ``guidance``: the decoder's (default its own);
        ``prior_sampler``, ``prior_steps``, ``prior_guidance``: the prior's. Image i uses seed
        ``seed + i`` (a strip: ``seed`` for all), the prior's draw j seed ``seed + j``.
        ``callback`` sees the decoder's steps, ``prior_callback`` the prior's.
        """
        given = [k for k, v in (("prompts", prompts), ("variations_of", variations_of), ("interpolate", interpolate))
                 if v is not None and len(v)]
        if len(given) != 1:
            raise ValueError(f"give one of prompts=, variations_of= or interpolate= to the chain of "
                             f"{self.decoder.name} (given: {', '.join(given) or 'none'})")
        if text_diff is not None and (variations_of is None or len(variations_of) != 1):
            raise ValueError("text_diff=(FROM, TO) moves one image's embedding: give exactly one image as "
                             "variations_of")
        strip = interpolate is not None or text_diff is not None
        if strip and n != 1:
            raise ValueError(f"n={n}: a strip (interpolate, text_diff) is its {frames} frames with one noise; n counts "
                             "the images of each prompt or variation: drop it")
        images = interpolate if interpolate is not None else variations_of
        if images is not None:
            self.clip.check_images(images, "the images given")
            names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
            if len(names) != len(images):
                raise ValueError(f"{len(names)} names for {len(images)} images: give one name per image")
        prior_stream = None
        if prompts:
            prompts = list(prompts)
            prior_stream = self._prior_stream(prompts, n, sampler=prior_sampler, steps=prior_steps,
                                              guidance=prior_guidance, seed=seed)
            mode, count, per = "prompt", n * len(prompts), 1

            def make(stream: UnclipStream) -> tuple[Tensor, list[str], list[dict]]:
                prior_stream.callback = stream.prior_callback
                z, recs = self._draw(prior_stream)
                pp = prior_stream.plan
                draws = [(p, k) for p in prompts for k in range(n)]  # prompt-major, as the prior drew them
                about = [{"unclip": "prompt", "prompt": p, "prior": self.prior.ref, "prior_sample": k,
                          "prior_seed": r["seed"], "prior_sampler": pp.sampler, "prior_steps": pp.steps,
                          "prior_grid": pp.grid, "prior_guidance": prior_stream.ctx.guidance}
                         for (p, k), r in zip(draws, recs)]
                return z, self._prompt_labels(prompts, n), about
        elif interpolate is not None:
            if len(interpolate) != 2:
                raise ValueError(f"interpolate takes two images (2, C, H, W), got {len(interpolate)}")
            _check_frames(frames, "an interpolation")
            mode, count, per = "interpolation", frames, 1

            def make(stream: UnclipStream) -> tuple[Tensor, list[str], list[dict]]:
                z, labels, t = self._interpolation(interpolate[:1], interpolate[1:], frames, (names[0], names[1]))
                return z, labels, [{"unclip": "interpolation", "images": list(names), "position": v} for v in t]
        elif text_diff is not None:
            _check_frames(frames, "a text diff")
            _check_amount(amount)
            source, target = check_prompts(list(text_diff))  # empty captions are refused now
            mode, count, per = "text_diff", frames, 1

            def make(stream: UnclipStream) -> tuple[Tensor, list[str], list[dict]]:
                z, labels, t = self._text_diff(variations_of, source, target, frames, amount, names[0])
                return z, labels, [{"unclip": "text_diff", "image_name": names[0], "text_from": source,
                                    "text_to": target, "amount": v} for v in t]
        else:
            mode, count, per = "variation", len(variations_of), n

            def make(stream: UnclipStream) -> tuple[Tensor, list[str], list[dict]]:
                z, labels = self.variations(variations_of, names)
                return z, labels, [{"unclip": "variation", "image_name": name} for name in names]

        # The decoder checks the rest of the request (n, batch, sampler, steps, grid, guidance) now,
        # on null embeddings (zeros); the real ones are made when the stream is first iterated.
        checked = self.decoder.sample(per, embeddings=torch.zeros(count, self.clip.dim), guidance=guidance,
                                      sampler=sampler, steps=steps, grid=grid, seed=seed, batch=batch)
        if not 0 <= start <= checked.total:
            raise ValueError(f"start must lie in 0..{checked.total}, got {start}")
        return UnclipStream(self, checked.plan, mode, count, per, make, guidance, seed, batch, shared_seed=strip,
                            start=start, callback=callback, prior_callback=prior_callback,
                            prior_plan=prior_stream.plan if prior_stream is not None else None)

    # -- embeddings ---------------------------------------------------------------------------
    def text_embeddings(self, prompts: Sequence[str]) -> Tensor:
        """The encoder's unit caption embeddings (K, E) of ``prompts``."""
        return self.clip.embed_texts(check_prompts(list(prompts)))

    def image_embeddings(self, images: Tensor) -> Tensor:
        """The encoder's unit image embeddings (B, E) of images (B, C, H, W) in [-1, 1]."""
        return self.clip.embed_images(images)

    def from_prompts(self, prompts: Sequence[str], n: int = 1, *, sampler: str | None = None,
                     steps: int | None = None, guidance: float | None = None, seed: int = 0,
                     callback: Callback | None = None) -> tuple[Tensor, list[str]]:
        """``n`` image embeddings per prompt drawn from the prior given its caption embedding
        (prompt-major order), renormalised to the unit sphere, and their labels."""
        prompts = list(prompts)
        stream = self._prior_stream(prompts, n, sampler=sampler, steps=steps, guidance=guidance, seed=seed)
        stream.callback = callback
        z, _ = self._draw(stream)
        return z, self._prompt_labels(prompts, n)

    def variations(self, images: Tensor, names: Sequence[str] | None = None) -> tuple[Tensor, list[str]]:
        """The images' own embeddings: decoded with new noise, they are variations of the images."""
        z = self.image_embeddings(images)
        names = list(names) if names is not None else [f"image {i}" for i in range(len(z))]
        return z, [f"variation of {name}" for name in names]

    def interpolation(self, a: Tensor, b: Tensor, frames: int, names: tuple[str, str] = ("A", "B")
                      ) -> tuple[Tensor, list[str]]:
        """``frames`` embeddings on the great circle from image a's to image b's (each (1, C, H, W))."""
        z, labels, _ = self._interpolation(a, b, frames, names)
        return z, labels

    def text_diff(self, image: Tensor, source: str, target: str, frames: int, *, amount: float = 0.5,
                  name: str = "the image") -> tuple[Tensor, list[str]]:
        """``frames`` embeddings from the image's own (amount 0) towards ``target`` (up to ``amount``)."""
        z, labels, _ = self._text_diff(image, source, target, frames, amount, name)
        return z, labels

    def clip_score(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        """Cosine similarity (B,) of each image to its prompt under the encoder (a CLIP score)."""
        return clip_scores(self.clip, images, check_prompts(list(prompts)))

    # -- the steps' algebra ---------------------------------------------------------------------
    def _prior_stream(self, prompts: list[str], n: int, *, sampler: str | None, steps: int | None,
                      guidance: float | None, seed: int) -> SampleStream:
        """The prior's checked request: ``n`` draws per prompt given its text embedding."""
        if self.prior is None:
            raise ValueError(f"prompts go through a prior: give one (--prior RUN) for {self.decoder.name}")
        z_txt = self.text_embeddings(prompts)
        return self.prior.sample(n, embeddings=z_txt, embedding_labels=prompts, guidance=guidance, sampler=sampler,
                                 steps=steps, seed=seed, batch=max(1, n * len(prompts)))

    def _draw(self, stream: SampleStream) -> tuple[Tensor, list[dict]]:
        """(the prior's draws as unit image embeddings (K, E), the prior's records)."""
        xs, records = [], []
        for b in stream:
            xs.append(b.x)
            records += b.records
        return F.normalize(torch.cat(xs) / prior_scale(self.clip.dim), dim=-1), records

    @staticmethod
    def _prompt_labels(prompts: Sequence[str], n: int) -> list[str]:
        return [f"prompt {p!r} (prior sample {k})" for p in prompts for k in range(n)]

    def _interpolation(self, a: Tensor, b: Tensor, frames: int, names: tuple[str, str]
                       ) -> tuple[Tensor, list[str], list[float]]:
        _check_frames(frames, "an interpolation")
        za, zb = self.image_embeddings(torch.cat([a, b]))
        t = torch.linspace(0, 1, frames)
        z = slerp(za.expand(frames, -1), zb.expand(frames, -1), t)
        return z, [f"slerp({names[0]}, {names[1]}, {v:.3f})" for v in t.tolist()], t.tolist()

    def _text_diff(self, image: Tensor, source: str, target: str, frames: int, amount: float, name: str
                   ) -> tuple[Tensor, list[str], list[float]]:
        _check_frames(frames, "a text diff")
        _check_amount(amount)
        zi = self.image_embeddings(image)
        zs, zt = self.text_embeddings([source, target])
        t = torch.linspace(0, amount, frames)
        z = text_diff(zi.expand(frames, -1), zs.expand(frames, -1), zt.expand(frames, -1), t)
        return z, [f"{name} moved from {source!r} towards {target!r} by {v:.3f}" for v in t.tolist()], t.tolist()


def _check_frames(frames: int, what: str) -> None:
    if isinstance(frames, bool) or int(frames) != frames or frames < 2:
        raise ValueError(f"{what} needs at least 2 frames, got {frames!r}")


def _check_amount(amount: float) -> None:
    if not 0 < amount <= 1:
        raise ValueError(f"the text diff's amount must lie in (0, 1], got {amount}")


__all__ = ["MODES", "RECORD_FIELDS", "Unclip", "UnclipStream", "chain_fields", "is_decoder", "is_prior"]
