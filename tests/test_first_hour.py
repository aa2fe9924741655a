"""The first hour on a laptop: a model sized to the images and the device, a time budget by
default, a run that says what it reads, trains and how fast, and ``unblur data``."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unblur.cli import main
from unblur.conditioning import text_encoder_default
from unblur.config import Config, apply_overrides
from unblur.nets import count_parameters, default_unet_config
from unblur.nets.presets import unet_preset
from unblur.runs import Run, build_net
from unblur.training import trainer
from unblur.types import DataInfo

# Each test that trains here trains its own run: what it checks is what `unblur train` says and writes
# for its own arguments (presets, budgets, data, conditioning), so no shared run can stand in for it.
SMALL = ["--device", "cpu", "--set", "train.batch_size=4", "--set", "sample.grid_n=0", "--set",
         "train.checkpoint_every=0"]


def _folder(root: Path, side: int = 8, captions: bool = False) -> Path:
    """Two class sub-folders of three images each; a caption beside each image if asked."""
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
            if captions:
                (root / cls / f"{i}.txt").write_text(f"a small {cls[:-1]} number {i}")
    return root


def _config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


# -- 1. presets sized to the data and the device ---------------------------------------------------

def test_a_32px_run_on_cpu_gets_the_small_preset_and_records_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(_folder(tmp_path / "d", side=32)), "--out", str(run), "--steps", "1",
                 *SMALL]) == 0
    out = capsys.readouterr().out
    assert ("model: preset cpu-32 (32x32 images on cpu): width 32, mult 1,2,2, 1 block, attention in the middle; "
            in out) and "GFLOP per image; set model.* to choose" in out
    m = _config(run)["model"]
    assert (m["base_channels"], m["channel_mult"], m["num_res_blocks"], m["attn_resolutions"]) == (32, [1, 2, 2], 1, [])
    loaded = Run.load(run, device="cpu")  # the saved config rebuilds the same network (strict state dict)
    assert count_parameters(loaded.net) < 2e6


def test_explicit_model_values_win_over_the_preset(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(_folder(tmp_path / "d", side=32)), "--out", str(run), "--steps", "1",
                 "--set", "model.base_channels=16", *SMALL]) == 0
    assert "preset cpu-32 (32x32 images on cpu; model.base_channels as given): width 16," in capsys.readouterr().out
    assert _config(run)["model"]["base_channels"] == 16 and _config(run)["model"]["num_res_blocks"] == 1


def test_a_config_saved_without_sizes_still_builds_the_reference_network():
    """Runs written before presets saved the sizes as None: they rebuild the network they trained."""
    info = DataInfo(kind="image", shape=(3, 32, 32), source="x", num_items=1)
    net = build_net(Config(), info)
    assert net.cfg.base_channels == 64 and net.cfg.num_res_blocks == 2 and net.cfg.attn_resolutions == (4,)
    assert unet_preset(32, "cuda")[1] == unet_preset(32)[1]  # a GPU keeps the reference sizes
    assert default_unet_config(32, 3).base_channels == 64
    assert default_unet_config(32, 3, device="cpu").base_channels == 32


def test_presets_keep_the_levels_divisible():
    name, size = unet_preset((24, 40), "cpu")  # 24 = 8 x 3: three levels at most
    assert name == "cpu-32" and len(size.channel_mult) <= 3
    assert unet_preset(128, "cpu")[0] == "cpu-large" and unet_preset(128, "cuda")[0] == "gpu-large"


# -- 2. a time budget by default -------------------------------------------------------------------

def test_no_budget_given_means_minutes_in_the_cli_and_steps_in_the_library(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "a"), "--dry-run"]) == 0
    t = json.loads(capsys.readouterr().out)["train"]
    assert t["minutes"] == 10.0 and t["steps"] >= 10**9
    for given in (["--steps", "5"], ["--set", "train.steps=5"]):
        assert main(["train", "--out", str(tmp_path / "a"), "--dry-run", *given]) == 0
        t = json.loads(capsys.readouterr().out)["train"]
        assert (t["minutes"], t["steps"]) == (None, 5)
    assert Config().train.steps == 10000 and Config().train.minutes is None  # a library call says its own


def test_the_default_budget_is_said_and_stops_the_run(tmp_path, capsys, monkeypatch):
    from unblur.cli import train as cli_train

    monkeypatch.setattr(cli_train, "DEFAULT_MINUTES", 0.02)
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *SMALL]) == 0
    out, err = capsys.readouterr()
    assert "budget: 0.02 minutes, the default (give --steps N or --minutes M to choose)" in out
    assert "stopped by minutes" in out
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    n = re.search(r"trained (\d+) steps", out).group(1)
    assert f"{n}/{n} [" in final  # the bar of a time budget has a total (hence an ETA)


# -- 3. the speed and what the budget buys -------------------------------------------------------

def test_the_speed_is_measured_and_the_budget_estimated(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--steps", "12", *SMALL]) == 0
    out = capsys.readouterr().out
    assert re.search(r"speed: [\d.]+ steps/s \([\d,]+ img/s\); 12 steps -> about \d+ s", out), out


def test_speed_line_for_a_time_and_a_step_budget():
    line, end = trainer.speed_line(12.3, 128, step=10, steps=10**9, minutes=10, seconds_left=600)
    assert line == "speed: 12.3 steps/s (1,574 img/s); 10 min budget -> about 7,390 steps" and end == 7390
    line, end = trainer.speed_line(12.5, 128, step=10, steps=10000, minutes=None, seconds_left=float("inf"))
    assert line == "speed: 12.5 steps/s (1,600 img/s); 10,000 steps -> about 13 min" and end == 10000


# -- 4. and 6. what the data is, and its classes and captions used by default --------------------

def test_a_folder_says_what_it_holds_and_trains_on_its_classes_and_captions(tmp_path, capsys, monkeypatch):
    import unblur.conditioning.defaults as defaults

    monkeypatch.setattr(defaults, "text_encoder_default", lambda: "learned")  # MiniLM is tested elsewhere
    data, run = _folder(tmp_path / "d", captions=True), tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--steps", "1", *SMALL]) == 0
    out = capsys.readouterr().out
    assert f"data: {data}\n  images: 6 x 3 x 8 x 8 (RGB)" in out and "classes: 2 (cats 3, dogs 3)" in out
    assert "captions: 6 of 6" in out
    assert ("conditioning: 2 classes (class sub-folders) and captions (learned), dropout 0.1: --class / --prompt "
            "work, and so does unconditional sampling") in out
    cond = _config(run)["cond"]
    assert cond["classes"] is True and cond["text_encoder"] == "learned"
    # A prompt alone (the class part gets the null class), a class alone, and both.
    for extra in (["--prompt", "a dog"], ["--class", "cats"], ["--class", "dogs", "--prompt", "a dog"], []):
        out = tmp_path / "s" / "-".join(extra).replace(" ", "_")
        assert main(["sample", str(run), "--n", "1", "--steps", "2", "--out", str(out), *extra]) == 0
    run = tmp_path / "classes"  # without captions, the sub-folders are the classes
    assert main(["train", "--data", str(_folder(tmp_path / "e")), "--out", str(run), "--steps", "1", *SMALL]) == 0
    assert "conditioning: 2 classes (class sub-folders), dropout 0.1: --class works" in capsys.readouterr().out
    assert main(["sample", str(run), "--n", "1", "--class", "dogs", "--steps", "2", "--out", str(tmp_path / "s2")]) == 0


def test_conditioning_the_user_turned_off_stays_off(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(_folder(tmp_path / "d")), "--out", str(run), "--steps", "1",
                 "--set", "cond.classes=false", *SMALL]) == 0
    assert ("conditioning: none, unconditional (the data's 2 classes are not used: see cond.classes)"
            in capsys.readouterr().out)
    assert _config(run)["cond"]["classes"] is False


def test_without_data_it_says_it_uses_the_digits(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--process", "blur", "--out", str(run), "--steps", "1", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "no --data given: training on the built-in 8x8 digits (builtin:digits)" in out
    assert "data: builtin:digits\n  images: 1797 x 1 x 8 x 8" in out
    assert "conditioning: none, unconditional (the data's 10 classes are not used" in out  # cold: unconditional


def test_the_text_encoder_falls_back_to_the_learned_one(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert text_encoder_default() == "learned"


# -- 5. unblur data ----------------------------------------------------------------------------------

def test_unblur_data_shows_how_a_folder_is_read(tmp_path, capsys):
    data = _folder(tmp_path / "d", side=12)
    assert main(["data", str(data), "--size", "8", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "images: 6 x 3 x 8 x 8 (RGB)" in out and "classes: 2 (cats 3, dogs 3)" in out
    assert "conditioning: 2 classes (class sub-folders)" in out and "model: preset cpu-16 (8x8 images on cpu)" in out
    assert f"unblur train --data {data} --out RUN --set data.size=8" in out
    assert not (data / "config.json").exists()  # nothing written
    assert main(["data", "builtin:toy2d:moons"]) == 0
    assert "conditioning: none, unconditional\nmodel: MLP, width 128" in capsys.readouterr().out
    assert main(["data", str(tmp_path / "nowhere")]) == 2


# -- 7. the demo, 8. short runs --------------------------------------------------------------------

def test_the_demo_says_how_to_sample_from_it(tmp_path, capsys):
    run = tmp_path / "demo"
    assert main(["demo", "--out", str(run), "--minutes", "0.02", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"next: \S*unblur sample {re.escape(str(run))} --n 16", out), out


def test_the_unblur_command_is_the_environments_script(monkeypatch):
    import sys

    from unblur.cli.train import unblur_command

    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "unblur").exists():
        pytest.skip("no unblur script beside this Python")
    monkeypatch.chdir(bin_dir.parent.parent)  # the folder holding .venv, where `make demo` runs
    assert unblur_command() == str(Path(bin_dir.parent.name) / bin_dir.name / "unblur")


def test_a_one_step_run_has_a_metrics_line_and_curves(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--steps", "1", "--set", "train.log_every=25", *SMALL]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1]
    assert main(["show", "curves", str(run), "--out", str(tmp_path / "c.png")]) == 0


def test_a_run_stopped_between_log_lines_logs_its_last_step(tmp_path):
    cfg = apply_overrides(Config(), {"model.base_channels": 8, "model.channel_mult": "1,2", "model.num_res_blocks": 1,
                                     "train.batch_size": 4, "train.log_every": 25, "sample.grid_n": 0,
                                     "train.minutes": 0.01, "train.steps": 10**9, "train.device": "cpu"})
    summary = trainer.train(cfg, tmp_path / "run", progress=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 1 and steps[-1] == summary["step"]


def test_a_resumed_run_keeps_its_network_and_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--steps", "1", *SMALL]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "model: width 32, mult 1,2, 2 blocks, no attention (the run's own)" in out and "budget:" not in out
    assert "trained 2 steps" in out
