"""The run configuration: frozen dataclasses with commented defaults, one section per part.

``--set train.lr=2e-4`` and a TOML file with ``[train] lr = 2e-4`` reach the same field.
Unknown sections or keys are errors that name the nearest valid key, and every value is checked
against its field's rule (`RULES`) when the config is resolved, so ``--dry-run`` refuses it. The resolved config is
saved with every artefact, so a run can be sampled or resumed with no flags.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from collections.abc import Callable
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
    latent: str = ""  # an autoencoder (unblur run or diffusers folder): diffuse in its latent space; "" = pixels
    embed_ae: bool = False  # latent runs: copy the autoencoder's weights into the run folder


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "auto"  # unet | mlp | auto (unet for images, mlp for vectors) | autoencoder (see [autoencoder]) |
    #   clip (a contrastive text-image encoder, see [clip]) | prior (diffusion over a clip run's image embeddings
    #   given its text embeddings: model.prior_net; needs cond.clip)
    # The four U-Net sizes: None takes the preset for the image size and the device (nets.presets), which
    # training writes into the run's config; a config saved with None builds the reference (GPU) sizes.
    base_channels: int | None = None  # U-Net width at the top level
    channel_mult: tuple[int, ...] | None = None  # width multiplier per level
    num_res_blocks: int | None = None  # residual blocks per level
    attn_resolutions: tuple[int, ...] | None = None  # downsampling factors with self-attention (1 = full size)
    dropout: float = 0.0  # dropout inside residual blocks
    hidden: int = 128  # MLP width (and the prior transformer's width)
    depth: int = 4  # MLP residual blocks (and the prior transformer's layers)
    prior_net: str = "mlp"  # kind=prior: mlp (the residual MLP) | transformer (over the tokens [text embedding,
    #   noise level, noised image embedding, query], Ramesh et al. 2022)


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
    steps: int = 10000  # optimizer steps (the run also stops at `minutes`); `unblur train` given neither: 10 minutes
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
    # auto (vp: trailing; else karras) | karras | logsnr | leading | trailing | linspace | ddim | full
    grid: str = "auto"
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
    clip: str = ""  # a contrastive encoder run (--model clip): a U-Net is conditioned on its image embeddings (the
    #   unCLIP decoder), a --model prior on its text embeddings; "" = none
    clip_tokens: int = 4  # the decoder's extra context tokens projected from the image embedding (Ramesh et al.: 4)


@dataclass(frozen=True)
class AutoencoderConfig:
    # model.kind = autoencoder: the KL-regularised autoencoder of latent diffusion (Rombach et al. 2022), built as
    # diffusers' AutoencoderKL at small widths, trained on a pixel loss + kl_weight * KL [+ a structure term]
    # [+ a PatchGAN].
    downsampling: int = 4  # image pixels per latent pixel along each side: 4 | 8
    latent_channels: int = 4  # channels of the latent z
    widths: tuple[int, ...] | None = None  # width per level, log2(downsampling) + 1 of them; None: 32,64,64[,64]
    layers_per_block: int = 1  # resnets per encoder level (the decoder has one more)
    norm_groups: int = 8  # GroupNorm groups; must divide every width
    mid_attention: bool = True  # self-attention in the encoder's and decoder's middle blocks
    kl_weight: float = 1e-6  # weight of KL(q(z|x) || N(0, I)) summed over a latent, per image (SD: 1e-6)
    rec_loss: str = "l2"  # per-pixel reconstruction term: l2 (what PSNR measures) | l1 (SD's) | l1+l2
    logvar_init: float = 0.0  # initial bias of the posterior's log-variance (below 0: less noise on z at first)
    perceptual: str = "none"  # structure term, no download: none | ssim (1 - SSIM) | gradient (L1 of image
    #   gradients at 3 scales) | ssim+gradient. none: on 64x64 shapes, 1 - SSIM beside the pixel loss kept
    #   the small shapes' colours at the palette's mean for minutes (benchmarks/README.md, latent.py)
    perceptual_weight: float = 0.2  # its weight beside the per-pixel term (data in [-1, 1])
    discriminator: bool = False  # a PatchGAN trained on the hinge loss, with its own AdamW
    disc_start: int = 2000  # step the discriminator joins at; before it the reconstruction trains alone
    disc_weight: float = 0.5  # weight of the generator's adversarial term
    disc_adaptive: bool = True  # times ||grad rec|| / ||grad adv|| at the decoder's last layer (Esser et al. 2021)
    disc_width: int = 32  # channels of the discriminator's first layer (doubled per strided layer, at most 8x)
    disc_layers: int = 2  # its stride-2 layers: each patch logit sees a (2^(layers+1) + ...)-pixel window
    holdout: float = 0.05  # fraction of the images held out (seeded by train.seed) for PSNR and SSIM


@dataclass(frozen=True)
class ClipConfig:
    # model.kind = clip: an image encoder (a small CNN) and a projection of caption features into one normalised
    # embedding space, trained with the symmetric InfoNCE loss and a learned temperature (Radford et al. 2021).
    embed_dim: int = 64  # width of the shared embedding
    widths: tuple[int, ...] = (32, 64, 128)  # CNN width per level (each level halves the image)
    text_encoder: str = "minilm"  # caption features: minilm | learned | PATH or hub id of an HF encoder (frozen)
    text_hidden: int = 256  # width of the caption projection's hidden layer (text_head=mlp)
    text_head: str = "mlp"  # the caption projection: mlp (one hidden layer) | linear
    token_dropout: float = 0.0  # training: each caption token leaves the pooled mean with this probability
    #   (one always stays), so single words and new combinations of them get embeddings of their own
    temperature: float = 0.07  # initial temperature (logit scale 1 / temperature, learned)
    max_logit_scale: float = 100.0  # the learned logit scale is clamped to [1, this] (CLIP's bound)
    holdout: float = 0.05  # fraction of the pairs held out (seeded by train.seed) for retrieval and zero-shot
    max_tokens: int = 32  # longest caption in tokens
    learned_dim: int = 128  # text_encoder=learned: width of its token features
    learned_layers: int = 2  # text_encoder=learned: transformer layers


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    cond: CondConfig = field(default_factory=CondConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)

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


def _show(key: str) -> str:
    """A key as typed when it is printable, else quoted, so an error stays one line."""
    return key if key.isprintable() else repr(key)


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Convert a TOML value or a --set string to the field's type, strictly."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
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
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass  # "1e3" and "2.0" are integers too
        number = None if isinstance(value, bool) else _as_float(value)
        if number is None or not math.isfinite(number) or number != int(number):
            raise ValueError(f"{key} must be an integer, got {value!r}")
        return int(number)
    if tp is float:
        number = None if isinstance(value, bool) else _as_float(value)
        if number is None:
            raise ValueError(f"{key} must be a number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (list, tuple, dict)):
            raise ValueError(f"{key} must be a single value, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {tp} for {key}")


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """A new Config with ``{"section": {"key": value}}`` or ``{"section.key": value}`` applied,
    then checked as a whole (`validate`)."""
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
                    f"unknown config key {_show(f'{sec}.{key}')}{_nearest(f'{sec}.{key}', valid)}; "
                    f"keys of [{sec}]: {', '.join(hints)}"
                )
            changes[key] = _convert(value, hints[key], f"{sec}.{key}")
        new[sec] = dataclasses.replace(current, **changes)
    cfg = dataclasses.replace(cfg, **new)
    validate(cfg)
    return cfg


# -- what each value must be -----------------------------------------------------------------
# config.py imports nothing above it, so the names it accepts are kept here; tests/test_config.py
# checks that each tuple equals the registry it copies (sampling.SAMPLERS, grids.GRIDS, ...).
PERCEPTUAL = ("none", "ssim", "gradient", "ssim+gradient")  # objectives.PERCEPTUAL
SCHEDULES = ("linear", "scaled-linear", "cosine", "sigmoid")  # processes.gaussian.SCHEDULES
SAMPLERS = ("ddpm", "ddim", "euler", "euler-ancestral", "heun", "dpmpp-2m", "dpmpp-2m-sde", "pc-langevin",
            "cold", "cold-naive")  # sampling.SAMPLERS
GRIDS = ("auto", "karras", "logsnr", "leading", "trailing", "linspace", "ddim", "full")  # "auto" + grids.GRIDS
# The options of the cold degradations: checked, with the kind that reads them, by
# processes.cold.check_process_config (here only that their numbers are finite).
COLD_OPTIONS = ("blur_sigma_max", "blur_schedule", "pixelate_min", "mask_kind", "mask_fill", "mask_patch",
                "fade_width", "snow_density", "snow_flake", "noise_sigma_max", "cold_seed", "blend_data",
                "blur_start", "start_noise")


@dataclass(frozen=True)
class Rule:
    """What a value must be: ``ok(value)`` and the words for it; ``choices`` for a name."""

    ok: Callable[[Any], bool]
    want: str
    choices: tuple = ()


def _at_least(lo: float) -> Rule:
    return Rule(lambda v: v >= lo, f">= {lo}")


def _above(lo: float) -> Rule:
    return Rule(lambda v: v > lo, f"> {lo}")


def _within(lo: float, hi: float, *, below_hi: bool = False) -> Rule:
    return Rule(lambda v: lo <= v < hi if below_hi else lo <= v <= hi, f"in [{lo}, {hi}{')' if below_hi else ']'}")


def _one_of(*choices: Any) -> Rule:
    return Rule(lambda v: v in choices, "one of " + " | ".join(map(str, choices)), choices)


def _each(rule: Rule, *, what: str, fewest: int = 1, most: int | None = None) -> Rule:
    """A tuple of ``fewest`` to ``most`` (None: any number of) entries, every one passing ``rule``."""
    def ok(v: tuple) -> bool:
        return fewest <= len(v) <= (most or len(v)) and all(rule.ok(x) for x in v)

    return Rule(ok, f"{what}, each {rule.want}")


def _nonempty(what: str) -> Rule:
    return Rule(lambda v: bool(v.strip()) and v.isprintable(), what)


_SEED = _within(0, 2**63, below_hi=True)
_DEVICE = Rule(lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None, "auto | cpu | cuda | cuda:N | mps")

# "section.key" -> its rule. None passes where the field's type allows it (its comment says what
# None means); every float, here or not, must also be finite. Fields absent here are booleans
# and COLD_OPTIONS; tests/test_config.py keeps it so.
RULES: dict[str, Rule] = {
    "data.source": _nonempty("a folder, FILE.npy or builtin:NAME"),
    "data.size": _each(_at_least(1), what="S or H,W", most=2),
    "data.channels": _one_of(1, 3),
    "data.shift": _at_least(0),
    "data.max_bad_fraction": _within(0, 1),
    "data.num_points": _at_least(1),
    "data.num_images": _at_least(1),
    "data.latent": Rule(lambda v: v == "" or (bool(v.strip()) and v.isprintable()),
                        "an autoencoder run folder or diffusers AutoencoderKL folder (or empty: pixel space)"),
    # The kinds are a registry above this module (``unblur.kinds``): a name here, checked against it when the
    # config is resolved (``kinds.resolve``) or a run opens (``kinds.kind_of``), so a new kind needs no line here.
    "model.kind": Rule(lambda v: isinstance(v, str) and v.replace("-", "_").isidentifier(), "a model kind's name"),
    "model.base_channels": _at_least(1),
    "model.channel_mult": _each(_at_least(1), what="one or more multipliers (e.g. 1,2,2)"),
    "model.num_res_blocks": _at_least(1),
    "model.attn_resolutions": _each(_at_least(1), what="factors (e.g. 2,4)", fewest=0),
    "model.dropout": _within(0, 1, below_hi=True),
    "model.hidden": _at_least(1),
    "model.depth": _at_least(1),
    "model.prior_net": _one_of("mlp", "transformer"),
    # Forward processes are a registry above this module (``processes.PROCESSES``): a name here, checked against
    # it when the config is resolved (``kinds.resolve``) or a run is built, so a new process needs no line here.
    "process.kind": Rule(lambda v: isinstance(v, str) and v.replace("-", "_").isidentifier(), "a process's name"),
    "process.schedule": _one_of(*SCHEDULES),
    "process.num_steps": _at_least(2),
    "process.sigma_min": _above(0),
    "process.sigma_max": _above(0),
    "process.sigma_data": _above(0),
    "objective.prediction": _one_of("eps", "x0", "v"),
    "objective.loss": _one_of("l2", "l1"),
    "objective.weighting": _one_of("none", "min-snr"),
    "objective.min_snr_gamma": _above(0),
    "objective.p_mean": Rule(lambda v: True, "a number"),  # any finite log sigma
    "objective.p_std": _above(0),
    "objective.restore_loss": _one_of("l1", "l2"),
    "train.steps": _at_least(1),
    "train.minutes": _above(0),
    "train.batch_size": _at_least(1),
    "train.grad_accum": _at_least(1),
    "train.lr": _above(0),
    "train.weight_decay": _at_least(0),
    "train.betas": _each(_within(0, 1, below_hi=True), what="two betas", fewest=2, most=2),
    "train.warmup_steps": _at_least(0),
    "train.lr_schedule": _one_of("constant", "cosine"),
    "train.grad_clip": _at_least(0),
    "train.ema_halflife_kimg": _above(0),
    "train.ema_rampup": _at_least(0),
    "train.seed": _SEED,
    "train.device": _DEVICE,
    "train.log_every": _at_least(1),
    "train.sample_every": _at_least(0),
    "train.checkpoint_every": _at_least(0),
    "train.keep_checkpoints": _at_least(0),
    "train.threads": _at_least(1),
    "sample.sampler": _one_of(*SAMPLERS),
    "sample.steps": _at_least(1),
    "sample.grid": _one_of(*GRIDS),
    "sample.grid_n": _at_least(0),
    "cond.text_encoder": _nonempty("none | minilm | learned | a folder or hub id of an encoder"),
    "cond.image": _one_of("none", "superres"),
    "cond.superres_factor": _at_least(1),
    "cond.dropout": _within(0, 1),
    "cond.max_tokens": _at_least(1),
    "cond.cross_attn_resolutions": _each(_at_least(1), what="factors (e.g. 2,4)", fewest=0),
    "cond.learned_dim": _at_least(1),
    "cond.learned_layers": _at_least(1),
    "cond.guidance": _at_least(0),
    "cond.clip": Rule(lambda v: v == "" or (bool(v.strip()) and v.isprintable()),
                      "a contrastive encoder run folder (unblur train --model clip), or empty"),
    "cond.clip_tokens": _at_least(0),
    "clip.embed_dim": _at_least(2),
    "clip.widths": _each(_at_least(1), what="one width per level (e.g. 32,64,128)"),
    "clip.text_encoder": _nonempty("minilm | learned | a folder or hub id of an encoder"),
    "clip.text_hidden": _at_least(1),
    "clip.text_head": _one_of("mlp", "linear"),
    "clip.token_dropout": Rule(lambda v: 0 <= v < 1, "in [0, 1)"),
    "clip.temperature": Rule(lambda v: 0 < v <= 1, "in (0, 1]"),
    "clip.max_logit_scale": _at_least(1),
    "clip.holdout": Rule(lambda v: 0 < v <= 0.5, "in (0, 0.5]"),
    "clip.max_tokens": _at_least(1),
    "clip.learned_dim": _at_least(1),
    "clip.learned_layers": _at_least(1),
    "autoencoder.downsampling": _one_of(4, 8),
    "autoencoder.latent_channels": _at_least(1),
    "autoencoder.widths": _each(_at_least(1), what="one width per level (e.g. 32,64,64)", fewest=2),
    "autoencoder.layers_per_block": _at_least(1),
    "autoencoder.norm_groups": _at_least(1),
    "autoencoder.kl_weight": _at_least(0),
    "autoencoder.perceptual": _one_of(*PERCEPTUAL),
    "autoencoder.perceptual_weight": _at_least(0),
    "autoencoder.disc_start": _at_least(0),
    "autoencoder.disc_weight": _at_least(0),
    "autoencoder.disc_width": _at_least(1),
    "autoencoder.disc_layers": _within(1, 5),
    "autoencoder.holdout": Rule(lambda v: 0 < v <= 0.5, "in (0, 0.5]"),
    "autoencoder.rec_loss": _one_of("l1", "l2", "l1+l2"),
    "autoencoder.logvar_init": _within(-30.0, 20.0),
}

# Rules between fields of one section: (key reported, ok(section), what it must be).
PAIR_RULES: dict[str, tuple[Callable[[Any], bool], Callable[[Any], str]]] = {
    "process.sigma_max": (lambda p: p.sigma_max > p.sigma_min, lambda p: f"> process.sigma_min = {p.sigma_min}"),
    "train.batch_size": (lambda t: t.batch_size % t.grad_accum == 0,
                         lambda t: f"a multiple of train.grad_accum = {t.grad_accum}"),
    "autoencoder.widths": (lambda a: len(autoencoder_widths(a)) == _levels(a),
                           lambda a: f"{_levels(a)} widths (one per level) for autoencoder.downsampling = "
                           f"{a.downsampling}"),
    "autoencoder.norm_groups": (lambda a: all(w % a.norm_groups == 0 for w in autoencoder_widths(a)),
                                lambda a: f"a divisor of every width {list(autoencoder_widths(a))}"),
}


def _levels(a: AutoencoderConfig) -> int:
    return a.downsampling.bit_length()  # 4 -> 3 levels, 8 -> 4: one fewer halving than levels


def autoencoder_widths(a: AutoencoderConfig) -> tuple[int, ...]:
    """The autoencoder's width per level: ``autoencoder.widths``, or 32, 64, 64[, 64] for its downsampling."""
    return a.widths if a.widths is not None else (32, 64, 64, 64)[: _levels(a)]


