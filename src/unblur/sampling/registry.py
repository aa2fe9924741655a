"""The samplers by name, each a small record of the function and what callers ask about it.

Every list of sampler names is generated from ``SAMPLERS``: the ``--sampler`` help
(``sampler_help``), the AUTOMATIC1111 and ComfyUI names read (``sampler_aliases``,
``resolve_sampler``) and written (``a1111_name``), the denoiser evaluations of a walk (``nfe``);
``config.SAMPLERS`` and the processes' ``samplers`` are pinned to it by tests.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


def one_per_step(steps: int, **options: Any) -> int:
    """One denoiser evaluation per step."""
    return int(steps)


@dataclass(frozen=True)
class Sampler:
    """A registered sampler, callable as its function: ``sampler(denoiser, x, grid, *, cond=None,
    generator=None, callback=None, **options) -> x0``."""

    name: str  # the canonical name (``sample.sampler``, ``--sampler``, records)
    fn: Callable[..., Tensor]  # the pure function with the shared signature (``sampling/samplers.py``)
    help: str  # a few words for ``--sampler``'s help: the method and its paper
    stochastic: bool = False  # draws fresh noise during the walk at its default options
    noise_options: Mapping[str, Any] = field(default_factory=dict)  # options that make a deterministic one draw
    a1111: str = ""  # AUTOMATIC1111's name, written into a PNG's parameters and read back ("": it has none)
    comfyui: str = ""  # ComfyUI's ``sampler_name``, read as an alias ("": it has none)
    evals: Callable[..., int] = one_per_step  # evals(steps, **options): denoiser evaluations of a walk

    def __call__(self, denoiser: Any, x: Tensor, grid: Tensor, **kwargs: Any) -> Tensor:
        return self.fn(denoiser, x, grid, **kwargs)


SAMPLERS: dict[str, Sampler] = {}
"""Every sampler by name, in registration order (``config.SAMPLERS``)."""


def register_sampler(sampler: Sampler) -> Sampler:
    """Add a sampler to ``SAMPLERS`` under its name."""
    if not sampler.name or sampler.name in SAMPLERS:
        raise ValueError(f"a sampler needs a new name, got {sampler.name!r} (taken: {', '.join(SAMPLERS)})")
    if not sampler.help:
        raise ValueError(f"sampler {sampler.name!r} needs a help text (the method, for --sampler's help)")
    SAMPLERS[sampler.name] = sampler
    return sampler


def sampler_aliases() -> dict[str, tuple[str, str | None]]:
    """The names AUTOMATIC1111's web UI and ComfyUI give the samplers, lower case -> (sampler,
    grid or None): their names where they differ from ours, and AUTOMATIC1111's name + " karras"
    (its older names that also pick the Karras schedule, "DPM++ 2M Karras")."""
    out: dict[str, tuple[str, str | None]] = {}
    for s in SAMPLERS.values():
        for alias in (s.a1111, s.comfyui):
            if alias and alias.lower() != s.name:
                out[alias.lower()] = (s.name, None)
    for s in SAMPLERS.values():
        if s.a1111:
            out[f"{s.a1111.lower()} karras"] = (s.name, "karras")
    return out


def _squash(name: str) -> str:
    """A name with case, spaces, dashes and underscores gone and "++" read as "pp": the key near misses share."""
    return re.sub(r"[\s_-]+", "", name.lower().replace("++", "pp"))


def sampler_error(name: str) -> ValueError:
    """An unknown sampler name: the one it nearly spells (ignoring case, spaces, dashes and
    underscores, "++" as "pp"), else the closest by spelling, and every accepted name."""
    aliases = sampler_aliases()

    def offer(key: str) -> str:  # the sampler an alias names, or the alias itself where it picks a grid too
        sampler, grid = aliases.get(key, (key, None))
        return key if grid else sampler

    by_squash = {_squash(k): offer(k) for k in [*SAMPLERS, *aliases]}
    near = by_squash.get(_squash(name))
    if near is None:  # "euler ancestal": the closest spelling, the "a" / SDE variants kept apart from their namesakes
        close = difflib.get_close_matches(name.lower(), [*SAMPLERS, *aliases], n=1, cutoff=0.75)
        near = offer(close[0]) if close else None
    hint = f" (did you mean {near!r}?)" if near else ""
    web = ", ".join(f"{k!r}" for k, (_, grid) in aliases.items() if grid is None)  # the " karras" forms in words
    return ValueError(f"unknown sampler {name!r}{hint}; accepted: {', '.join(SAMPLERS)}, and the web UIs' names "
                      f"{web} (any case; AUTOMATIC1111's name + ' Karras', e.g. 'DPM++ 2M Karras', also picks the "
                      "karras grid)")


def resolve_sampler(name: str) -> tuple[str, str | None]:
    """(sampler, grid or None) for a sampler name or a web UI's alias ("Euler a", "DPM++ 2M Karras").

    The grid is that of a "Karras" alias and None otherwise; an unknown name is a ValueError
    with the nearest accepted one and the list.
    """
    key = " ".join(str(name).lower().split())
    if key in SAMPLERS:
        return key, None
    aliases = sampler_aliases()
    if key in aliases:
        return aliases[key]
    raise sampler_error(name)


def get_sampler(name: str) -> Sampler:
    """The sampler registered under ``name`` (ValueError listing the names otherwise; an alias
    is resolved by ``resolve_sampler`` first)."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise sampler_error(name) from None


def nfe(name: str, steps: int, **options: Any) -> int:
    """Denoiser evaluations a sampler makes over ``steps`` steps (the cost axis of sweeps)."""
    return get_sampler(name).evals(steps, **options)


def a1111_name(name: str) -> str:
    """The name AUTOMATIC1111 gives the sampler ``name`` ("Euler a"), which ``resolve_sampler``
    reads back; ``name`` itself where it has none (or is no registered sampler: "one-shot")."""
    s = SAMPLERS.get(name)
    return s.a1111 if s is not None and s.a1111 else name


def sampler_help() -> str:
    """``--sampler``'s help: every sampler with its few words, then the web UIs' names."""
    names = " | ".join(f"{s.name} ({s.help}{', stochastic' if s.stochastic else ''})" for s in SAMPLERS.values())
    web = ", ".join(f"'{s.a1111}'" for s in SAMPLERS.values() if s.a1111 and s.a1111.lower() != s.name)
    comfy = ", ".join(s.comfyui for s in SAMPLERS.values() if s.comfyui and s.comfyui != s.name)
    return (f"{names}; or a web UI's name in any case: {web}, with ' Karras' also picking the karras grid "
            f"('DPM++ 2M Karras'), or ComfyUI's {comfy}")
