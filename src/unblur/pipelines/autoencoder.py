"""The autoencoder of a latent run, opened as one object whatever wrote it.

``load_autoencoder(path)`` accepts an unblur autoencoder run (``unblur train --model
autoencoder``: its folder or its ``model.safetensors``), a diffusers ``AutoencoderKL`` folder
(``config.json`` + ``diffusion_pytorch_model.safetensors``, e.g. one written by
``AutoencoderKL.save_pretrained``) or a diffusers ``AutoencoderTiny`` (TAESD) folder. The
``LoadedAutoencoder`` it returns encodes images to the diffusion model's latents,
``(z - shift_factor) * scaling_factor``, and decodes them back, a bounded batch at a time
under ``torch.no_grad()``. Its ``sha256`` names the weights, so a latent run can record
which autoencoder its cached latents came from.

An autoencoder run's ``model.safetensors`` holds the EMA weights under diffusers' parameter
names and, in its metadata, the unblur config (``config``), the diffusers config of the
network (``autoencoder``, with the ``scaling_factor`` measured on the training data: 1 / the
standard deviation of the latent means, as Stable Diffusion's 0.18215 was found) and the
latent shape of a training image (``latent_shape``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import Tensor, nn

from ..config import Config, autoencoder_widths
from ..nets.autoencoder_kl import CONFIG_FILE, DOWN_BLOCK, UP_BLOCK, WEIGHTS_NAME, AutoencoderKL, AutoencoderKLConfig
from ..nets.autoencoder_kl import load_weights as _load_weights
from ..types import Generator
from ..utils import resolve_device

RUN_MODEL_FILE = "model.safetensors"  # runs.checkpoint.MODEL_FILE (runs sits above this layer)
AUTOENCODER_KEY = "autoencoder"  # model.safetensors metadata: the network's diffusers config (JSON)
LATENT_SHAPE_KEY = "latent_shape"  # model.safetensors metadata: (latent, H / f, W / f) of a training image
KINDS = ("unblur-run", "diffusers-kl", "diffusers-tiny")


# ---------------------------------------------------------------------------------------------
# Building an autoencoder run's network from its config


def autoencoder_kl_config(cfg: Config, shape: Sequence[int], *, scaling_factor: float = 1.0) -> AutoencoderKLConfig:
    """The diffusers config of the autoencoder ``cfg.autoencoder`` describes, for images of
    ``shape`` (C, H, W): widths per level, one resnet per encoder level by default, the middle
    attention on or off, and ``scaling_factor`` (1 until it is measured on the data)."""
    a = cfg.autoencoder
    widths = autoencoder_widths(a)
    C, H, W = shape
    return AutoencoderKLConfig(
        in_channels=C, out_channels=C, down_block_types=(DOWN_BLOCK,) * len(widths),
        up_block_types=(UP_BLOCK,) * len(widths), block_out_channels=tuple(widths),
        layers_per_block=a.layers_per_block, latent_channels=a.latent_channels, norm_num_groups=a.norm_groups,
        sample_size=H if H == W else (H, W), scaling_factor=scaling_factor, shift_factor=None,
        force_upcast=False, mid_block_add_attention=a.mid_attention,
    )


def build_autoencoder(cfg: Config, shape: Sequence[int]) -> AutoencoderKL:
    """A freshly initialised ``AutoencoderKL`` for ``cfg`` and images of ``shape`` (C, H, W)."""
    f = cfg.autoencoder.downsampling
    C, H, W = shape
    if H % f or W % f:
        raise ValueError(f"an autoencoder with autoencoder.downsampling={f} needs image sides that are multiples of "
                         f"{f}, but the images are {H}x{W}: set data.size (e.g. data.size={max(f, H - H % f)})")
    net = AutoencoderKL(autoencoder_kl_config(cfg, shape))
    shift = cfg.autoencoder.logvar_init
    if shift:  # the log-variance half of the moments starts at ``shift`` on average
        last = net.quant_conv if net.quant_conv is not None else net.encoder.conv_out
        with torch.no_grad():
            last.bias[cfg.autoencoder.latent_channels:] += shift
    return net


@torch.no_grad()
def latent_scale(model: nn.Module, images: Tensor, *, batch: int = 64) -> float:
    """1 / the standard deviation of the latent means of ``images`` (B, C, H, W) in [-1, 1] over
    every element: the ``scaling_factor`` that gives the diffusion model unit-variance latents
    (Rombach et al. 2022, sec. 4.3.2). ``model`` is an ``AutoencoderKL``; its current
    ``scaling_factor`` plays no part."""
    p = next(model.parameters())
    means = torch.cat([model.encode(chunk.to(p.device, p.dtype))[0].float().cpu() for chunk in images.split(batch)])
    std = float(means.std())
    if not std > 0 or not torch.isfinite(torch.tensor(std)):
        raise ValueError(f"the latent means have standard deviation {std}: the autoencoder's latents are constant")
    return 1.0 / std


# ---------------------------------------------------------------------------------------------
# Opening an autoencoder


@dataclass
class LoadedAutoencoder:
    """An autoencoder ready for latent diffusion: ``encode`` images to scaled latents, ``decode`` back.

    ``model`` is the network (``AutoencoderKL`` or ``AutoencoderTiny``, eval mode, gradients off);
    ``kind`` one of ``KINDS``; ``path`` the resolved path it was read from; ``sha256`` the hex
    digest of its weights file(s) (a run's ``model.safetensors``; a diffusers folder's
    safetensors file, or its shards in order); ``image_shape`` (C, H, W) of the training images
    for an unblur run, else None.
    """

    model: nn.Module
    kind: str
    path: str
    sha256: str
    scaling_factor: float
    shift_factor: float
    latent_channels: int
    downsampling: int
    in_channels: int
    image_shape: tuple[int, int, int] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(latent channels, h, w) of a (height, width) image."""
        f = self.downsampling
        return self.latent_channels, height // f, width // f

    def encode(self, x: Tensor, *, sample: bool = False, generator: Generator = None, batch: int = 16) -> Tensor:
        """Scaled latents ``(z - shift_factor) * scaling_factor`` (B, latent, H / f, W / f) of
        images x (B, C, H, W) in [-1, 1], ``batch`` images at a time, as float32 on ``device``.

        z is the mean of q(z | x), or with ``sample`` a draw from it (``generator``: one, or one
        per image, which makes each draw independent of ``batch``). TAESD is deterministic:
        ``sample`` changes nothing there.
        """
        self._check(x, self.in_channels, "encode", "images")
        gens = list(generator) if isinstance(generator, (list, tuple)) else None
        if gens is not None and len(gens) != len(x):
            raise ValueError(f"encode got {len(gens)} generators for {len(x)} images: give one, or one per image")
        out = []
        with torch.no_grad():
            for start in range(0, len(x), _positive(batch)):
                chunk = x[start : start + batch].to(self.device, self.dtype)
                if self.kind == "diffusers-tiny":
                    z = self.model.encode(chunk)
                elif sample:
                    g = gens[start : start + batch] if gens is not None else generator
                    z = self.model.encode_sample(chunk, generator=g)
                else:
                    z = self.model.encode(chunk)[0]
                out.append((z.float() - self.shift_factor) * self.scaling_factor)
        return torch.cat(out) if out else torch.zeros(0, *self.latent_shape(*x.shape[-2:]), device=self.device)

    def decode(self, z: Tensor, *, batch: int = 16, tile: int | None = None, clamp: bool = True) -> Tensor:
        """Images (B, C, h * f, w * f) in [-1, 1] (float32 on ``device``) from scaled latents z
        (B, latent, h, w): unscaled (``z / scaling_factor + shift_factor``), then decoded ``batch``
        latents at a time; ``tile`` (latent pixels) decodes each in overlapping tiles (see
        ``nets.autoencoder_kl.tiled_decode``). ``clamp=False`` keeps values outside [-1, 1]."""
        self._check(z, self.latent_channels, "decode", "latents")
        out = []
        with torch.no_grad():
            for chunk in z.split(_positive(batch)):
                u = chunk.to(self.device, torch.float32) / self.scaling_factor + self.shift_factor
                x = self.model.decode(u.to(self.dtype), tile=tile).float()
                out.append(x.clamp(-1, 1) if clamp else x)
        f = self.downsampling
        return torch.cat(out) if out else torch.zeros(0, self.in_channels, z.shape[-2] * f, z.shape[-1] * f,
                                                      device=self.device)

    def _check(self, t: Tensor, channels: int, what: str, name: str) -> None:
        if not isinstance(t, Tensor) or t.ndim != 4 or t.shape[1] != channels:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{what} wants {name} (B, {channels}, H, W) for the autoencoder {self.path!r}, "
                             f"got {shape}")