def _refuse(key: str, value: Any, want: str, choices: tuple = ()) -> ValueError:
    near = _nearest(value, [str(c) for c in choices]) if isinstance(value, str) and choices else ""
    return ValueError(f"{key} must be {want}, got {value!r}{near}")


def validate(cfg: Config) -> None:
    """Check every value of ``cfg``: a ValueError naming the first bad key, its value and what
    it must be. `apply_overrides` (and so `Config.from_dict`) calls it."""
    for sec in SECTIONS:
        section = getattr(cfg, sec)
        for f in fields(section):
            key, value = f"{sec}.{f.name}", getattr(section, f.name)
            if value is None:
                continue  # only where the type allows it: the parser makes None nowhere else
            floats = value if isinstance(value, tuple) else (value,)
            if any(isinstance(x, float) and not math.isfinite(x) for x in floats):
                raise _refuse(key, value, "finite (not nan or inf)")
            rule = RULES.get(key)
            if rule is not None and not rule.ok(value):
                raise _refuse(key, value, rule.want, rule.choices)
    for key, (ok, want) in PAIR_RULES.items():
        sec, name = key.split(".")
        section = getattr(cfg, sec)
        if not ok(section):
            raise _refuse(key, getattr(section, name), want(section))
    _check_latent(cfg)  # what each model kind refuses is checked by the kind (``kinds.resolve``)


