"""Fixtures shared by the test files. The expensive ones (a trained tiny run) are made once per
test session and shared: a test that reads a run uses the fixture itself, a test that changes one
(resume, overwrite) works on a copy (``copy_run``); a test that needs a training of its own says
why where it trains."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def _run_unblur(*args):
    """``python -m unblur ARGS`` as a user runs it: the completed process, output captured."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "unblur", *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def unblur_cli():
    return _run_unblur


# -- trained tiny runs, made once per session -----------------------------------------------------

# The smallest U-Net on the 8x8 digits, every step logged, nothing written but the run's files.
TINY_UNET = {
    "data.source": "builtin:digits",
    "model.base_channels": 8,
    "model.channel_mult": "1,2",
    "model.num_res_blocks": 1,
    "train.batch_size": 8,
    "train.log_every": 1,
    "train.sample_every": 0,
    "train.checkpoint_every": 0,
    "train.keep_checkpoints": 0,
    "sample.grid_n": 0,
}
TINY_STEPS = 4  # the steps of the shared tiny run (`tiny_run`)


def tiny_config(over: dict | None = None):
    """The Config of ``TINY_UNET`` with the overrides ``over``."""
    from unblur.config import Config, apply_overrides

    return apply_overrides(Config(), {**TINY_UNET, **(over or {})})


def train_tiny(out: Path, **over) -> Path:
    """Train ``TINY_UNET`` (with ``over``) into ``out`` through the library; returns ``out``."""
    from unblur.training import train

    train(tiny_config(over), out, progress=False)
    return out


def copy_run(run: Path, to: Path) -> Path:
    """A copy of a shared run for a test that changes it (resumes, overwrites, breaks it)."""
    shutil.copytree(run, to)
    return to


@pytest.fixture(name="tiny_config", scope="session")
def _tiny_config():
    """``tiny_config(over)``: the Config ``tiny_run`` was trained with, changed by ``over``."""
    return tiny_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny digits U-Net trained ``TINY_STEPS`` steps (``TINY_UNET``). Read it; copy it to change it."""
    return train_tiny(tmp_path_factory.mktemp("tiny") / "run", **{"train.steps": TINY_STEPS})


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> Path:
    """A copy of ``tiny_run`` in ``tmp_path / "run"``, for a test that resumes, overwrites or breaks it."""
    return copy_run(tiny_run, tmp_path / "run")


@pytest.fixture(scope="session")
def cold_run(tmp_path_factory):
    """``cold_run(kind)``: a tiny run of the cold process ``kind`` trained one step, once per
    session (`show forward` in test_runs.py and restoring in test_cli_polish.py read them)."""
    runs: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in runs:
            over = {"process.kind": kind, "train.steps": 1}
            if kind == "blend":
                over["process.blend_data"] = "builtin:digits"
            if kind == "desaturate":
                over["data.channels"] = 3
            runs[kind] = train_tiny(tmp_path_factory.mktemp(f"cold-{kind}") / kind, **over)
        return runs[kind]

    return get


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory) -> Path:
    """An MLP trained 20 steps on builtin:toy2d:gaussians8 (known density: eval's nll, show toy)."""
    from unblur.config import Config, apply_overrides
    from unblur.training import train

    run = tmp_path_factory.mktemp("toy") / "toy"
    cfg = apply_overrides(Config(), {"data.source": "builtin:toy2d:gaussians8", "model.hidden": 64,
                                     "model.depth": 2, "train.steps": 20, "train.batch_size": 64,
                                     "train.sample_every": 0, "train.checkpoint_every": 0, "sample.grid_n": 0})
    train(cfg, run, progress=False)
    return run
