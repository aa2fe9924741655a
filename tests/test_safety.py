"""Nothing a user does loses their work: the old run survives a failed --overwrite, outputs
never overwrite inputs, one writer per folder, streamed and continued sample folders, resume
that says what it keeps, and one-line errors for the expected failures."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unblur.cli import main
from unblur.runs.lock import acquire

OLD = Path(__file__).parent / "fixtures" / "old_runs"
TINY = ["--set", "model.base_channels=8", "--set", "model.channel_mult=1,2", "--set", "model.num_res_blocks=1",
        "--set", "train.batch_size=8", "--set", "train.sample_every=0", "--set", "sample.grid_n=0",
        "--set", "train.log_every=1"]


def _cli(*args):
    return [sys.executable, "-m", "unblur", *map(str, args)]


def _error(err: str) -> str:
    """The one error line of a command's stderr (progress bars aside); fails if there are more."""
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if "error:" in ln or "Traceback" in ln]
    assert len(lines) == 1, err
    return lines[0]


def _train(out, *extra):
    return main(["train", "--data", "builtin:digits", "--out", str(out), "--steps", "2", *TINY, *map(str, extra)])


def _digits(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(folder / f"{i}.png")
    return folder


# -- 1. --overwrite keeps the old run until the new one has a checkpoint -----------------------

def _steps(run: Path) -> int:
    return json.loads((run / "config.json").read_text())["train"]["steps"]


def test_a_failed_overwrite_keeps_the_old_run(tiny_run_copy, tmp_path, capsys):
    run = tiny_run_copy
    before = (run / "model.safetensors").read_bytes()
    for bad in (["--data", str(tmp_path / "typo")], ["--set", "train.lr=-1"], ["--set", "process.mask_kind=x",
                                                                                 "--process", "mask"]):
        assert main(["train", "--out", str(run), "--overwrite", "--steps", "2", *TINY, *bad]) == 2
        _error(capsys.readouterr().err)
        assert (run / "model.safetensors").read_bytes() == before
    # A successful overwrite replaces the run whole, and leaves nothing beside it.
    assert _train(run, "--overwrite", "--set", "train.seed=1") == 0
    assert (run / "model.safetensors").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_interrupted_during_set_up_keeps_the_old_run(tiny_run_copy, tmp_path, monkeypatch):
    run = tiny_run_copy
    before = (run / "model.safetensors").read_bytes()
    import unblur.training.trainer as trainer

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "build_net", interrupted)
    assert _train(run, "--overwrite") == 130
    assert (run / "model.safetensors").read_bytes() == before
    monkeypatch.undo()
    assert _train(run, "--overwrite") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no fresh folder left beside it


def test_a_failed_new_run_leaves_no_empty_folder(tmp_path, monkeypatch):
    import unblur.training.trainer as trainer

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "build_net", interrupted)
    assert _train(tmp_path / "new") == 130
    assert not (tmp_path / "new").exists()


# -- 2. outputs never overwrite inputs ---------------------------------------------------------

@pytest.mark.parametrize("where", ["same", "inside", "file"])
def test_degrade_and_restore_refuse_to_overwrite_their_input(tmp_path, capsys, where):
    photos = _digits(tmp_path / "photos")
    original = {p.name: p.read_bytes() for p in photos.iterdir()}
    inp, out = {"same": (photos, photos), "inside": (photos, photos / "out"),
                "file": (photos / "0.png", photos)}[where]
    assert main(["degrade", "--process", "blur", "--level", "0.5", "--input", str(inp), "--out", str(out)]) == 2
    assert "--in-place" in capsys.readouterr().err
    assert main(["restore", str(OLD / "blur"), "--input", str(inp), "--out", str(out), "--level", "0.5"]) == 2
    assert "--in-place" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in photos.iterdir() if p.is_file() and not p.name.startswith(".")} == original
    assert main(["degrade", "--process", "blur", "--level", "0.5", "--input", str(photos), "--out", str(photos),
                 "--in-place"]) == 0
    assert (photos / "0.png").read_bytes() != original["0.png"]


# -- 3. one writer per folder ------------------------------------------------------------------