def _check_latent(cfg: Config) -> None:
    """What a latent run (``data.latent``) cannot combine with."""
    if not cfg.data.latent:
        if cfg.data.embed_ae:
            raise ValueError("data.embed_ae copies a latent run's autoencoder into the run: it needs --latent AE")
        return
    if cfg.data.shift:
        raise ValueError("data.shift translates pixels, which a latent run never sees: drop it with --latent")


def parse_set(items: list[str]) -> dict[str, str]:
    """``["train.lr=2e-4", ...]`` -> ``{"train.lr": "2e-4"}``."""
    out = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            raise ValueError(f"--set expects section.key=value (e.g. train.lr=2e-4), got {item!r}")
        out[k.strip()] = v.strip()
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """The sections of a TOML config file; a ValueError naming the file when it is missing, not
    UTF-8 or not TOML."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ValueError(f"config file {str(path)!r} {what}")
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8-sig"))  # a BOM (Notepad) is fine
    except UnicodeDecodeError as e:
        raise ValueError(f"config file {str(path)!r} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        reason = " ".join(str(e).split())
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {reason}") from None


def describe() -> str:
    """Every key with its default, for ``--help`` and the docs."""
    lines = []
    cfg = Config()
    for sec in SECTIONS:
        for f in fields(getattr(cfg, sec)):
            lines.append(f"{sec}.{f.name} = {getattr(getattr(cfg, sec), f.name)!r}")
    return "\n".join(lines)
