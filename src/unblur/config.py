"""The run configuration: frozen dataclasses with commented defaults, one section per part.

``--set train.lr=2e-4`` and a TOML file with ``[train] lr = 2e-4`` reach the same field.
Unknown sections or keys are errors that name the nearest valid key. The resolved config is
saved with every artefact, so a run can be sampled or resumed with no flags.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


@dataclass(frozen=True)
class DataConfig:
    source: str = "builtin:digits"  # folder | FILE.npy | builtin:digits | builtin:toy2d:NAME
    size: tuple[int, ...] | None = None  # (S,) or (H, W); None: the data's most common size
    channels: int | None = None  # 1 or 3; None: from the data
    keep_aspect: bool = False  # keep the most common (H, W) instead of a square crop
    hflip: bool = False  # random horizontal flips during training
    shift: int = 0  # random translations of up to this many pixels during training (edges repeated)
    max_bad_fraction: float = 0.1  # error when more than this fraction of images fails to load
    num_points: int = 20000  # points drawn from a builtin:toy2d set
    num_images: int = 10000  # images drawn for builtin:shapes and builtin:shapes:pairs


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "auto"  # unet | mlp | auto (unet for images, mlp for vectors)
    base_channels: int | None = None  # U-Net width at the top level; None: sized to the data
    channel_mult: tuple[int, ...] | None = None  # width multiplier per level; None: sized to the data
    num_res_blocks: int | None = None  # residual blocks per level
    attn_resolutions: tuple[int, ...] | None = None  # downsampling factors with self-attention (1 = full size)
    dropout: float = 0.0  # dropout inside residual blocks
    hidden: int = 128  # MLP width
    depth: int = 4  # MLP residual blocks


@dataclass(frozen=True)
class ProcessConfig:
    kind: str = "edm"  # edm (continuous sigma, Karras et al.) | vp (discrete DDPM schedule)
    schedule: str = "linear"  # vp: linear | scaled-linear | cosine | sigmoid
    num_steps: int = 1000  # vp: training timesteps T
    zero_terminal_snr: bool = False  # vp: rescale so the last step has SNR 0 (Lin et al.)
    sigma_min: float = 0.002  # edm: smallest noise level
    sigma_max: float = 80.0  # edm: largest noise level
    sigma_data: float | None = None  # edm: data standard deviation; None: measured from the data
    # cold diffusion (kind = blur | pixelate | mask | desaturate | snow | blend | noise), Bansal et al. 2022
    blur_sigma_max: float = 3.0  # blur: Gaussian width at t = 1, pixels
    blur_schedule: str = "linear"  # blur: width(t) = max * t (linear) | max * sqrt(t) (sqrt) | max * t^2 (quadratic)
    pixelate_min: int = 1  # pixelate: side of the coarsest grid at t = 1, pixels
    mask_kind: str = "centre"  # mask: centre | patches (seeded random order) | fade (Gaussian fade, "defading")
    mask_fill: float = 0.0  # mask: value of masked pixels, in the data range [-1, 1]
    mask_patch: int = 2  # mask: patch side for mask_kind=patches, pixels
    fade_width: float = 0.5  # mask: radial width of the fade, fraction of the half-diagonal
    snow_density: float = 0.08  # snow: fraction of pixels seeding a flake at t = 1
    snow_flake: float = 0.7  # snow: flake radius (Gaussian width), pixels
    noise_sigma_max: float = 1.0  # noise: standard deviation at t = 1 (sigma(t) = max * t)
    cold_seed: int = 0  # mask patches and snow: the fixed seed of the patch order and of the snow layer
    blend_data: str | None = None  # blend: the second data set (folder | FILE.npy | builtin:NAME)
    blur_start: str = "blurred"  # blur generation's start: blurred (mixture fitted to D(x, 1)) | means (Bansal et al.)
    start_noise: float | None = None  # blur generation: noise std added to the start; None: fitted to the data


@dataclass(frozen=True)
class ObjectiveConfig:
    prediction: str = "eps"  # vp: eps | x0 | v (edm always uses its own F-target)
    loss: str = "l2"  # l2 | l1
    weighting: str = "none"  # vp: none | min-snr
    min_snr_gamma: float = 5.0  # gamma of min-SNR-gamma weighting (Hang et al. 2023)
    p_mean: float = -1.2  # edm: mean of log sigma during training
    p_std: float = 1.2  # edm: std of log sigma during training
    restore_loss: str = "l1"  # cold processes: l1 | l2 between the restorer's x0_hat and x0


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 10000  # optimizer steps (the run also stops at `minutes`)
    minutes: float | None = None  # wall-clock budget; None: no limit
    batch_size: int = 128  # images per optimizer step, over all processes and accumulation
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW betas
    warmup_steps: int = 100  # linear warm-up of the learning rate
    lr_schedule: str = "constant"  # constant | cosine (decay to 0 at `steps` after warm-up)
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    ema_halflife_kimg: float = 50.0  # EMA half-life in thousands of images (Karras et al. 2022)
    ema_rampup: float = 0.05  # EMA half-life at most this fraction of images seen; 0 disables
    bf16: bool = False  # bfloat16 autocast (CPU and CUDA)
    compile: bool = False  # torch.compile the network
    channels_last: bool | None = None  # channels-last image layout; None: on CUDA only (slower on CPU)
    seed: int = 0  # seed of data order, noise and initialization
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    log_every: int = 25  # steps between metrics.jsonl lines
    sample_every: int = 1000  # steps between sample grids (0 disables)
    checkpoint_every: int = 500  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 2  # older train states kept in checkpoints/
    threads: int | None = None  # torch CPU threads; None: PyTorch's default


@dataclass(frozen=True)
class SampleConfig:
    sampler: str = "dpmpp-2m"  # a name from unblur.sampling.SAMPLERS
    steps: int = 20  # sampler steps
    grid: str = "auto"  # auto (vp: trailing; else karras) | karras | logsnr | leading | trailing | linspace | ddim
    clip: bool = True  # clamp x0_hat to the data range [-1, 1] (images only)
    grid_n: int = 64  # images in the periodic training grids


@dataclass(frozen=True)
class CondConfig:
    classes: bool = False  # condition on the data's class labels (sub-folders, NAME.labels.npy, digits)
    text_encoder: str = "none"  # captions through: none | minilm | learned | PATH or hub id of an HF encoder
    image: str = "none"  # none | superres: condition on a low-resolution copy (channel concatenation)
    superres_factor: int = 4  # image=superres: the low-resolution copy is this many times smaller
    dropout: float = 0.1  # per key and sample, probability of training on the null condition (CFG)
    max_tokens: int = 32  # longest caption in tokens; longer ones are truncated with a warning
    cross_attn_resolutions: tuple[int, ...] | None = None  # factors with cross-attention; None: model's attn
    learned_dim: int = 128  # text_encoder=learned: width of its token features
    learned_layers: int = 2  # text_encoder=learned: transformer layers
    guidance: float = 3.0  # default guidance scale of `unblur sample` for class and text conditions


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    cond: CondConfig = field(default_factory=CondConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        return apply_overrides(cls(), d)


SECTIONS = {f.name: f.type for f in fields(Config)}


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {name: hints[name] for name in SECTIONS}


def _nearest(word: str, options) -> str:
    near = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Convert a TOML value or a --set string to the field's type, strictly."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        elem = args[0]
        out = tuple(_convert(v, elem, key) for v in value)
        if len(args) == 2 and args[1] is not Ellipsis and len(out) != 2:
            raise ValueError(f"{key} needs 2 values, got {len(out)}: {value!r}")
        return out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{key} must be an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be an integer, got {value!r}") from None
        if f != int(f):
            raise ValueError(f"{key} must be an integer, got {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number, got {value!r}") from None
    if tp is str:
        return str(value)
    raise TypeError(f"unsupported config type {tp} for {key}")


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """A new Config with ``{"section": {"key": value}}`` or ``{"section.key": value}`` applied."""
    nested: dict[str, dict[str, Any]] = {}
    for k, v in overrides.items():
        if isinstance(v, dict):
            nested.setdefault(k, {}).update(v)
        elif "." in k:
            sec, key = k.split(".", 1)
            nested.setdefault(sec, {})[key] = v
        else:
            raise ValueError(f"config key {k!r} needs a section: one of {', '.join(SECTIONS)} (e.g. train.lr)")
    sections = _section_types()
    new = {}
    for sec, values in nested.items():
        if sec not in sections:
            raise ValueError(
                f"unknown config section {sec!r}{_nearest(sec, sections)}; sections: {', '.join(sections)}"
            )
        sec_cls = sections[sec]
        hints = typing.get_type_hints(sec_cls)
        current = getattr(cfg, sec)
        changes = {}
        for key, value in values.items():
            if key not in hints:
                valid = [f"{sec}.{h}" for h in hints]
                raise ValueError(
                    f"unknown config key {sec}.{key}{_nearest(f'{sec}.{key}', valid)}; "
                    f"keys of [{sec}]: {', '.join(hints)}"
                )
            changes[key] = _convert(value, hints[key], f"{sec}.{key}")
        new[sec] = dataclasses.replace(current, **changes)
    return dataclasses.replace(cfg, **new)


def parse_set(items: list[str]) -> dict[str, str]:
    """``["train.lr=2e-4", ...]`` -> ``{"train.lr": "2e-4"}``."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects section.key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {e}") from None


def describe() -> str:
    """Every key with its default, for ``--help`` and the docs."""
    lines = []
    cfg = Config()
    for sec in SECTIONS:
        for f in fields(getattr(cfg, sec)):
            lines.append(f"{sec}.{f.name} = {getattr(getattr(cfg, sec), f.name)!r}")
    return "\n".join(lines)