def test_a_locked_folder_is_refused_and_says_who_holds_it(tmp_path, capsys):
    # Its own training: refused while the folder is locked, then trained once the lock is gone.
    run, out = tmp_path / "run", tmp_path / "samples"
    lock = acquire(run, "unblur train")
    try:
        assert _train(run) == 2
        assert "in use by pid" in capsys.readouterr().err
    finally:
        lock.release()
    assert _train(run) == 0
    with acquire(out, "unblur sample") if False else _held(out):
        assert main(["sample", str(run), "--n", "2", "--steps", "2", "--out", str(out)]) == 2
        assert "unblur sample" in capsys.readouterr().err


class _held:
    def __init__(self, folder):
        self.lock = acquire(folder, "unblur sample")

    def __enter__(self):
        return self.lock

    def __exit__(self, *exc):
        self.lock.release()


@pytest.mark.slow
def test_two_trainings_and_two_samplings_into_one_folder(tmp_path, capsys):
    run = tmp_path / "run"
    first = subprocess.Popen(_cli("train", "--data", "builtin:digits", "--out", run, "--steps", "100000", *TINY),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.05)
        # The second writer is this process (a command like any other; no second interpreter to start).
        assert main(["train", "--data", "builtin:digits", "--out", str(run), "--steps", "2", *TINY]) == 2
        assert "in use by pid" in capsys.readouterr().err
    finally:
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=120) == 130  # saved, then a non-zero exit: interrupted, not finished
    out = tmp_path / "s"
    a = subprocess.Popen(_cli("sample", run, "--n", "4000", "--steps", "50", "--batch", "100", "--out", out),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (out / "manifest.json").exists() and a.poll() is None:
            time.sleep(0.05)
        assert main(["sample", str(run), "--n", "4000", "--steps", "50", "--out", str(out)]) == 2
        assert "in use by pid" in capsys.readouterr().err
    finally:
        a.kill()
        a.wait()


# -- 4. sample folders are streamed, continued and never mixed ---------------------------------

def test_an_interrupted_sample_folder_is_continued_to_the_same_samples(tmp_path, monkeypatch, capsys):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    args = ["sample", str(OLD / "edm-classes"), "--n", "10", "--batch", "4", "--steps", "3"]
    assert main([*args, "--out", str(whole)]) == 0
    from unblur.runs.outputs import SampleFolder

    real = SampleFolder.write
    calls = []

    def write_then_interrupt(self, batch, texts=None):
        real(self, batch, texts)
        calls.append(batch.start)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(SampleFolder, "write", write_then_interrupt)
    assert main([*args, "--out", str(cut)]) == 130
    assert "run the same command again to continue" in capsys.readouterr().err
    monkeypatch.undo()
    assert len((cut / "samples.jsonl").read_text().splitlines()) == 8
    assert not json.loads((cut / "manifest.json").read_text())["complete"]
    assert main([*args, "--out", str(cut)]) == 0
    assert "continued after 8 kept samples" in capsys.readouterr().out
    assert np.array_equal(np.load(whole / "samples.npy"), np.load(cut / "samples.npy"))
    assert (whole / "samples.jsonl").read_text() == (cut / "samples.jsonl").read_text()
    # A complete folder, or another request's, is refused; --overwrite makes it again without stale files.
    assert main([*args, "--out", str(cut)]) == 2
    assert main(["sample", str(OLD / "edm-classes"), "--n", "3", "--steps", "3", "--out", str(cut)]) == 2
    assert main(["sample", str(OLD / "edm-classes"), "--n", "3", "--steps", "3", "--out", str(cut),
                 "--overwrite"]) == 0
    assert sorted(p.name for p in cut.glob("*.png") if p.stem.isdigit()) == ["00000.png", "00001.png", "00002.png"]


def test_default_sample_folders_differ_by_request(tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(OLD / "edm-classes", run)
    for cls in ("1", "2"):
        assert main(["sample", str(run), "--n", "2", "--steps", "2", "--class", cls]) == 0
    folders = list((run / "samples").iterdir())
    assert len(folders) == 2
    assert {json.loads((f / "samples.jsonl").read_text().splitlines()[0])["class"] for f in folders} == {1, 2}


def test_non_finite_options_and_samples_are_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["sample", str(OLD / "edm-classes"), "--guidance", "nan"])
    capsys.readouterr()
    import shutil

    from safetensors.torch import load_file, save_file

    run = tmp_path / "damaged"
    shutil.copytree(OLD / "edm-classes", run)
    from safetensors import safe_open

    with safe_open(run / "model.safetensors", "pt") as f:
        meta = f.metadata()
    state = load_file(run / "model.safetensors")
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, run / "model.safetensors", metadata=meta)
    assert main(["sample", str(run), "--n", "2", "--steps", "2", "--out", str(tmp_path / "s")]) == 2
    assert "NaN or infinite" in capsys.readouterr().err


