"""``load_data(spec)``: one entry point for every kind of data unblur trains on."""

from __future__ import annotations

import os
from pathlib import Path

from ..images import IMAGE_EXTENSIONS
from ..utils import choice_error
from .arrays import load_npy
from .base import Data
from .builtin import DEFAULT_TOY2D_N, builtin_names, load_digits, load_toy2d
from .folder import load_folder
from .shapes import load_shapes

SPEC_HELP = "a folder of images, a .npy file, builtin:digits, builtin:shapes[:pairs] or builtin:toy2d:NAME"


# The loaders share their keyword options on purpose (load_data forwards them by name).
def load_data(
    spec: str | os.PathLike,
    *,
    size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    keep_aspect: bool = False,
    max_bad_fraction: float = 0.1,
    n: int | None = None,
    seed: int = 0,
    workers: int | None = None,
) -> Data:
    """Load a whole data set into memory.

    Args:
        spec: a folder of images (see ``unblur.data.folder``), a ``.npy`` file (see
            ``unblur.data.arrays``), ``builtin:digits`` or ``builtin:toy2d:NAME``.
        size: images only; an int (square) or (H, W). Folders default to their most common
            size (shorter side at most 32: larger photos train at 32, with a note), .npy files
            and digits to their own size (digits are upsampled bilinearly).
        channels: images only; 1 or 3. Folders default to what most images hold (grey or
            colour; a tie is colour), with a note when they are mixed.
        keep_aspect: folders only; keep the most common aspect ratio instead of a square.
        max_bad_fraction: folders only; the fraction of unreadable files skipped with a
            warning before loading fails.
        n: builtin:toy2d and builtin:shapes only; the number of points (default 20,000) or images
            (default 10,000).
        seed: builtin:toy2d and builtin:shapes only; the seed of the generator the points are drawn from.
        workers: folders only; decoding threads (default: the CPU count, at most 8).
    """
    spec = os.fspath(spec)
    if spec.startswith("builtin:"):
        name = spec[len("builtin:") :]
        if name.startswith("toy2d"):
            _only(spec, "vector data", size=size, channels=channels, keep_aspect=keep_aspect)
            toy = name[len("toy2d:") :] if name.startswith("toy2d:") else ""
            if not toy:
                raise choice_error("built-in data set", spec, [f"builtin:{b}" for b in builtin_names()])
            return load_toy2d(toy, n=DEFAULT_TOY2D_N if n is None else n, seed=seed, source=spec)
        if name in ("shapes", "shapes:pairs"):
            _only(spec, "folders", keep_aspect=keep_aspect)
            return load_shapes(n=10000 if n is None else n, seed=seed, size=size, channels=channels,
                               pairs=name == "shapes:pairs", source=spec)
        if name == "digits":
            _only(spec, "builtin:toy2d", n=n)
            _only(spec, "folders", keep_aspect=keep_aspect)
            return load_digits(size=size, channels=channels, source=spec)
        raise choice_error("built-in data set", spec, [f"builtin:{b}" for b in builtin_names()])

    _only(spec, "builtin:toy2d", n=n)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".npy":
        _only(spec, "folders", keep_aspect=keep_aspect)
        return load_npy(path, size=size, channels=channels, source=spec)
    if path.is_dir():
        return load_folder(
            path,
            size=size,
            channels=channels,
            keep_aspect=keep_aspect,
            max_bad_fraction=max_bad_fraction,
            workers=workers,
            source=spec,
        )
    if not path.exists():
        raise ValueError(f"data {spec!r} does not exist; give {SPEC_HELP}")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise ValueError(f"{spec!r} is a single image; give the folder that holds the images")
    raise ValueError(f"cannot load {spec!r} (a {path.suffix or 'extension-less'} file); give {SPEC_HELP}")


def _only(spec: str, where: str, **given) -> None:
    """Reject options that do not apply to ``spec`` (they would otherwise be silently ignored)."""
    for name, value in given.items():
        if value not in (None, False):
            raise ValueError(f"{name}={value!r} applies to {where} only, not to {spec!r}")


def load_training_data(cfg) -> Data:
    """The data a run trains on, read as its ``[data]`` config says (size, channels, the
    built-in sets' item count and seed)."""
    d = cfg.data
    size = None if d.size is None else (d.size[0] if len(d.size) == 1 else tuple(d.size))
    kwargs: dict = {"size": size, "channels": d.channels, "max_bad_fraction": d.max_bad_fraction}
    if d.keep_aspect:
        kwargs["keep_aspect"] = True
    if d.source.startswith("builtin:toy2d"):
        kwargs["n"] = d.num_points
        kwargs["seed"] = cfg.train.seed
    if d.source.startswith("builtin:shapes"):
        kwargs["n"] = d.num_images
        kwargs["seed"] = cfg.train.seed
    return load_data(d.source, **kwargs)


def data_block(data: Data) -> list[str]:
    """The data's summary as the lines of a block: ``data: SOURCE``, then indented details."""
    first, *rest = data.summary().splitlines()
    return [f"data: {first.removeprefix('source: ')}", *(f"  {line}" for line in rest)]
