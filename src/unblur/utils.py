"""A small helper vocabulary, defined once and imported everywhere."""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .types import Generator


def append_dims(x: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dimensions so that ``x`` has ``ndim`` dimensions."""
    missing = ndim - x.ndim
    if missing < 0:
        raise ValueError(f"cannot append dims: tensor has {x.ndim} dims, target is {ndim}")
    return x[(...,) + (None,) * missing]


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension except the first: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def sum_flat(x: Tensor) -> Tensor:
    """Sum over every dimension except the first: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a module's parameters (the last layer of a residual branch) and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def expand_sigma(sigma: Tensor | float, batch: int, like: Tensor) -> Tensor:
    """A noise level as a (B,) tensor on ``like``'s device and dtype."""
    sigma = torch.as_tensor(sigma, device=like.device, dtype=like.dtype)
    if sigma.ndim == 0:
        return sigma.expand(batch)
    if sigma.shape != (batch,):
        raise ValueError(f"sigma must be a scalar or have shape ({batch},), got {tuple(sigma.shape)}")
    return sigma


def randn_like(x: Tensor, generator: Generator = None) -> Tensor:
    """Standard normal noise shaped like ``x``.

    ``generator`` is one ``torch.Generator`` for the whole batch, or a sequence with one
    generator per sample, in which case sample ``i`` draws only from ``generator[i]`` and so
    does not depend on the rest of its batch.
    """
    return randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


# randn and rand share their signature on purpose (torch.randn / torch.rand); the body is _per_sample.
def randn(
    shape: Sequence[int],
    *,
    generator: Generator = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Standard normal noise of ``shape`` from one generator or one per sample (see randn_like)."""
    return _per_sample(torch.randn, shape, generator, device, dtype)


def rand(
    shape: Sequence[int],
    *,
    generator: Generator = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Uniform [0, 1) numbers of ``shape``, from one generator or one per sample."""
    return _per_sample(torch.rand, shape, generator, device, dtype)


def _per_sample(fn, shape: Sequence[int], generator: Generator, device, dtype) -> Tensor:
    """``fn(shape)`` from one generator, or row i from ``generator[i]`` when given one per sample."""
    if generator is None or isinstance(generator, torch.Generator):
        return _draw(fn, tuple(shape), generator, device, dtype)
    gens = list(generator)
    if len(gens) != shape[0]:
        raise ValueError(
            f"got {len(gens)} generators for a batch of {shape[0]}: give one per sample or one in all"
        )
    return torch.cat([_draw(fn, (1, *shape[1:]), g, device, dtype) for g in gens])


def _draw(fn, shape, generator, device, dtype) -> Tensor:
    # Draw on the generator's own device, then move: a CPU generator gives the same numbers
    # whatever device the sample lives on.
    gen_device = generator.device if generator is not None else device
    out = fn(shape, generator=generator, device=gen_device, dtype=dtype or torch.float32)
    return out.to(device) if device is not None else out


def seeded_generators(seeds: Iterable[int], device: str | torch.device = "cpu") -> list:
    """One generator per seed: the per-sample generators that make images batch-independent."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; anything else is checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available here: use --device cpu")
    return device


def choice_error(kind: str, value: object, choices: Iterable[str]) -> ValueError:
    """A ValueError naming the bad value, the accepted ones, and the nearest match."""
    choices = sorted(choices)
    near = difflib.get_close_matches(str(value), choices, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return ValueError(f"unknown {kind} {value!r}{hint}; accepted: {', '.join(choices)}")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once: os.umask can only be read by setting it


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half-written.

    ``sync`` flushes the file to the disk before the rename, so even a power loss leaves the old
    or the new file; without it (many small outputs) a killed process still never leaves a
    partial file, but a crash of the whole machine may.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # the mode open() would give (mkstemp makes 0600 files)
            os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file written by appends (metrics, sample records): a last line
    cut short by a kill during an append is dropped; a bad line before it is a ValueError naming
    the file and line. A missing file has no records."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):
                break
            raise ValueError(f"{path}:{i} is not JSON ({e}): the file is damaged; remove that line") from None
        if isinstance(rec, dict):
            out.append(rec)
    return out
