"""TAESD, the tiny distilled autoencoder of Ollin Boer Bohan (github.com/madebyollin/taesd), read
and written in Hugging Face diffusers' ``AutoencoderTiny`` folder format, with no diffusers
import at run time.

Plain 3x3 convolutions and residual blocks with no normalisation and no attention, so it is
fast, and a tiled decode differs from a whole one only near the seams. Its latents are already
in the diffusion model's scale (``scaling_factor`` 1, ``shift_factor`` 0 for SD and SDXL), and
it is deterministic: ``encode`` gives the latent itself, not a distribution.

>>> taesd = AutoencoderTiny.from_pretrained("taesd")  # a local diffusers folder
>>> z = taesd.encode(x)                               # x (B, 3, H, W) in [-1, 1] -> (B, 4, H/8, W/8)
>>> x_hat = taesd.decode(z)                           # (B, 3, H, W), about [-1, 1]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..utils import choice_error
from .autoencoder_kl import (
    CONFIG_FILE,
    config_to_dict,
    decode_in_batches,
    load_weights,
    parse_config,
    read_folder,
    tiled_decode,
    write_folder,
)

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU, "mish": nn.Mish, "gelu": nn.GELU}
UPSAMPLE_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")
LATENT_CLAMP = 3.0  # the decoder first squashes z to (-3, 3): 3 * tanh(z / 3)


@dataclass(frozen=True)
class AutoencoderTinyConfig:
    """diffusers' ``AutoencoderTiny`` config.json, field for field, with its defaults."""

    in_channels: int = 3  # image channels
    out_channels: int = 3  # decoded image channels
    encoder_block_out_channels: tuple[int, ...] = (64, 64, 64, 64)  # width per encoder stage
    decoder_block_out_channels: tuple[int, ...] = (64, 64, 64, 64)  # width per decoder stage
    act_fn: str = "relu"  # activation inside the blocks (their output is always ReLU'd)
    upsample_fn: str = "nearest"  # interpolation of the decoder's upsampling
    latent_channels: int = 4  # channels of z (16 for the SD3 and Flux TAESDs)
    upsampling_scaling_factor: int = 2  # the decoder's upsampling per stage
    num_encoder_blocks: tuple[int, ...] = (1, 3, 3, 3)  # residual blocks per encoder stage
    num_decoder_blocks: tuple[int, ...] = (3, 3, 3, 1)  # residual blocks per decoder stage
    latent_magnitude: float = 3.0  # z in [-magnitude, magnitude] maps to [0, 1] for 8-bit storage
    latent_shift: float = 0.5  # ... centred on this value
    force_upcast: bool = False  # float16 is safe
    scaling_factor: float = 1.0  # the latents are already in the diffusion model's scale
    shift_factor: float = 0.0
    block_out_channels: tuple[int, ...] | None = None  # diffusers' copy of decoder_block_out_channels; set to it

    def __post_init__(self) -> None:
        for side in ("encoder", "decoder"):
            widths = getattr(self, f"{side}_block_out_channels")
            blocks = getattr(self, f"num_{side}_blocks")
            if len(widths) == 0 or min(widths) < 1:
                raise ValueError(f"{side}_block_out_channels must be positive widths, got {list(widths)}")
            if len(widths) != len(blocks):
                raise ValueError(f"{side}_block_out_channels has {len(widths)} stages but num_{side}_blocks "
                                 f"has {len(blocks)}: give one count per stage")
            if len(set(widths)) > 1:  # diffusers' EncoderTiny/DecoderTiny give no conv between widths
                raise ValueError(f"{side}_block_out_channels must all be equal (as in every TAESD), got {list(widths)}")
        if self.act_fn.lower() not in ACTIVATIONS:
            raise choice_error("act_fn", self.act_fn, ACTIVATIONS)
        if self.upsample_fn not in UPSAMPLE_MODES:
            raise choice_error("upsample_fn", self.upsample_fn, UPSAMPLE_MODES)
        for name in ("in_channels", "out_channels", "latent_channels", "upsampling_scaling_factor"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.scaling_factor == 0:
            raise ValueError("scaling_factor must not be 0")
        object.__setattr__(self, "block_out_channels", self.decoder_block_out_channels)  # diffusers ignores it too

    @classmethod
    def from_dict(cls, raw: dict, *, source: str | Path = CONFIG_FILE) -> AutoencoderTinyConfig:
        """Parse a diffusers config dict (``source`` names it in errors)."""
        return parse_config(cls, raw, Path(source), "AutoencoderTiny")

    def to_dict(self) -> dict:
        return config_to_dict(self, "AutoencoderTiny")


def _conv(in_ch: int, out_ch: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=bias)


class TinyBlock(nn.Module):
    """``ReLU(conv(act(conv(act(conv(x))))) + skip(x))`` (diffusers' ``AutoencoderTinyBlock``)."""

    def __init__(self, in_ch: int, out_ch: int, act_fn: str) -> None:
        super().__init__()
        act = ACTIVATIONS[act_fn.lower()]
        self.conv = nn.Sequential(_conv(in_ch, out_ch), act(), _conv(out_ch, out_ch), act(), _conv(out_ch, out_ch))
        self.skip = nn.Conv2d(in_ch, out_ch, 1, bias=False) if in_ch != out_ch else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


class TinyEncoder(nn.Module):
    """[0, 1] images (B, in, H, W) -> z (B, latent, H / f, W / f): a conv, then per stage a
    stride-2 conv (from the second stage on) and its blocks, then a conv to the latent."""

    def __init__(self, cfg: AutoencoderTinyConfig) -> None:
        super().__init__()
        widths = cfg.encoder_block_out_channels
        layers: list[nn.Module] = []
        for i, (width, blocks) in enumerate(zip(widths, cfg.num_encoder_blocks)):
            layers.append(_conv(cfg.in_channels, width) if i == 0 else _conv(width, width, stride=2, bias=False))
            layers += [TinyBlock(width, width, cfg.act_fn) for _ in range(blocks)]
        layers.append(_conv(widths[-1], cfg.latent_channels))
        self.layers = nn.Sequential(*layers)  # diffusers' indices: encoder.layers.N

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class TinyDecoder(nn.Module):
    """z (B, latent, h, w) -> [0, 1] images (B, out, h * f, w * f): a conv and activation, then
    per stage its blocks, an upsample (except the last stage) and a conv (to the image last)."""

    def __init__(self, cfg: AutoencoderTinyConfig) -> None:
        super().__init__()
        widths = cfg.decoder_block_out_channels
        act = ACTIVATIONS[cfg.act_fn.lower()]
        layers: list[nn.Module] = [_conv(cfg.latent_channels, widths[0]), act()]
        for i, (width, blocks) in enumerate(zip(widths, cfg.num_decoder_blocks)):
            last = i == len(widths) - 1
            layers += [TinyBlock(width, width, cfg.act_fn) for _ in range(blocks)]
            if not last:
                layers.append(nn.Upsample(scale_factor=cfg.upsampling_scaling_factor, mode=cfg.upsample_fn))
            layers.append(_conv(width, cfg.out_channels if last else width, bias=last))
        self.layers = nn.Sequential(*layers)  # diffusers' indices: decoder.layers.N

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(torch.tanh(z / LATENT_CLAMP) * LATENT_CLAMP)


class AutoencoderTiny(nn.Module):
    """TAESD with diffusers' image convention: images in [-1, 1] (the network itself works in [0, 1])."""

    def __init__(self, config: AutoencoderTinyConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else AutoencoderTinyConfig()
        self.config = cfg
        self.encoder = TinyEncoder(cfg)
        self.decoder = TinyDecoder(cfg)

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    @property
    def shift_factor(self) -> float:
        return self.config.shift_factor

    @property
    def downsampling(self) -> int:
        """Image pixels per latent pixel along each side (the encoder's; 8 for the SD TAESDs)."""
        return 2 ** (len(self.config.encoder_block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def normalize(self, z: Tensor) -> Tensor:
        """The diffusion model's latent: ``(z - shift_factor) * scaling_factor``."""
        return (z - self.shift_factor) * self.scaling_factor

    def denormalize(self, z: Tensor) -> Tensor:
        """The autoencoder's latent from the diffusion model's: ``z / scaling_factor + shift_factor``."""
        return z / self.scaling_factor + self.shift_factor

    def encode(self, x: Tensor) -> Tensor:
        """Latents (B, latent, H / f, W / f) of images x (B, in, H, W) in [-1, 1]."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"encode wants images (B, {self.config.in_channels}, H, W), got shape {tuple(x.shape)}")
        return self.encoder(x.add(1).div(2))  # [-1, 1] -> [0, 1], TAESD's own range

    def encode_mode(self, x: Tensor) -> Tensor:
        """The same as ``encode``: TAESD is deterministic (``AutoencoderKL.encode_mode``'s twin)."""
        return self.encode(x)

    def _decode(self, z: Tensor) -> Tensor:
        return self.decoder(z).mul(2).sub(1)  # [0, 1] -> [-1, 1]

    def decode(self, z: Tensor, *, tile: int | None = None, overlap: int | None = None) -> Tensor:
        """Images (B, out, h * f, w * f) in about [-1, 1] from latents z (B, latent, h, w); with
        ``tile``, in overlapping tiles blended linearly (see ``autoencoder_kl.tiled_decode``)."""
        if z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"decode wants latents (B, {self.config.latent_channels}, h, w), "
                             f"got shape {tuple(z.shape)}")
        if tile is None:
            return self._decode(z)
        return tiled_decode(self._decode, z, tile=tile, overlap=overlap)

    def decode_batches(self, z: Tensor, batch: int, *, tile: int | None = None,
                       overlap: int | None = None) -> Tensor:
        """``decode`` over ``batch`` latents at a time (and tiles if ``tile``), concatenated."""
        return decode_in_batches(self.decode, z, batch, tile=tile, overlap=overlap)

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, variant: str | None = None) -> AutoencoderTiny:
        """The TAESD of a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``),
        in eval mode on ``device`` in ``dtype``."""
        raw, cfg_path, state, source = read_folder(folder, "AutoencoderTiny", variant=variant)
        config = AutoencoderTinyConfig.from_dict(raw, source=cfg_path)
        with torch.device("meta"):
            model = cls(config)
        load_weights(model, state, source)
        return model.to(device=device, dtype=dtype).eval()

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``config.json`` and ``diffusion_pytorch_model.safetensors`` in diffusers' format."""
        write_folder(folder, self.config.to_dict(), self)
