"""U-Net sizes chosen from the image size and the device, in one table.

A CPU trains a few images per second on the 6.9 M-parameter U-Net at 32x32, so its presets are
narrower: the text-to-image benchmark (``benchmarks/conditioning.py text``, benchmarks/README.md)
found that on 2 cores a width of 32, one residual block per level and attention in the middle
block only buy the most optimizer steps for the minutes. A GPU keeps the reference sizes.

The reference column (``REFERENCE``) is also what a saved config with the model sizes left at
None builds (runs written before presets existed, and library callers): never change it, or
those runs would rebuild another network. The trainer writes the chosen preset's values into
the run's config, so a run made with a preset does not depend on this table either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class UNetSize:
    """The four numbers that size a U-Net (the ``model.*`` keys of the config)."""

    base_channels: int  # width of the first level
    channel_mult: tuple[int, ...]  # width multiplier per level
    num_res_blocks: int  # residual blocks per level
    attn_resolutions: tuple[int, ...]  # downsampling factors with self-attention (the middle block has it anyway)


# (largest image side, CPU size, reference size): the first row whose side is >= the image's.
PRESETS: tuple[tuple[float, UNetSize, UNetSize], ...] = (
    (16, UNetSize(32, (1, 2), 2, ()), UNetSize(32, (1, 2), 2, ())),
    (32, UNetSize(32, (1, 2, 2), 1, ()), UNetSize(64, (1, 2, 2), 2, (4,))),
    (64, UNetSize(32, (1, 2, 2, 2), 1, ()), UNetSize(64, (1, 2, 2, 4), 2, (4, 8))),
    (math.inf, UNetSize(32, (1, 1, 2, 2, 2), 1, ()), UNetSize(64, (1, 1, 2, 2, 4), 2, (8, 16))),
)
REFERENCE = None  # the `device` of the reference column (GPUs, and configs saved with sizes None)


def unet_preset(size: tuple[int, int] | int, device: str | None = REFERENCE) -> tuple[str, UNetSize]:
    """The preset's name (``cpu-32``, ``gpu-64``, ``gpu-large``) and size for images of ``size``
    on ``device`` (a device type: ``cpu`` gets the CPU column, anything else, or None, the
    reference column), with levels dropped until H and W stay divisible by 2**(levels-1)."""
    H, W = (size, size) if isinstance(size, int) else tuple(size)
    side = min(H, W)
    limit, cpu, reference = next(row for row in PRESETS if side <= row[0])
    on_cpu = device == "cpu"
    chosen = cpu if on_cpu else reference
    mult = chosen.channel_mult
    while len(mult) > 1 and (H % 2 ** (len(mult) - 1) or W % 2 ** (len(mult) - 1)):
        mult = mult[:-1]
    attn = tuple(a for a in chosen.attn_resolutions if a < 2 ** len(mult))
    name = f"{'cpu' if on_cpu else 'gpu'}-{'large' if math.isinf(limit) else int(limit)}"
    return name, UNetSize(chosen.base_channels, mult, chosen.num_res_blocks, attn)


def describe_unet(size: UNetSize, *, mid_attention: bool) -> str:
    """``width 32, mult 1,2,2, 1 block, attention in the middle``: the size in words."""
    blocks = f"{size.num_res_blocks} block{'s' if size.num_res_blocks != 1 else ''}"
    where = [f"at 1/{a}" if a > 1 else "at full size" for a in size.attn_resolutions]
    if mid_attention:
        where.append("in the middle")
    attn = "attention " + " and ".join(where) if where else "no attention"
    mult = ",".join(map(str, size.channel_mult))
    return f"width {size.base_channels}, mult {mult}, {blocks}, {attn}"


__all__ = ["PRESETS", "REFERENCE", "UNetSize", "describe_unet", "unet_preset"]