def _positive(batch: int) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    return batch


def load_autoencoder(path: str | Path, *, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> LoadedAutoencoder:
    """Open the autoencoder at ``path``: an unblur autoencoder run folder or its
    ``model.safetensors``, a diffusers ``AutoencoderKL`` folder, or a diffusers ``AutoencoderTiny``
    (TAESD) folder; on ``device`` in ``dtype``, eval mode, gradients off. Anything else (a
    missing path, a diffusion run, unreadable files) is a ValueError naming the path."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"no autoencoder at {str(path)!r}: give an autoencoder run (unblur train --model "
                         "autoencoder --out ...) or a diffusers AutoencoderKL folder")
    p = p.resolve()
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    if p.is_file():
        if p.suffix != ".safetensors":
            raise ValueError(f"{str(p)!r} is not an autoencoder: give a run folder, its {RUN_MODEL_FILE}, or a "
                             "diffusers folder")
        if _is_diffusers_weights(p):
            return _load_diffusers(p.parent, dev, dtype)
        return _load_run(p, dev, dtype)
    if (p / RUN_MODEL_FILE).is_file():
        return _load_run(p / RUN_MODEL_FILE, dev, dtype)
    if (p / CONFIG_FILE).is_file():
        return _load_diffusers(p, dev, dtype)
    sub = p / "vae"
    hint = f"; its vae/ sub-folder may be one: pass {str(sub)!r}" if (sub / CONFIG_FILE).is_file() else ""
    raise ValueError(f"{str(p)!r} holds neither an unblur run ({RUN_MODEL_FILE}) nor a diffusers model "
                     f"({CONFIG_FILE}){hint}")


def _is_diffusers_weights(path: Path) -> bool:
    return path.name.startswith(WEIGHTS_NAME) and (path.parent / CONFIG_FILE).is_file()


def _load_run(file: Path, device: torch.device, dtype: torch.dtype) -> LoadedAutoencoder:
    state, meta = _read_safetensors(file)
    if "config" not in meta:
        raise ValueError(f"{str(file)!r} has no unblur config in its metadata: not an unblur run")
    try:
        cfg = Config.from_dict(json.loads(meta["config"]))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{str(file)!r}: its config cannot be read ({e})") from None
    if AUTOENCODER_KEY not in meta:  # what an autoencoder run's export holds, and no other run's
        raise ValueError(f"{str(file.parent)!r} is an unblur model.kind={cfg.model.kind} run, not an autoencoder (no "
                         f"'{AUTOENCODER_KEY}' in its metadata): give a run trained with `unblur train --model "
                         "autoencoder`, or a diffusers AutoencoderKL folder")
    try:
        config = AutoencoderKLConfig.from_dict(json.loads(meta[AUTOENCODER_KEY]), source=file)
        shape = json.loads(meta["data_info"])["shape"] if "data_info" in meta else None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{str(file)!r}: its autoencoder metadata cannot be read ({e!r})") from None
    model = _assemble(AutoencoderKL, config, state, str(file))
    return _loaded(model, "unblur-run", file.parent, _sha256([file]), device, dtype,
                   image_shape=tuple(int(v) for v in shape) if shape else None)


def _load_diffusers(folder: Path, device: torch.device, dtype: torch.dtype) -> LoadedAutoencoder:
    from ..nets.taesd import AutoencoderTiny

    try:
        raw = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"{str(folder / CONFIG_FILE)!r} cannot be read as JSON ({e})") from None
    name = raw.get("_class_name") if isinstance(raw, dict) else None
    classes = {"AutoencoderKL": (AutoencoderKL, "diffusers-kl"), "AutoencoderTiny": (AutoencoderTiny, "diffusers-tiny")}
    if name not in classes:
        what = f"a diffusers {name}" if isinstance(name, str) else "no diffusers model (no _class_name)"
        if isinstance(raw, dict) and {"model", "train"} <= set(raw):
            what = f"an unblur run's config but no {RUN_MODEL_FILE}: the run has no weights yet"
        raise ValueError(f"{str(folder)!r} holds {what}, not an autoencoder: give an AutoencoderKL or "
                         "AutoencoderTiny folder, or an unblur autoencoder run")
    cls, kind = classes[name]
    model = cls.from_pretrained(folder)  # checks the config and the weights, names the file on a mismatch
    return _loaded(model, kind, folder, _sha256(_weights_files(folder)), device, dtype)


def _assemble(cls: type, config: Any, state: dict[str, Tensor], source: str) -> nn.Module:
    with torch.device("meta"):
        model = cls(config)
    _load_weights(model, state, source)
    return model


def _loaded(model: nn.Module, kind: str, path: Path, sha: str, device: torch.device, dtype: torch.dtype, *,
            image_shape: tuple[int, ...] | None = None) -> LoadedAutoencoder:
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return LoadedAutoencoder(
        model=model, kind=kind, path=str(path), sha256=sha, scaling_factor=float(model.scaling_factor),
        shift_factor=float(model.shift_factor), latent_channels=int(model.latent_channels),
        downsampling=int(model.downsampling), in_channels=int(model.config.in_channels),
        image_shape=tuple(image_shape) if image_shape else None,  # type: ignore[arg-type]
    )


def _read_safetensors(file: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        data = file.read_bytes()
        tensors = st_load(data)
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    except (SafetensorError, ValueError, json.JSONDecodeError, OSError) as e:
        raise ValueError(f"{str(file)!r} is not a readable safetensors file ({e}); it may be truncated") from None
    return tensors, meta


def _weights_files(folder: Path) -> list[Path]:
    """The safetensors file(s) ``from_pretrained`` read: the single file, or the shards its index names."""
    single = folder / f"{WEIGHTS_NAME}.safetensors"
    if single.is_file():
        return [single]
    index = folder / f"{WEIGHTS_NAME}.safetensors.index.json"
    shards = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
    return [folder / s for s in sorted(set(shards))]


def _sha256(files: Sequence[Path]) -> str:
    """The SHA-256 of the files' bytes, one after the other, read in 1 MiB pieces."""
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()
