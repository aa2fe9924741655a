"""Editing real data with a trained denoiser: img2img, inpainting (replace, RePaint, a cold mask
run's restorer), outpainting in blended tiles, inversion, reconstruction and interpolation.

Plain functions and denoiser wrappers over any ``Denoiser`` (``unblur.runs.Run`` builds on them
for trained runs; the exact mixture denoisers of ``unblur.analytic`` test them).
"""

from .cold import cold_inpaint, mask_depth
from .gaussian import (
    METHODS,
    check_strength,
    edit,
    keep_known,
    noised_start,
    repaint_moves,
    repaint_nfe,
    sample_repaint,
    strength_grid,
)
from .inversion import blend_denoisers, interpolate_states, invert, reconstruct, slerp
from .masks import MAX_EXTEND_FACTOR, box_mask, check_mask, extend_canvas, parse_box, parse_extend, read_mask
from .tiles import any_size, tiled

__all__ = [
    "MAX_EXTEND_FACTOR",
    "METHODS",
    "any_size",
    "blend_denoisers",
    "box_mask",
    "check_mask",
    "check_strength",
    "cold_inpaint",
    "edit",
    "extend_canvas",
    "interpolate_states",
    "invert",
    "keep_known",
    "mask_depth",
    "noised_start",
    "parse_box",
    "parse_extend",
    "read_mask",
    "reconstruct",
    "repaint_moves",
    "repaint_nfe",
    "sample_repaint",
    "slerp",
    "strength_grid",
    "tiled",
]
