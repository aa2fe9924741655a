"""What a model kind is: a ``ModelKind`` (its defaults, checks, data, network, how its folder
opens and describes itself) and the ``TrainingTask`` it hands the trainer (the loss of a batch
and everything else that differs between kinds), kept in the ``MODEL_KINDS`` registry.

The trainer is the loop only: it asks the task for the per-sample loss of a micro-batch, steps
the optimizer, keeps the EMA, writes checkpoints (with the task's export metadata and extra
state) and asks the task for a picture at each grid step. Nothing outside ``kinds/`` compares
``model.kind`` to a string; ``kind_of(cfg)`` answers with the object.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from ..config import SECTIONS, Config, apply_overrides
from ..data import Data
from ..processes import PROCESSES
from ..processes.cold import check_process_config
from ..types import DataInfo
from ..utils import choice_error


@dataclass
class Prepared:
    """The training data as a kind prepares it: the config it settles (contexts chosen from the
    data, statistics measured once), the data the loop draws from, its description, and the
    objects a kind keeps for its task (a latent space, an encoder)."""

    cfg: Config
    data: Data
    info: DataInfo
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class PrepareContext:
    """What a kind may use to prepare its data: where the run lives, the resumed state's
    recorded data description (None for a new run), the keys the user gave, and the run's voice."""

    device: torch.device
    out: Path
    recorded: dict | None
    explicit: set[str] | None
    say: Callable[[str], None]
    progress: bool
    main: bool = True  # rank 0 of a distributed run (writes files)


@dataclass
class TaskContext:
    """What a training task is built from. ``make_run(net, process)`` turns a network into the
    ``runs.Run`` the task samples its grids with (the trainer supplies it: runs sit above kinds)."""

    cfg: Config
    prepared: Prepared
    net: nn.Module
    device: torch.device
    out: Path
    autocast: Callable[[], contextlib.AbstractContextManager]
    world: int
    say: Callable[[str], None]
    progress: bool
    make_run: Callable[..., Any]
    layout: Callable[[Tensor], Tensor] = lambda x: x  # a batch in the network's memory format (channels-last)