# -- 5. resume says what it keeps ------------------------------------------------------------------

def test_resume_applies_the_budget_and_refuses_model_changes(tiny_run_copy, capsys, monkeypatch):
    run = tiny_run_copy
    had = _steps(run)
    assert main(["train", "--out", str(run), "--resume", "--set", "train.lr=0.1"]) == 2
    assert "train.lr=0.1 (the run has 0.001) would change them" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--process", "vp"]) == 2
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--steps", str(had + 1), "--set", "train.log_every=5"]) == 0
    out = capsys.readouterr().out
    assert f"resume: train.steps={had + 1} applies (the run had {had})" in out and "train.log_every=5 applies" in out
    assert main(["train", "--out", str(run), "--resume"]) == 0  # no budget given: the run's own (now had + 1)
    assert f"trained {had + 1} steps" in capsys.readouterr().out


def test_resume_finds_relative_data_from_elsewhere_and_refuses_other_data(tmp_path, capsys, monkeypatch):
    data = _digits(tmp_path / "data" / "d", n=6)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--data", "data", "--out", str(run), "--steps", "2", *TINY]) == 0
    assert json.loads((run / "config.json").read_text())["data"]["source"] == str(data.parent.resolve())
    monkeypatch.chdir(data)  # "data" means nothing here; the run remembers the absolute path
    assert main(["train", "--out", str(run), "--resume", "--steps", "3"]) == 0
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(data / "new.png")
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--steps", "4"]) == 2
    assert "differs from the run's (num_items 7 against 6)" in capsys.readouterr().err


def test_metrics_survive_a_cut_line_and_resume_logs_each_step_once(tmp_path, capsys):
    # Its own training: a checkpoint at every step.
    run = tmp_path / "run"
    assert _train(run, "--set", "train.checkpoint_every=1") == 0
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "loss": 0.')  # a kill during an append
    assert main(["info", str(run)]) == 0
    assert "trained:    2 steps" in capsys.readouterr().out
    assert main(["show", "curves", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert main(["train", "--out", str(run), "--resume", "--steps", "4"]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 4


# -- 6. expected failures are one line -------------------------------------------------------------

def test_out_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert _train(f) == 2
    assert "is a file" in capsys.readouterr().err


def test_disk_full_while_checkpointing_keeps_the_last_checkpoint(tiny_run_copy, capsys, monkeypatch):
    run = tiny_run_copy
    before = (run / "train_state.pt").read_bytes()
    import unblur.runs.checkpoint as ck

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ck, "atomic_write_bytes", full)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--steps", str(_steps(run) + 2)]) == 1
    assert "no space left" in _error(capsys.readouterr().err)
    assert (run / "train_state.pt").read_bytes() == before


def test_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    import unblur.training.trainer as trainer

    def oom(*a, **k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99999999999 bytes.")

    monkeypatch.setattr(trainer, "build_net", oom)
    assert _train(tmp_path / "run") == 1
    err = _error(capsys.readouterr().err)
    assert "out of memory" in err and "train.batch_size" in err


def test_a_real_bug_shows_its_traceback_and_asks_for_a_report(tmp_path, capsys, monkeypatch):
    import unblur.training.trainer as trainer

    monkeypatch.setattr(trainer, "build_net", lambda *a, **k: 1 / 0)
    assert _train(tmp_path / "run") == 3
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "please report it" in err


def test_diverged_training_before_any_checkpoint_says_so(tmp_path, capsys):
    assert _train(tmp_path / "run", "--set", "train.lr=1e30", "--set", "train.grad_clip=0") == 2
    assert "no checkpoint had been written yet" in _error(capsys.readouterr().err)
