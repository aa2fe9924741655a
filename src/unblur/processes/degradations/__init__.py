"""Cold-diffusion degradations (Bansal et al. 2022), one class per file, in one registry.

To add one: a frozen dataclass subclassing ``Degradation`` in ``NAME.py`` and one ``register``
line below; ``ColdProcess``, the CLI's ``--process`` choices and the contract tests
(``tests/test_degradations.py``) pick it up from ``DEGRADATIONS``.
"""

from .base import DEGRADATIONS, Degradation, full_level, get_degradation, register, wide
from .blend import Blend
from .blur import BLUR_SCHEDULES, BLUR_STARTS, Blur, blur, blur_matrix
from .desaturate import Desaturate
from .jpeg import Jpeg
from .mask import MASK_KINDS, Mask
from .noise import Noise
from .pixelate import Pixelate
from .snow import Snow

register(Blur)
register(Pixelate)
register(Mask)
register(Desaturate)
register(Snow)
register(Blend)
register(Noise)
register(Jpeg)

__all__ = [
    "BLUR_SCHEDULES",
    "BLUR_STARTS",
    "DEGRADATIONS",
    "MASK_KINDS",
    "Blend",
    "Blur",
    "Degradation",
    "Desaturate",
    "Jpeg",
    "Mask",
    "Noise",
    "Pixelate",
    "Snow",
    "blur",
    "blur_matrix",
    "full_level",
    "get_degradation",
    "register",
    "wide",
]
