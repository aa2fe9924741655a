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


MODEL_SIZES = ("base_channels", "channel_mult", "num_res_blocks", "attn_resolutions")  # the model.* a preset fills


def size_model(cfg, data_info, device) -> tuple:
    """``cfg`` with the U-Net sizes left None filled from the preset for the images and the
    device, so the run's config.json records the network it trains; and words on the preset
    (``preset cpu-32 (32x32 images on cpu)``), or None where every size was given."""
    from dataclasses import replace

    m = cfg.model
    if all(getattr(m, k) is not None for k in MODEL_SIZES):
        return cfg, None
    H, W = data_info.shape[1:]
    name, preset = unet_preset((H, W), device.type)
    given = [f"model.{k}" for k in MODEL_SIZES if getattr(m, k) is not None]
    filled = {k: getattr(m, k) if getattr(m, k) is not None else getattr(preset, k) for k in MODEL_SIZES}
    why = f"{H}x{W} images on {device.type}" + (f"; {', '.join(given)} as given" if given else "")
    return replace(cfg, model=replace(m, **filled)), f"preset {name} ({why})"


def describe_model(net, shape: tuple[int, ...], device, how: str) -> str:
    """One line on a denoising network as built: ``how`` it was chosen (``preset cpu-32
    (...)``, ``model.* as given``, ``the run's own``), its size in words, parameters and FLOPs."""
    from .counting import count_parameters

    params = f"{count_parameters(net) / 1e6:.2f} M parameters"
    if len(shape) != 3:
        return (f"model: MLP, width {net.cfg.hidden}, {net.cfg.depth} blocks; {params}; set model.hidden, "
                "model.depth to choose")
    u = net.cfg  # the UNetConfig built (a learned text encoder's wrapper passes it through)
    words = describe_unet(UNetSize(u.base_channels, u.channel_mult, u.num_res_blocks, u.attn_resolutions),
                          mid_attention=u.mid_attention)
    cost = f"{params}, {flops_per_item(net, shape, device) / 1e9:.2g} GFLOP per image"
    if how.startswith("preset"):
        return f"model: {how}: {words}; {cost}; set model.* to choose"
    return f"model: {words} ({how}); {cost}"


def flops_per_item(net, shape: tuple[int, ...], device) -> float:
    """Forward FLOPs of one item, counted with the parameters frozen for the moment (the
    counter's module hooks trip over the text null token's parameter otherwise)."""
    import torch

    from .counting import forward_flops

    wanted = [p.requires_grad for p in net.parameters()]
    net.requires_grad_(False)
    try:
        return forward_flops(net, torch.zeros(1, *shape, device=device), torch.zeros(1, device=device))
    finally:
        for p, want in zip(net.parameters(), wanted):
            p.requires_grad_(want)
