"""Prompt fidelity of generated images: the CLIP score under a contrastive encoder run, and, for
prompts in the words of ``builtin:shapes``, the shapes checker's colour and shape accuracy.

The CLIP score of an image and its prompt is the cosine similarity of their unit embeddings
(Hessel et al. 2021, before their rescaling 2.5 * max(cos, 0)); a report gives its mean over
the images with the standard error, and the same mean for the images paired with shuffled
prompts (the score of a mismatch, the figure's floor under this encoder).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import Tensor

from ..data.shapes import COLOURS, SHAPES
from ..data.shapes_check import check
from ..pipelines.unclip import ClipEncoder, clip_scores

_WORDS = re.compile(r"[a-z]+")


def shape_words(prompt: str) -> tuple[str, str] | None:
    """(colour, shape) when the prompt names exactly one palette colour and one shape of
    ``builtin:shapes`` (plural forms included); None otherwise (no check is made for it)."""
    words = _WORDS.findall(prompt.lower())
    colours = {w for w in words if w in COLOURS}
    shapes = {s for w in words for s in (w, w[:-1], w[:-2]) if s in SHAPES and w in (s, s + "s", s + "es")}
    if len(colours) != 1 or len(shapes) != 1:
        return None
    return next(iter(colours)), next(iter(shapes))


def prompt_report(clip: ClipEncoder, images: Tensor, prompts: Sequence[str], *, seed: int = 0) -> dict:
    """CLIP score (mean, standard error, shuffled-prompt floor) and, where the prompts allow, the
    shapes checker's accuracy, of generated ``images`` against the ``prompts`` they were made for."""
    s = clip_scores(clip, images, prompts).double()
    n = len(s)
    out: dict = {"clip_score": float(s.mean()), "clip_score_se": float(s.std() / math.sqrt(n)) if n > 1 else None,
                 "clip_items": n, "clip_encoder": str(clip.path)}
    if len(set(prompts)) > 1:
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=g)
        out["clip_score_shuffled"] = float(clip_scores(clip, images, [prompts[i] for i in perm.tolist()]).mean())
    asked = [(i, shape_words(p)) for i, p in enumerate(prompts)]
    asked = [(i, w) for i, w in asked if w is not None]
    if asked and images.shape[1] == 3:
        res = [check(images[i], *w) for i, w in asked]
        out["shapes"] = {"colour": sum(r["colour"] for r in res) / len(res),
                         "shape": sum(r["shape"] for r in res) / len(res), "items": len(res)}
    return out


def summarize_prompts(report: dict) -> str:
    lines = []
    se = report.get("clip_score_se")
    line = f"clip score: {report['clip_score']:.4f}" + (f" +- {se:.4f}" if se is not None else "")
    if "clip_score_shuffled" in report:
        line += f"   (shuffled prompts {report['clip_score_shuffled']:.4f})"
    lines.append(line + f"; {report['clip_items']} images, encoder {report['clip_encoder']}")
    if "shapes" in report:
        sh = report["shapes"]
        lines.append(f"shapes checker: colour {sh['colour']:.3f}, shape {sh['shape']:.3f} ({sh['items']} images "
                     "whose prompt names one colour and one shape)")
    return "\n".join(lines)


__all__ = ["prompt_report", "shape_words", "summarize_prompts"]
