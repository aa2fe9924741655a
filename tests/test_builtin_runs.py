"""The runs shipped inside the package: each opens as builtin:NAME, carries the command, seed and
figures that made it, and `scripts/train_builtin.py --short` reproduces its recorded short-schedule
figure within the stated tolerance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from unblur.cli import main
from unblur.runs import Run
from unblur.runs.pretrained import BUILTIN_RUNS, ROOT

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_builtin.py"


def meta(name: str) -> dict:
    path = ROOT / name / "model.safetensors"
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(json.loads(f.read(n))["__metadata__"]["builtin"])


@pytest.mark.parametrize("name", list(BUILTIN_RUNS))
def test_builtin_runs_open_and_say_how_they_were_made(name):
    m = meta(name)
    assert m["command"] == f"python scripts/train_builtin.py {name}" and m["seed"] == 0 and m["figures"]
    assert (ROOT / name / "model.safetensors").stat().st_size < 4 * 2**20  # a few MB in all
    run = Run.load(f"builtin:{name}", device="cpu")
    assert run.name == f"builtin:{name}" and len(run.weights_sha256) == 64


def test_the_shipped_figures_are_good():
    assert meta("digits")["figures"]["class_agreement_g3"] >= 0.9
    assert meta("shapes")["figures"]["colour_accuracy_g3"] >= 0.9
    f = meta("blur")["figures"]
    assert f["psnr_restored_t07"] > f["psnr_blurred_t07"] + 3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits", "blur"])
def test_the_script_reproduces_the_short_schedule(name, tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), name, "--short", "--work", str(tmp_path)], check=True,
                         capture_output=True, text=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    want = meta(name)["short"]
    assert got["steps"] == want["steps"]
    assert abs(got["mean_loss"] - want["mean_loss"]) <= want["tolerance"] * want["mean_loss"], (got, want)


def test_sample_a_builtin_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "builtin:digits", "--class", "3", "--n", "4", "--steps", "4", "--device", "cpu"]) == 0
    assert len(list((tmp_path / "samples" / "digits").glob("*/0000[0-3].png"))) == 4
    assert main(["sample", "builtin:nope"]) == 2
    assert "builtin:digits" in capsys.readouterr().err
