"""Model kinds as objects: contract tests over ``kinds.MODEL_KINDS``.

Every registered kind trains 3 steps through the library and through the CLI, saves, reopens,
resumes bit-exactly, describes itself (``unblur info``) and refuses in one line the commands
it does not serve. A kind added to the registry without a case here fails
``test_every_registered_kind_has_a_case``. A throwaway kind, defined in this file alone, trains
and reopens: adding a kind touches one module.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from safetensors.torch import load_file

from unblur.cli import main
from unblur.config import Config, apply_overrides
from unblur.kinds import MODEL_KINDS, given_keys, kind_of, register, resolve
from unblur.kinds.base import _BY_CONFIG_NAME
from unblur.kinds.diffusion import DiffusionKind
from unblur.runs import Run
from unblur.training import train

OLD = Path(__file__).parent / "fixtures" / "old_runs"
ENCODER = OLD / "encoder"  # a contrastive encoder written by an earlier version; the prior case trains on it

SHAPES = {"data.source": "builtin:shapes", "data.num_images": 48, "data.size": 16, "train.device": "cpu",
          "train.checkpoint_every": 0, "sample.grid_n": 4, "sample.steps": 2, "train.log_every": 1}
# The smallest run of each kind (its config keys); the tests below read nothing else from here.
CASES: dict[str, dict] = {
    "diffusion": {**SHAPES, "model.kind": "unet", "model.base_channels": 32, "model.channel_mult": (1, 1),
                  "model.num_res_blocks": 1, "model.attn_resolutions": (), "train.batch_size": 8,
                  "cond.classes": True, "cond.text_encoder": "none"},
    "prior": {**SHAPES, "model.kind": "prior", "cond.clip": str(ENCODER), "model.hidden": 32, "model.depth": 2,
              "train.batch_size": 16},
    "autoencoder": {**SHAPES, "model.kind": "autoencoder", "autoencoder.widths": (8, 16, 16),
                    "autoencoder.mid_attention": False, "train.batch_size": 8},
    "clip": {**SHAPES, "model.kind": "clip", "clip.text_encoder": "learned", "clip.learned_dim": 16,
             "clip.learned_layers": 1, "clip.widths": (8, 16), "clip.embed_dim": 8, "clip.text_hidden": 16,
             "clip.holdout": 0.25, "train.batch_size": 16},
}
# What each kind's folder refuses, as `unblur ARGS RUN`: the commands it does not serve.
REFUSED = {
    "diffusion": [["restore", "--input", "{png}"]],  # a Gaussian run restores nothing
    "prior": [["restore", "--input", "{png}"], ["edit", "--input", "{png}"]],  # vectors: no image edits
    "autoencoder": [["sample", "--n", "1"], ["restore", "--input", "{png}"], ["edit", "--input", "{png}"]],
    "clip": [["sample", "--n", "1"], ["restore", "--input", "{png}"], ["edit", "--input", "{png}"]],
}


def _cli_args(case: dict) -> list[str]:
    out = []
    for k, v in case.items():
        out += ["--set", f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"]
    return out


def test_every_registered_kind_has_a_case():
    assert set(CASES) >= set(MODEL_KINDS) - {"throwaway"}
    assert set(REFUSED) >= set(CASES)


@pytest.fixture(scope="session")
def cli_runs(tmp_path_factory):
    """One 3-step run of each kind, trained through the CLI as a user does (shared by the tests)."""
    root = tmp_path_factory.mktemp("kinds")
    runs = {}
    for name, case in CASES.items():
        out = root / name
        assert main(["train", "--out", str(out), "--steps", "3", *_cli_args(case)]) == 0, name
        runs[name] = out
    return runs


@pytest.mark.parametrize("name", list(CASES))
def test_a_kind_trained_through_the_cli_reopens_and_describes_itself(name, cli_runs, capsys):
    run = cli_runs[name]
    kind = MODEL_KINDS[name]
    cfg = Config.from_dict(json.loads((run / "config.json").read_text()))
    assert kind_of(cfg) is kind
    if kind.samples:
        assert Run.load(run, device="cpu").net is not None
    else:
        assert kind.open(run, device="cpu") is not None
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"run:        {run}" in out and "trained:    3 steps" in out and '"kind": "' in out


@pytest.mark.parametrize("name", list(CASES))
def test_a_kind_refuses_the_commands_it_does_not_serve_in_one_line(name, cli_runs, tmp_path, capsys):
    from PIL import Image

    png = tmp_path / "x.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(png)
    for args in REFUSED[name]:
        argv = [args[0], str(cli_runs[name]), *(str(png) if a == "{png}" else a for a in args[1:]),
                "--out", str(tmp_path / "o"), "--device", "cpu"]
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"unblur {args[0]}: error: ") and "\n" not in err, err
        assert not (tmp_path / "o").exists()


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


@pytest.mark.parametrize("name", list(CASES))
def test_a_kind_trained_through_the_library_resumes_bit_exactly(name, tmp_path):
    cfg = apply_overrides(Config(), {**CASES[name], "train.steps": 2})
    a, b = tmp_path / "a", tmp_path / "b"
    train(cfg, a, progress=False)
    train(apply_overrides(cfg, {"train.steps": 4}), a, resume=True, progress=False)
    train(apply_overrides(cfg, {"train.steps": 4}), b, progress=False)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), (name, k)


def test_the_library_trains_the_same_prior_as_the_cli(tmp_path):
    """``train(cfg)`` with ``model.kind=prior`` takes the kind's defaults, as ``unblur train --model prior``."""
    case = {k: v for k, v in CASES["prior"].items() if k not in ("model.hidden", "model.depth", "train.batch_size")}
    case["model.depth"] = 1
    lib = resolve(apply_overrides(Config(), case))
    assert main(["train", "--dry-run", "--out", str(tmp_path / "x"), "--steps", "10000", *_cli_args(case)]) == 0
    for key, value in MODEL_KINDS["prior"].defaults.items():
        sec, field = key.split(".")
        assert getattr(getattr(lib, sec), field) == value
    out = train(apply_overrides(Config(), {**case, "train.steps": 1}), tmp_path / "lib", progress=False)
    assert any("prior transformer, width 256" in line for line in out["notes"])
    cfg = Config.from_dict(json.loads((tmp_path / "lib" / "config.json").read_text()))
    assert (cfg.process.kind, cfg.process.schedule, cfg.objective.prediction) == ("vp", "cosine", "x0")