class TrainingTask(Protocol):
    """The part of training that differs between model kinds. Every method is called by the
    loop in ``training/trainer.py`` and by nothing else."""

    loss_module: nn.Module  # the module whose forward the loss runs through (compiled, DDP-wrapped)
    x_train: Tensor  # the items the loop draws batches from (the training split), on the device

    def loss(self, module: nn.Module, x0: Tensor, idx: Tensor, generator: torch.Generator, *,
             step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """(per-sample loss (B,), logged parts) of the micro-batch ``x0`` = ``x_train[idx]``,
        computed through ``module`` (the wrapped ``loss_module``); randomness from ``generator``."""
        ...

    def after_step(self, *, step: int, lr: float, grad_clip: float) -> dict[str, float]:
        """What runs after the optimizer's step (a bound kept, a discriminator's own step); its logged parts."""
        ...

    def export(self, ema: nn.Module, *, step: int, evaluate: bool) -> tuple[dict[str, str] | None, dict[str, Any]]:
        """(extra metadata for ``model.safetensors``, held-out metrics to log) at a checkpoint;
        the metrics only when ``evaluate`` (once per step)."""
        ...

    def grid(self, ema: nn.Module, path: Path, *, step: int, log: Callable[[dict], None]) -> Path | None:
        """Write the run's picture at ``path`` (samples, reconstructions); None when it draws none."""
        ...

    def state(self) -> dict[str, Any]:
        """The task's extra resume state (a discriminator and its optimizer)."""
        ...

    def load_state(self, state: dict[str, Any]) -> None:
        ...

    def describe(self, how: str) -> str:
        """One line on the network as built (``how`` it was sized: a preset, given, the run's own)."""
        ...


class ModelKind:
    """A kind of run folder. Subclasses set the class attributes and override what differs;
    ``register`` puts one instance in ``MODEL_KINDS``."""

    name: ClassVar[str]  # the registry name ("diffusion", "autoencoder", ...)
    config_names: ClassVar[tuple[str, ...]]  # the values of ``model.kind`` that select it
    help: ClassVar[str]  # one line for ``unblur train --model``'s help
    samples: ClassVar[bool] = False  # opens as a ``runs.Run`` (a denoiser); else ``open`` says what it opens as
    sizes_section: ClassVar[str] = "model"  # the config section holding its network's sizes
    # Config keys this kind sets where the user did not: the settings its benchmark measured.
    defaults: ClassVar[dict[str, Any]] = {}

    def check(self, cfg: Config) -> None:
        """Refuse what this kind cannot do with ``cfg`` (a ValueError naming the key and what to do)."""

    def prepare(self, cfg: Config, data: Data, ctx: PrepareContext) -> Prepared:
        """The training data of this kind from the loaded ``data`` (latents, embeddings, captions)."""
        raise NotImplementedError

    def size(self, cfg: Config, info: DataInfo, device: torch.device) -> tuple[Config, str | None]:
        """``cfg`` with network sizes the user left open filled in, and words on how (None: as given)."""
        return cfg, None

    def build_net(self, cfg: Config, info: DataInfo) -> nn.Module:
        raise NotImplementedError

    def task(self, ctx: TaskContext) -> TrainingTask:
        raise NotImplementedError

    def refusal(self, path: Path, cfg: Config, info: DataInfo) -> str:
        """Why a folder of this kind does not open as a sampling ``Run``, and what it is for."""
        return f"{str(path)!r} is a {self.name} run, which does not sample"

    def open(self, path: str | Path, *, device: str | torch.device = "cpu") -> Any:
        """The object a folder of this kind opens as (for kinds that are not a ``Run``)."""
        raise ValueError(f"a {self.name} run opens as a Run: unblur.runs.Run.load({str(path)!r})")

    def preview(self, cfg: Config, data: Data, device: torch.device) -> list[str]:
        """What training ``cfg`` on ``data`` would use, in the lines ``unblur train`` says (no training)."""
        return []

    def describe_folder(self, path: Path, cfg: Config, info: DataInfo) -> list[str] | None:
        """``unblur info``'s lines for a folder of this kind (None: the generic description of a ``Run``)."""
        return None


MODEL_KINDS: dict[str, ModelKind] = {}
_BY_CONFIG_NAME: dict[str, ModelKind] = {}


def register(cls: type[ModelKind]) -> type[ModelKind]:
    """Class decorator: put one instance of ``cls`` in ``MODEL_KINDS`` under ``cls.name``."""
    kind = cls()
    taken = [n for n in cls.config_names if n in _BY_CONFIG_NAME and _BY_CONFIG_NAME[n].name != cls.name]
    if taken:
        raise ValueError(f"model.kind names {taken} already belong to another kind")
    MODEL_KINDS[cls.name] = kind
    for n in cls.config_names:
        _BY_CONFIG_NAME[n] = kind
    return cls


def config_names() -> tuple[str, ...]:
    """Every value ``model.kind`` may take, in registry order."""
    return tuple(_BY_CONFIG_NAME)


def kind_of(cfg: Config | str) -> ModelKind:
    """The kind a config (or a ``model.kind`` value) selects; a ValueError naming the choices."""
    name = cfg if isinstance(cfg, str) else cfg.model.kind
    kind = _BY_CONFIG_NAME.get(name)
    if kind is None:
        raise choice_error("model.kind", name, config_names())
    return kind


def _flat(cfg: Config) -> Iterator[tuple[str, Any]]:
    for sec in SECTIONS:
        section = getattr(cfg, sec)
        for f in fields(section):
            yield f"{sec}.{f.name}", getattr(section, f.name)


def given_keys(cfg: Config) -> set[str]:
    """The keys of ``cfg`` that differ from ``Config()``'s: what a library caller set."""
    base = dict(_flat(Config()))
    return {k for k, v in _flat(cfg) if base[k] != v}


def resolve(cfg: Config, explicit: set[str] | None = None) -> Config:
    """``cfg`` with its kind's defaults where the user gave nothing, then checked by the kind.

    ``explicit``: the keys the user gave (the CLI knows them); None (a library call) counts the
    keys that differ from ``Config()``'s defaults as given, so ``train(cfg)`` with
    ``model.kind=prior`` trains the same prior as ``unblur train --model prior``.
    """
    kind = kind_of(cfg)
    given = given_keys(cfg) if explicit is None else set(explicit)
    todo = {k: v for k, v in kind.defaults.items() if k not in given}
    if todo:
        cfg = apply_overrides(cfg, todo)
    if cfg.process.kind not in PROCESSES:
        raise choice_error("process.kind", cfg.process.kind, PROCESSES)
    kind.check(cfg)
    check_process_config(cfg.process)  # the options of the chosen degradation
    return cfg


def contexts_asked(cfg: Config) -> list[str]:
    """The ``cond.*`` keys of ``cfg`` that ask for a context (classes, captions, an image, an
    encoder's embeddings): what a kind trained without conditioning refuses by name."""
    c = cfg.cond
    return [k for k, on in (("cond.classes", c.classes), ("cond.text_encoder", c.text_encoder != "none"),
                            ("cond.image", c.image != "none"), ("cond.clip", bool(c.clip))) if on]


def preview(cfg: Config) -> list[str]:
    """``unblur data``: the data's summary and what ``unblur train`` would make of it (contexts,
    network), as the lines it would say, without training."""
    from ..data import data_block, load_training_data
    from ..utils import resolve_device

    data = load_training_data(cfg)
    return [*data_block(data), *kind_of(cfg).preview(cfg, data, resolve_device(cfg.train.device))]
