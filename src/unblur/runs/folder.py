"""A run folder as training writes it: a fresh folder or the one to resume, the atomic swap of
an ``--overwrite``, what a resumed run may change, and the checks that it resumes on its own data."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..config import Config
from ..types import DataInfo
from ..utils import atomic_write_bytes, read_jsonl
from .checkpoint import CONFIG_FILE, MODEL_FILE, STATE_FILE

RUN_FILES = (CONFIG_FILE, MODEL_FILE, STATE_FILE)


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
    "cond.clip",  # a moved encoder, found at its new path: its SHA-256 must be the one the run recorded
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


def absolute_paths(cfg: Config) -> Config:
    """``cfg`` with the paths it names (the data, a latent run's autoencoder, a prior's or a
    decoder's contrastive encoder) made absolute, so the run finds them from anywhere."""
    from dataclasses import replace

    d = replace(cfg.data, source=absolute_source(cfg.data.source))
    if d.latent:
        d = replace(d, latent=str(Path(d.latent).expanduser().resolve()))
    cond = cfg.cond
    if cond.clip:
        cond = replace(cond, clip=str(Path(cond.clip).expanduser().resolve()))
    return replace(cfg, data=d, cond=cond)