def test_a_key_the_user_gave_beats_the_kind_default():
    cfg = apply_overrides(Config(), {"model.kind": "autoencoder", "train.batch_size": 32})
    assert resolve(cfg).train.batch_size == 32  # given: kept
    assert resolve(apply_overrides(Config(), {"model.kind": "autoencoder"})).train.batch_size == 16
    # the CLI names what the user gave, so even the global default survives when typed out
    assert resolve(apply_overrides(Config(), {"model.kind": "autoencoder"}), {"model.kind", "train.batch_size"}
                   ).train.batch_size == 128
    assert given_keys(cfg) == {"model.kind", "train.batch_size"}


def test_an_unknown_kind_is_one_line_naming_the_kinds(tmp_path, capsys):
    assert main(["train", "--dry-run", "--out", str(tmp_path / "x"), "--model", "gan"]) == 2
    err = capsys.readouterr().err.strip()
    assert "model.kind 'gan'" in err and "autoencoder" in err and "\n" not in err


# -- old run folders of every kind ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["autoencoder", "encoder", "prior", "decoder"])
def test_run_folders_of_every_kind_from_the_previous_version_describe_themselves(name, capsys):
    assert main(["info", str(OLD / name)]) == 0
    assert "config:" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["autoencoder", "encoder"])
def test_old_autoencoder_and_encoder_runs_resume(name, tmp_path):
    run = tmp_path / name
    shutil.copytree(OLD / name, run)
    before = _weights(run)
    out = train(Config(), run, resume=True, progress=False, explicit=set())
    assert out["step"] == 3  # its own budget was spent: nothing to do, nothing broken
    out = train(apply_overrides(Config(), {"train.steps": 4}), run, resume=True, progress=False)
    assert out["step"] == 4
    after = _weights(run)
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)


