"""The trainer end to end: exact resume, atomic checkpoints, refusal to overwrite, divergence."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unblur.cli import main
from unblur.config import Config, apply_overrides
from unblur.runs.checkpoint import load_model, load_train_state
from unblur.training import TrainingDiverged, train

# A test that only reads a trained run uses the session's `tiny_run` (conftest.py); the tests that
# train here do so because the training itself is what they check (resume, kills, signals, DDP).
TINY_UNET = {
    "data.source": "builtin:digits",
    "model.base_channels": 16,
    "model.channel_mult": "1,2",
    "model.num_res_blocks": 1,
    "train.batch_size": 16,
    "train.log_every": 1,
    "train.sample_every": 0,
    "train.checkpoint_every": 0,
    "sample.grid_n": 4,
    "sample.steps": 4,
}


def _cfg(**over):
    return apply_overrides(Config(), {**TINY_UNET, **over})


def _losses(run: Path):
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_is_exact(tmp_path):
    """Its own trainings: a straight run and a run stopped half way and resumed, compared."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(_cfg(**{"train.steps": 20}), straight, progress=False)
    train(_cfg(**{"train.steps": 10}), split, progress=False)
    train(_cfg(**{"train.steps": 20}), split, resume=True, progress=False)
    assert _losses(straight) == _losses(split)
    a, b = load_train_state(straight / "train_state.pt"), load_train_state(split / "train_state.pt")
    assert a["step"] == b["step"] == 20
    for k in a["net"]:
        assert torch.equal(a["net"][k], b["net"][k]), k
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k


def test_run_folder_holds_the_artefacts_and_samples_with_no_flags(tiny_run, tmp_path, capsys):
    run = tiny_run
    for f in ("config.json", "model.safetensors", "train_state.pt", "metrics.jsonl"):
        assert (run / f).exists(), f
    state, cfg, info = load_model(run / "model.safetensors")
    assert info["shape"] == [1, 8, 8] and cfg.model.base_channels == 8  # as TINY_UNET of conftest.py gave it
    out = tmp_path / "samples"
    assert main(["sample", str(run), "--n", "5", "--batch", "2", "--steps", "3", "--out", str(out)]) == 0
    arr = __import__("numpy").load(out / "samples.npy")
    assert arr.shape == (5, 1, 8, 8) and arr.dtype == "float32" and 0 <= arr.min() and arr.max() <= 1
    assert (out / "grid.png").exists() and (out / "00004.png").exists()
    # The same seed gives the same image whatever the batch size.
    out2 = tmp_path / "samples2"
    main(["sample", str(run), "--n", "5", "--batch", "5", "--steps", "3", "--out", str(out2)])
    assert __import__("numpy").allclose(arr, __import__("numpy").load(out2 / "samples.npy"), atol=1e-5)
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    text = capsys.readouterr().out
    n_params = sum(v.numel() for v in state.values())
    assert f"{n_params:,} parameters" in text and "steps" in text


def test_shift_augmentation_trains_and_a_too_large_shift_is_refused(tiny_run, tiny_config, tmp_path, capsys):
    # A training of its own, with a shift, against the shared tiny run's (the same config, no shift).
    shifted = tmp_path / "shifted"
    train(tiny_config({"train.steps": 1, "data.shift": 1}), shifted, progress=False)
    assert _losses(tiny_run)[0] != _losses(shifted)[0]  # the first batch already differs
    code = main(["train", "--data", "builtin:digits", "--out", str(tmp_path / "bad"), "--steps", "2",
                 "--set", "data.shift=8"])
    assert code == 2
    assert "data.shift=8 must lie in 0..7" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "model.safetensors").exists()


def test_refuses_to_overwrite_a_run(tiny_run_copy, capsys):
    run = tiny_run_copy
    before = (run / "model.safetensors").read_bytes()
    code = main(["train", "--data", "builtin:digits", "--out", str(run), "--steps", "2"])
    assert code == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "model.safetensors").read_bytes() == before


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tiny_run_copy, tiny_config):
    run = tiny_run_copy
    steps = load_train_state(run / "train_state.pt")["step"]
    before = (run / "model.safetensors").read_bytes(), (run / "train_state.pt").read_bytes()
    from unblur.data import load_data

    bad = load_data("builtin:digits")
    bad.x[:] = float("nan")
    cfg = tiny_config({"train.steps": steps + 4, "train.checkpoint_every": 1})
    with pytest.raises(TrainingDiverged, match=f"loss became nan at step {steps}.*last good checkpoint"):
        train(cfg, run, resume=True, data=bad, progress=False)
    assert (run / "model.safetensors").read_bytes() == before[0]
    assert (run / "train_state.pt").read_bytes() == before[1]


