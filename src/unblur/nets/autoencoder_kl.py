"""The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022, sec. 3 and app. G),
read and written in Hugging Face diffusers' ``AutoencoderKL`` folder format, with no diffusers
import at run time.

A diffusers folder holds ``config.json`` and ``diffusion_pytorch_model.safetensors``; the module
and parameter names below are diffusers' own (``encoder.down_blocks.0.resnets.0.conv1.weight``,
``encoder.mid_block.attentions.0.to_q.weight``, ...), so a state dict loads with ``strict=True``
and a folder written here loads in diffusers. Pickled ``.bin`` weights are refused: unpickling
can run arbitrary code.

>>> vae = AutoencoderKL.from_pretrained("sd-vae-ft-mse")  # a local folder, never downloaded
>>> mean, logvar = vae.encode(x)                  # x (B, 3, H, W) in [-1, 1] -> (B, 4, H/8, W/8) each
>>> z = vae.normalize(vae.encode_mode(x))         # (z - shift_factor) * scaling_factor: the diffusion latent
>>> x_hat = vae.decode(vae.denormalize(z), tile=32)  # (B, 3, H, W), 256-pixel tiles

Memory, under ``torch.no_grad()``, measured with the CPU allocator on a randomly initialised
SD-sized VAE (widths 128, 256, 512, 512; its float32 weights take 320 MiB besides): a whole
256x256 decode peaked at 192 MiB and a whole 512x512 one at 768 MiB, while 512x512 with
``tile=32`` (256-pixel tiles) peaked at 197 MiB. So a 256x256 decode fits in 2 GiB with room to
spare, and with tiling any size does: the peak is one tile's decode plus the (B, 3, H, W) output.
``decode_batches`` bounds the batch as well.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save as st_save
from torch import Tensor, nn

from ..types import Generator
from ..utils import atomic_write_bytes, choice_error, randn
from .layers import attention

CONFIG_FILE = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model"  # + [".variant"] + ".safetensors"
GROUP_NORM_EPS = 1e-6  # every GroupNorm of the diffusers VAEs
LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamps log-variance here


# ---------------------------------------------------------------------------------------------
# The diffusers folder format (shared with taesd.py)


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise TypeError("a non-negative integer")
    return v


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise TypeError("a finite number")
    return float(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError("true or false")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("a string")
    return v


def _tuple_of(item: Callable[[Any], Any]) -> Callable[[Any], tuple]:
    def parse(v: Any) -> tuple:
        if not isinstance(v, (list, tuple)):
            raise TypeError("a list")
        return tuple(item(x) for x in v)
    return parse


def _or_none(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else parse(v)


def _int_or_ints(v: Any) -> int | tuple[int, ...]:
    return _tuple_of(_int)(v) if isinstance(v, (list, tuple)) else _int(v)


# A field's parser, by its annotation in the config dataclasses (``from __future__`` keeps them strings).
_PARSERS: dict[str, Callable[[Any], Any]] = {
    "int": _int,
    "float": _float,
    "bool": _bool,
    "str": _str,
    "tuple[int, ...]": _tuple_of(_int),
    "tuple[str, ...]": _tuple_of(_str),
    "float | None": _or_none(_float),
    "tuple[float, ...] | None": _or_none(_tuple_of(_float)),
    "tuple[int, ...] | None": _or_none(_tuple_of(_int)),
    "int | tuple[int, ...]": _int_or_ints,
}


def parse_config(cls: type, raw: Any, path: Path, class_name: str) -> Any:
    """The frozen dataclass ``cls`` from a diffusers ``config.json`` dict: a missing key takes
    diffusers' default, an unknown key or a value of the wrong kind is a ValueError naming it."""
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds a JSON {type(raw).__name__}, not an object: not a diffusers config")
    found = raw.get("_class_name", class_name)
    if found != class_name:
        raise ValueError(f"{path} describes a diffusers {found}, not an {class_name}: load it with the matching class")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in fields)
    if unknown:
        raise ValueError(f"{path}: unknown or unsupported {class_name} config key(s) {', '.join(unknown)}; "
                         f"unblur reads {', '.join(sorted(fields))}")
    values = {}
    for name, value in raw.items():
        if name.startswith("_"):  # _class_name, _diffusers_version, _name_or_path: provenance only
            continue
        try:
            values[name] = _PARSERS[fields[name].type](value)
        except TypeError as e:
            raise ValueError(f"{path}: {name} must be {e}, got {value!r}") from None
    try:
        return cls(**values)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def config_to_dict(config: Any, class_name: str) -> dict:
    """A config dataclass as diffusers writes it: every field, tuples as lists, plus ``_class_name``."""
    out = {"_class_name": class_name}
    for name, value in dataclasses.asdict(config).items():
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def read_folder(folder: str | Path, class_name: str, *, variant: str | None = None
                ) -> tuple[dict, Path, dict[str, Tensor], str]:
    """(raw config dict, config path, state dict, weights description) of a diffusers folder.

    Reads ``diffusion_pytorch_model[.variant].safetensors`` or the shards its ``.index.json``
    lists; a folder with only pickled ``.bin`` weights is refused, never unpickled.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"no model folder at {str(folder)!r}: give a diffusers folder holding "
                         f"{CONFIG_FILE} and {WEIGHTS_NAME}.safetensors")
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        sub = folder / "vae"  # a whole pipeline folder keeps its VAE here
        hint = f"; its vae/ sub-folder is one: pass {str(sub)!r}" if (sub / CONFIG_FILE).is_file() else ""
        raise ValueError(f"no {CONFIG_FILE} in {str(folder)!r}: not a diffusers model folder{hint}")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_path} is not valid JSON ({e})") from None

    stem = WEIGHTS_NAME + (f".{variant}" if variant else "")
    single, index = folder / f"{stem}.safetensors", folder / f"{stem}.safetensors.index.json"
    if single.is_file():
        return raw, cfg_path, _load_safetensors(single), str(single)
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{index} is not a safetensors index with a weight_map ({e!r})") from None
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(_load_safetensors(folder / shard))
        return raw, cfg_path, state, str(index)
    pickled = sorted(p.name for p in folder.glob(f"{stem}*.bin"))
    if pickled:
        raise ValueError(f"{str(folder)!r} has only pickled weights ({', '.join(pickled)}), which unblur never "
                         f"loads (unpickling can run arbitrary code): convert them to {single.name} once, where "
                         "you trust the file (diffusers' save_pretrained writes safetensors)")
    others = sorted(p.name for p in folder.glob(f"{WEIGHTS_NAME}*.safetensors"))
    hint = f"; found {', '.join(others)}: pass the variant (e.g. variant='fp16')" if others else ""
    raise ValueError(f"no {single.name} in {str(folder)!r}{hint}")


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise ValueError(f"{path} is missing: the folder's safetensors index names it")
    try:
        return st_load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e}); it may be truncated") from None


def _some(keys: list[str], n: int = 8) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_weights(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Assign ``state`` to ``model`` (built on the meta device) after checking names and shapes;
    a mismatch is a ValueError naming the file and the keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = ([f"missing {_some(missing)}"] if missing else []) + (
            [f"unexpected {_some(unexpected)}"] if unexpected else [])
        raise ValueError(f"{source} does not fit the model its {CONFIG_FILE} describes: {'; '.join(parts)}")
    wrong = [f"{k} {tuple(state[k].shape)} (config wants {tuple(v.shape)})"
             for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{source} has tensors of the wrong shape for its {CONFIG_FILE}: {_some(wrong, 4)}")
    model.load_state_dict(state, strict=True, assign=True)


def write_folder(folder: str | Path, config_dict: dict, model: nn.Module) -> None:
    """``config.json`` and ``diffusion_pytorch_model.safetensors``, as diffusers' save_pretrained writes them."""
    folder = Path(folder)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(folder / f"{WEIGHTS_NAME}.safetensors", st_save(tensors, metadata={"format": "pt"}))
    text = json.dumps(config_dict, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(folder / CONFIG_FILE, text.encode("utf-8"))


# diffusers' first attention block named its projections query/key/value/proj_attn; its loader
# renames them, and so does ours (older SD 1.x VAE folders still carry the old names).
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _rename_legacy_attention(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if len(parts) >= 3 and "attentions" in parts and parts[-2] in _LEGACY_ATTENTION:
            k = ".".join(parts[:-2] + [_LEGACY_ATTENTION[parts[-2]], parts[-1]])
        out[k] = v
    return out


# ---------------------------------------------------------------------------------------------
# Tiled decoding (shared with taesd.py)


def _ramp(n: int, rise: int, fall: int) -> Tensor:
    """Weights (n,) that rise linearly over the first ``rise`` entries and fall over the last ``fall``."""
    w = torch.ones(n)
    for width, flip in ((rise, False), (fall, True)):
        if width > 0:
            up = (torch.arange(width) + 0.5) / width  # (width,), never 0: each pixel keeps some weight
            part = w[-width:] if flip else w[:width]
            part.copy_(torch.minimum(part, up.flip(0) if flip else up))
    return w


def _starts(n: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: the fewest tiles overlapping by at least ``overlap``, spread
    evenly from 0 to ``n - tile``."""
    if n <= tile:
        return [0]
    count = -(-(n - tile) // (tile - overlap)) + 1
    return [round(k * (n - tile) / (count - 1)) for k in range(count)]


def tiled_decode(decode: Callable[[Tensor], Tensor], z: Tensor, *, tile: int, overlap: int | None = None) -> Tensor:
    """``decode(z)`` computed on overlapping (tile x tile) latent tiles and blended linearly.

    The tiles overlap by at least ``overlap`` latent pixels (default ``tile // 4``); in each
    overlap one tile's weight falls linearly across the band while its neighbour's rises, and
    the weighted sum is divided by the summed weights, so the blend is exact wherever the tiles
    agree. A decoder with a global operation (GroupNorm statistics, attention) or a wide reach
    past the zero-padded tile edges gives tiles that disagree a little; a latent no larger than
    one tile is decoded whole. Peak memory: one tile's decode plus the (B, C, H, W) output.
    """
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be a positive number of latent pixels, got {tile!r}")
    overlap = tile // 4 if overlap is None else overlap
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < tile:
        raise ValueError(f"overlap must be an integer in [0, tile={tile}), got {overlap!r}")
    h, w = z.shape[-2:]
    if h <= tile and w <= tile:
        return decode(z)
    th, tw = min(tile, h), min(tile, w)
    ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
    out = weight = None
    f = 0
    for a, i in enumerate(ys):
        for b, j in enumerate(xs):
            piece = decode(z[:, :, i : i + th, j : j + tw])  # (B, C, th * f, tw * f)
            if out is None:
                f = piece.shape[-2] // th  # the decoder's upsampling factor
                out = piece.new_zeros(*piece.shape[:2], h * f, w * f)  # (B, C, H, W)
                weight = piece.new_zeros(1, 1, h * f, w * f)
            # ramp across the band shared with each neighbour: (previous end - start), (end - next start)
            wy = _ramp(th * f, (ys[a - 1] + th - i) * f if a else 0, (i + th - ys[a + 1]) * f if a + 1 < len(ys) else 0)
            wx = _ramp(tw * f, (xs[b - 1] + tw - j) * f if b else 0, (j + tw - xs[b + 1]) * f if b + 1 < len(xs) else 0)
            wgt = (wy[:, None] * wx[None, :]).to(piece)  # (th * f, tw * f)
            out[:, :, i * f : (i + th) * f, j * f : (j + tw) * f] += piece * wgt
            weight[:, :, i * f : (i + th) * f, j * f : (j + tw) * f] += wgt
    return out / weight


def decode_in_batches(decode: Callable[..., Tensor], z: Tensor, batch: int, **options: Any) -> Tensor:
    """``decode`` over ``batch`` latents at a time, concatenated: the peak is one chunk's."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    return torch.cat([decode(chunk, **options) for chunk in z.split(batch)])


# ---------------------------------------------------------------------------------------------
# The configuration


DOWN_BLOCK = "DownEncoderBlock2D"
UP_BLOCK = "UpDecoderBlock2D"
ACTIVATIONS = ("silu", "swish")  # diffusers' two names for x * sigmoid(x)


@dataclass(frozen=True)
class AutoencoderKLConfig:
    """diffusers' ``AutoencoderKL`` config.json, field for field, with its defaults."""

    in_channels: int = 3  # image channels
    out_channels: int = 3  # decoded image channels
    down_block_types: tuple[str, ...] = (DOWN_BLOCK,)  # one per level; only DownEncoderBlock2D
    up_block_types: tuple[str, ...] = (UP_BLOCK,)  # one per level; only UpDecoderBlock2D
    block_out_channels: tuple[int, ...] = (64,)  # width per level; SD: (128, 256, 512, 512)
    layers_per_block: int = 1  # resnets per encoder level (the decoder has one more); SD: 2
    act_fn: str = "silu"  # the resnets' activation
    latent_channels: int = 4  # channels of z; SD 1/2/XL: 4, SD3 and Flux: 16
    norm_num_groups: int = 32  # GroupNorm groups (divides every width)
    sample_size: int | tuple[int, ...] = 32  # training image side; diffusers' tile size
    scaling_factor: float = 0.18215  # latent std: the diffusion model sees (z - shift) * scale
    shift_factor: float | None = None  # latent mean (SD3, Flux); None = 0
    latents_mean: tuple[float, ...] | None = None  # per-channel statistics some pipelines use
    latents_std: tuple[float, ...] | None = None
    force_upcast: bool = True  # the weights overflow in float16: decode in float32
    use_quant_conv: bool = True  # a 1x1 conv on the encoder's moments
    use_post_quant_conv: bool = True  # a 1x1 conv on z before the decoder
    mid_block_add_attention: bool = True  # self-attention in both middle blocks

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        if n == 0 or min(self.block_out_channels) < 1:
            raise ValueError(f"block_out_channels must be positive widths, got {list(self.block_out_channels)}")
        for name, types, known in (("down_block_types", self.down_block_types, DOWN_BLOCK),
                                   ("up_block_types", self.up_block_types, UP_BLOCK)):
            if len(types) != n:
                raise ValueError(f"{name} has {len(types)} entries for {n} block_out_channels: give one per level")
            for t in types:
                if t != known:
                    raise ValueError(f"{name} entry {t!r} is not supported: unblur builds only {known}")
        if self.act_fn.lower() not in ACTIVATIONS:
            raise choice_error("act_fn", self.act_fn, ACTIVATIONS)
        for name in ("in_channels", "out_channels", "latent_channels", "norm_num_groups", "layers_per_block"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"norm_num_groups={self.norm_num_groups} does not divide the width(s) {bad}")
        if self.scaling_factor == 0:
            raise ValueError("scaling_factor must not be 0")

    @classmethod
    def from_dict(cls, raw: dict, *, source: str | Path = CONFIG_FILE) -> AutoencoderKLConfig:
        """Parse a diffusers config dict (``source`` names it in errors)."""
        return parse_config(cls, raw, Path(source), "AutoencoderKL")

    def to_dict(self) -> dict:
        return config_to_dict(self, "AutoencoderKL")


# ---------------------------------------------------------------------------------------------
# The network (module and parameter names are diffusers')


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=GROUP_NORM_EPS)


class ResnetBlock(nn.Module):
    """``x -> shortcut(x) + conv2(SiLU(GN(conv1(SiLU(GN(x))))))``, with no noise embedding."""

    def __init__(self, in_ch: int, out_ch: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = _group_norm(out_ch, groups)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class Downsample(nn.Module):
    """Stride-2 3x3 conv after zero padding of one pixel on the right and bottom only (the LDM
    encoder's asymmetric padding): (H, W) -> (floor(H / 2), floor(W / 2))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SelfAttention(nn.Module):
    """One-head self-attention over the H*W positions, residual: ``x + W_o softmax(q k^T / sqrt(C)) v``."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.group_norm = _group_norm(channels, groups)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])  # diffusers' name: to_out.0

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        t = self.group_norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = (proj(t)[:, None] for proj in (self.to_q, self.to_k, self.to_v))  # (B, 1, HW, C)
        o = attention(q, k, v)[:, 0]  # (B, HW, C)
        o = self.to_out[0](o).transpose(1, 2).reshape(b, c, h, w)  # (B, C, H, W)
        return x + o


class MidBlock(nn.Module):
    """resnet, [attention], resnet at the lowest resolution."""

    def __init__(self, channels: int, groups: int, *, add_attention: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([SelfAttention(channels, groups)]) if add_attention else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class DownEncoderBlock(nn.Module):
    """``layers`` resnets, then (except at the last level) a stride-2 downsample."""

    def __init__(self, in_ch: int, out_ch: int, groups: int, *, layers: int, downsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(in_ch if i == 0 else out_ch, out_ch, groups) for i in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample(out_ch)]) if downsample else None

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.downsamplers is None else self.downsamplers[0](x)


class UpDecoderBlock(nn.Module):
    """``layers`` resnets, then (except at the last level) a nearest x2 upsample and conv."""

    def __init__(self, in_ch: int, out_ch: int, groups: int, *, layers: int, upsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(in_ch if i == 0 else out_ch, out_ch, groups) for i in range(layers)])
        self.upsamplers = nn.ModuleList([Upsample(out_ch)]) if upsample else None

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.upsamplers is None else self.upsamplers[0](x)


class Encoder(nn.Module):
    """Image (B, in, H, W) -> moments (B, 2 * latent, H / f, W / f), f = 2 ** (levels - 1)."""

    def __init__(self, cfg: AutoencoderKLConfig) -> None:
        super().__init__()
        widths, g = cfg.block_out_channels, cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            DownEncoderBlock(widths[max(i - 1, 0)], widths[i], g, layers=cfg.layers_per_block,
                             downsample=i < len(widths) - 1)
            for i in range(len(widths))
        ])
        self.mid_block = MidBlock(widths[-1], g, add_attention=cfg.mid_block_add_attention)
        self.conv_norm_out = _group_norm(widths[-1], g)
        self.conv_out = nn.Conv2d(widths[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)  # (B, widths[0], H, W)
        for block in self.down_blocks:
            h = block(h)
        h = self.mid_block(h)  # (B, widths[-1], H / f, W / f)
        return self.conv_out(F.silu(self.conv_norm_out(h)))  # (B, 2 * latent, H / f, W / f)


class Decoder(nn.Module):
    """Latent (B, latent, h, w) -> image (B, out, h * f, w * f)."""

    def __init__(self, cfg: AutoencoderKLConfig) -> None:
        super().__init__()
        widths, g = tuple(reversed(cfg.block_out_channels)), cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, widths[0], 3, padding=1)
        self.mid_block = MidBlock(widths[0], g, add_attention=cfg.mid_block_add_attention)
        self.up_blocks = nn.ModuleList([
            UpDecoderBlock(widths[max(i - 1, 0)], widths[i], g, layers=cfg.layers_per_block + 1,
                           upsample=i < len(widths) - 1)
            for i in range(len(widths))
        ])
        self.conv_norm_out = _group_norm(widths[-1], g)
        self.conv_out = nn.Conv2d(widths[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid_block(self.conv_in(z))  # (B, widest, h, w)
        for block in self.up_blocks:
            h = block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))  # (B, out, h * f, w * f)


class AutoencoderKL(nn.Module):
    """The latent-diffusion VAE: ``q(z | x) = N(mean, exp(logvar))`` and a deterministic decoder.

    ``encode`` returns the Gaussian's parameters, as diffusers' ``DiagonalGaussianDistribution``
    holds them (log-variance clamped to [-30, 20]); ``encode_mode`` its mean, ``encode_sample``
    a draw ``mean + exp(logvar / 2) * eps``. The diffusion model works on
    ``normalize(z) = (z - shift_factor) * scaling_factor`` (Rombach et al. 2022, sec. 4.3.2 and
    app. D.1: unit-variance latents).
    """

    def __init__(self, config: AutoencoderKLConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else AutoencoderKLConfig()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        c = cfg.latent_channels
        self.quant_conv = nn.Conv2d(2 * c, 2 * c, 1) if cfg.use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(c, c, 1) if cfg.use_post_quant_conv else None

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    @property
    def shift_factor(self) -> float:
        """The config's shift_factor, with None read as 0."""
        return self.config.shift_factor or 0.0

    @property
    def downsampling(self) -> int:
        """Image pixels per latent pixel along each side: 2 ** (levels - 1) (8 for SD)."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def normalize(self, z: Tensor) -> Tensor:
        """The diffusion model's latent: ``(z - shift_factor) * scaling_factor``."""
        return (z - self.shift_factor) * self.scaling_factor

    def denormalize(self, z: Tensor) -> Tensor:
        """The VAE's latent from the diffusion model's: ``z / scaling_factor + shift_factor``."""
        return z / self.scaling_factor + self.shift_factor

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, logvar) of q(z | x), each (B, latent, H / f, W / f), for images x in [-1, 1].

        Height and width should be multiples of ``downsampling``; other sizes are floored at each
        level (as in diffusers) and do not decode back to the same size.
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"encode wants images (B, {self.config.in_channels}, H, W), got shape {tuple(x.shape)}")
        moments = self.encoder(x)  # (B, 2 * latent, H / f, W / f)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def encode_mode(self, x: Tensor) -> Tensor:
        """The mean (and mode) of q(z | x): the deterministic latent of x."""
        return self.encode(x)[0]

    def encode_sample(self, x: Tensor, *, generator: Generator = None) -> Tensor:
        """A draw ``z = mean + exp(logvar / 2) * eps`` from q(z | x) (the reparameterisation of
        Kingma & Welling 2014, eq. 10). One generator draws eps as diffusers' ``sample`` does."""
        mean, logvar = self.encode(x)
        eps = randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

    def _decode(self, z: Tensor) -> Tensor:
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def decode(self, z: Tensor, *, tile: int | None = None, overlap: int | None = None) -> Tensor:
        """Images (B, out, h * f, w * f) from VAE latents z (B, latent, h, w) (not normalized).

        With ``tile`` the latent is decoded in overlapping (tile x tile) pieces blended linearly
        over ``overlap`` latent pixels (default tile // 4): the memory is that of one tile. The
        decoder's GroupNorms and attention see one tile, so the result differs slightly from a
        whole decode (see ``tiled_decode``). ``tile=None`` decodes whole.
        """
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
                        dtype: torch.dtype = torch.float32, variant: str | None = None) -> AutoencoderKL:
        """The VAE of a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``,
        or ``...{variant}.safetensors``), in eval mode on ``device`` in ``dtype``. A SD VAE whose
        config sets ``force_upcast`` overflows in float16: keep float32 (or bfloat16)."""
        raw, cfg_path, state, source = read_folder(folder, "AutoencoderKL", variant=variant)
        config = AutoencoderKLConfig.from_dict(raw, source=cfg_path)
        with torch.device("meta"):
            model = cls(config)
        load_weights(model, _rename_legacy_attention(state), source)
        return model.to(device=device, dtype=dtype).eval()

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``config.json`` and ``diffusion_pytorch_model.safetensors`` in diffusers' format."""
        write_folder(folder, self.config.to_dict(), self)