def test_old_autoencoder_and_encoder_runs_open_as_their_kind():
    ae = MODEL_KINDS["autoencoder"].open(OLD / "autoencoder")
    x = torch.zeros(1, 3, 16, 16)
    assert ae.decode(ae.encode(x)).shape == x.shape
    enc = MODEL_KINDS["clip"].open(OLD / "encoder")
    z = enc.embed_images(torch.zeros(2, 3, 16, 16))
    assert z.shape == (2, enc.dim) and torch.allclose(z.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_old_prior_and_decoder_load_and_sample():
    prior = Run.load(OLD / "prior", device="cpu")
    x = prior.generate(3, plan=prior.plan(steps=2), cond=None, uncond=None, guidance=1.0,
                       generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, *prior.data.shape) and torch.isfinite(x).all()
    decoder = Run.load(OLD / "decoder", device="cpu")
    assert decoder.data.clip is not None


# -- a throwaway kind: one module ------------------------------------------------------------------------

class ThrowawayKind(DiffusionKind):
    """A denoiser whose defaults are a small MLP on the toy moons: everything else inherited."""

    name = "throwaway"
    config_names = ("throwaway",)
    help = "a throwaway kind of the tests"
    defaults: ClassVar[dict] = {"model.hidden": 16, "model.depth": 1}

    def build_net(self, cfg, info):
        from unblur.nets import MLPConfig, MLPDenoiserNet

        return MLPDenoiserNet(MLPConfig(dim=info.shape[0], hidden=cfg.model.hidden, depth=cfg.model.depth))


@pytest.fixture
def throwaway():
    register(ThrowawayKind)
    yield MODEL_KINDS["throwaway"]
    del MODEL_KINDS["throwaway"]
    del _BY_CONFIG_NAME["throwaway"]


def test_a_new_kind_is_one_module(throwaway, tmp_path, capsys):
    """Registered from this file alone, the kind trains through the CLI, reopens, samples and
    describes itself: no other file of the package knows its name."""
    run = tmp_path / "run"
    assert main(["train", "--model", "throwaway", "--data", "builtin:toy2d:moons", "--out", str(run), "--steps", "3",
                 "--device", "cpu", "--set", "train.batch_size=64", "--set", "data.num_points=256",
                 "--set", "sample.steps=2"]) == 0
    assert Run.load(run, device="cpu").net.cfg.hidden == 16  # the kind's default
    assert main(["sample", str(run), "--n", "4", "--steps", "2", "--out", str(tmp_path / "s"), "--device", "cpu"]) == 0
    assert main(["info", str(run)]) == 0
    assert "throwaway" in capsys.readouterr().out
    assert "throwaway" not in "".join(p.read_text() for p in (Path(__file__).parents[1] / "src").rglob("*.py"))


# -- no kind strings outside kinds/ ----------------------------------------------------------------------

def _model_kind_compares(path: Path) -> list[int]:
    """Lines of ``path`` comparing a model kind (``<x>.model.kind``, ``m.kind`` with ``m = <x>.model``,
    or a name bound to either, or ``model_kind(...)``'s answer) with ==, !=, in or not in."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    models = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute)
              and node.value.attr == "model" for t in node.targets if isinstance(t, ast.Name)}

    def is_kind(node) -> bool:
        if isinstance(node, ast.Attribute) and node.attr == "kind":
            v = node.value
            return (isinstance(v, ast.Attribute) and v.attr == "model") or (isinstance(v, ast.Name) and v.id in models)
        return isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "model_kind"

    bound = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and is_kind(node.value)
             for t in node.targets if isinstance(t, ast.Name)}
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Compare)
            and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops)
            and any(is_kind(s) or (isinstance(s, ast.Name) and s.id in bound) for s in [node.left, *node.comparators])]


def test_no_module_outside_kinds_compares_the_model_kind():
    src = Path(__file__).parents[1] / "src" / "unblur"
    found = {str(p.relative_to(src)): lines for p in src.rglob("*.py")
             if "kinds" not in p.relative_to(src).parts and (lines := _model_kind_compares(p))}
    assert not found, f"ask the kind (unblur.kinds.kind_of(cfg)) instead: {found}"


def test_an_old_prior_resumes_with_its_encoder_at_a_new_path(tmp_path, capsys):
    """Its encoder was recorded at a path that is gone: resume says so, and takes ``--clip`` at
    the new path when the weights are the recorded ones (the decoder's fixture keeps no resume
    state; its path is the same code)."""
    run, enc = tmp_path / "prior", tmp_path / "encoder"
    shutil.copytree(OLD / "prior", run)
    shutil.copytree(ENCODER, enc)
    state = torch.load(run / "train_state.pt", weights_only=True)  # the recorded encoder path: gone
    state["config"]["cond"]["clip"] = str(tmp_path / "gone")
    torch.save(state, run / "train_state.pt")
    assert main(["train", "--out", str(run), "--resume", "--steps", "4", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "is not there any more" in err and "--clip" in err
    assert main(["train", "--out", str(run), "--resume", "--steps", "4", "--clip", str(enc), "--device", "cpu"]) == 0
    assert "cond.clip=" in capsys.readouterr().out  # the change is said
    assert Run.load(run, device="cpu").data.clip.path == str(enc.resolve())
    other = tmp_path / "other"
    shutil.copytree(enc, other)
    (other / "model.safetensors").write_bytes((OLD / "autoencoder" / "model.safetensors").read_bytes())
    assert main(["train", "--out", str(run), "--resume", "--steps", "5", "--clip", str(other), "--device", "cpu"]) == 2
