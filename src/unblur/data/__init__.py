"""Data: image folders with classes and captions, .npy arrays, and built-in sets.

Everything is loaded whole into memory as one ``Data`` (a dataclass that is also a
``torch.utils.data.Dataset``)::

    data = load_data("./photos", size=64)        # (N, C, 64, 64) in [-1, 1]
    data = load_data("builtin:digits", size=16)  # (1797, 1, 16, 16), labels 0..9
    data = load_data("builtin:toy2d:moons")      # (20000, 2), data.distribution.log_prob
    train, held_out = split(data, 0.1, seed=0)
"""

from ..images import IMAGE_EXTENSIONS
from .arrays import load_npy
from .base import Data, DataWarning, augment, random_hflip, random_shift, split
from .builtin import builtin_names, load_digits, load_toy2d
from .folder import load_folder
from .load import data_block, load_data, load_training_data
from .shapes import load_shapes
from .toy2d import TOY2D, Toy2D, get_toy2d

__all__ = [
    "IMAGE_EXTENSIONS",
    "TOY2D",
    "Data",
    "augment",
    "DataWarning",
    "Toy2D",
    "builtin_names",
    "get_toy2d",
    "data_block",
    "load_data",
    "load_training_data",
    "load_digits",
    "load_folder",
    "load_npy",
    "load_shapes",
    "load_toy2d",
    "random_hflip",
    "random_shift",
    "split",
]