def test_dry_run_prints_the_resolved_config(capsys):
    assert main(["train", "--data", "builtin:toy2d:moons", "--out", "/nonexistent/x", "--dry-run",
                 "--set", "train.lr=3e-4"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["train"]["lr"] == 3e-4 and cfg["data"]["source"] == "builtin:toy2d:moons"


def test_unknown_key_on_the_command_line(capsys):
    assert main(["train", "--data", "builtin:digits", "--out", "x", "--set", "train.learning_rate=1"]) == 2
    assert "unknown config key train.learning_rate" in capsys.readouterr().err


def _cli(*args):
    return [sys.executable, "-m", "unblur", *args]


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_a_usable_run(tmp_path):
    """Five kills, one while a checkpoint file is being written: the run always loads,
    samples and resumes."""
    run = tmp_path / "run"
    sets = []
    for k, v in {**TINY_UNET, "train.checkpoint_every": 1, "model.base_channels": 32}.items():
        sets += ["--set", f"{k}={v}"]
    rng = __import__("random").Random(0)
    caught_mid_write = False
    for trial in range(5):
        args = ["train", "--out", str(run), "--steps", "100000", *sets]
        args += ["--resume"] if (run / "train_state.pt").exists() else ["--overwrite"]
        proc = subprocess.Popen(_cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not (run / "train_state.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        if trial == 4:
            # Kill while a temporary checkpoint file exists, i.e. inside a write.
            while time.time() < deadline and not caught_mid_write:
                names = os.listdir(run) + (os.listdir(run / "checkpoints") if (run / "checkpoints").exists() else [])
                if any(n.endswith(".tmp") for n in names):
                    proc.send_signal(signal.SIGKILL)
                    caught_mid_write = True
        else:
            time.sleep(rng.uniform(0.5, 3.0))
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        load_model(run / "model.safetensors")
        load_train_state(run / "train_state.pt")
    assert caught_mid_write
    # The killed run samples and resumes (in this process: the kills needed processes, these do not).
    out = tmp_path / "s"
    assert main(["sample", str(run), "--n", "2", "--steps", "2", "--out", str(out)]) == 0
    step = load_train_state(run / "train_state.pt")["step"]
    assert main(["train", "--out", str(run), "--steps", str(step + 2), "--resume", *sets]) == 0
    assert load_train_state(run / "train_state.pt")["step"] == step + 2
    assert not [p for p in run.rglob("*.tmp")]


@pytest.mark.slow
def test_sigterm_saves_and_exits_143(tmp_path):
    run = tmp_path / "run"
    sets = []
    for k, v in TINY_UNET.items():
        sets += ["--set", f"{k}={v}"]
    proc = subprocess.Popen(_cli("train", "--out", str(run), "--steps", "100000", *sets),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM  # saved, but not finished: a scheduler can tell
    assert b"stopped by signal" in proc.stdout.read()
    assert load_train_state(run / "train_state.pt")["step"] > 0


@pytest.mark.slow
def test_torchrun_two_gloo_processes_keep_identical_parameters(tmp_path):
    run = tmp_path / "run"
    script = tmp_path / "ddp.py"
    script.write_text(
        "import sys, torch, torch.distributed as dist\n"
        "from unblur.config import Config, apply_overrides\n"
        "from unblur.training.trainer import Trainer\n"
        f"over = {dict(TINY_UNET)!r}\n"
        "over['train.steps'] = 6\n"
        "over['train.device'] = 'cpu'\n"
        "tr = Trainer(apply_overrides(Config(), over), sys.argv[1], progress=False)\n"
        "tr.run()\n"
        "torch.save({k: v for k, v in tr.net.state_dict().items()}, f'{sys.argv[1]}/rank{dist.get_rank()}.pt')\n"
        "dist.destroy_process_group()\n"
    )
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", "29517", str(script), str(run)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = torch.load(run / "rank0.pt"), torch.load(run / "rank1.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # ... and training did move them away from the initialization.
    init = load_train_state(run / "train_state.pt")
    assert init["step"] == 6
    assert main(["sample", str(run), "--n", "2", "--steps", "2", "--out", str(tmp_path / "s")]) == 0
