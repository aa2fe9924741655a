"""Conditioning: kinds of context (class, text, image) as classes in a registry, the contexts'
algebra over them, the training-side ``Conditioner``, the sampling-side ``SampleContext``, and
``condition_net``, the U-Net with every kind's inputs.

A context is a ``Cond`` mapping with any of

* ``"class"`` (B,) long: index ``num_classes`` is the learned null class;
* ``"text"`` (B, L, D) and ``"text_mask"`` (B, L) bool from a frozen encoder (features cached on
  disk), or ``"text_ids"`` (B, L) and ``"text_mask"`` for the learned encoder; a row with every
  token masked out is the null caption;
* ``"image"`` (B, C, H, W): a low-resolution copy resized to the model's size; zeros are null;
* ``"embedding"`` (B, D): a contrastive encoder's image embedding (a decoder) or text embedding
  (a prior), ``cond.clip``; zeros are null.

Every null has the same keys and shapes as a real context, so the conditional and unconditional
halves of guidance run as one batch, and dropout (``cond.dropout``, drawn independently per kind
and per sample) replaces entries in place. See ``base`` for how to add a kind.
"""

# isort: off
from . import labels, text, image, embedding  # noqa: F401 - registers the kinds; their order is that of keys and draws
# isort: on
from .base import KINDS, Items, Kind, Requests, kind_of, register
from .contexts import class_index, drop_cond, make_lowres, null_cond, upsample_to
from .defaults import default_conditioning, describe_conditioning, text_encoder_default
from .image import IMAGE_CONDITIONS
from .network import condition_net, text_dim_of
from .sampling import SampleContext
from .training import Conditioner

__all__ = [
    "IMAGE_CONDITIONS",
    "KINDS",
    "Conditioner",
    "Items",
    "Kind",
    "Requests",
    "SampleContext",
    "class_index",
    "condition_net",
    "default_conditioning",
    "describe_conditioning",
    "drop_cond",
    "text_encoder_default",
    "kind_of",
    "make_lowres",
    "null_cond",
    "register",
    "text_dim_of",
    "upsample_to",
]
