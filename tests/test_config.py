"""Config parsing: strict keys, typed values, round trips."""

import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from unblur.cli import main
from unblur.config import (
    COLD_OPTIONS,
    GRIDS,
    PERCEPTUAL,
    RULES,
    SAMPLERS,
    SCHEDULES,
    SECTIONS,
    Config,
    apply_overrides,
    load_toml,
    parse_set,
    validate,
)
from unblur.runs.checkpoint import load_model


def test_set_overrides_are_typed():
    cfg = apply_overrides(Config(), parse_set([
        "train.lr=2e-4", "model.channel_mult=1,2,2", "data.size=16", "train.minutes=none", "train.bf16=true",
    ]))
    assert cfg.train.lr == 2e-4
    assert cfg.model.channel_mult == (1, 2, 2)
    assert cfg.data.size == (16,)
    assert cfg.train.minutes is None
    assert cfg.train.bf16 is True
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_unknown_keys_name_the_nearest_valid_one():
    with pytest.raises(ValueError, match=r"unknown config key train\.lrr \(did you mean 'train\.lr'\?\)"):
        apply_overrides(Config(), {"train.lrr": 1})
    with pytest.raises(ValueError, match=r"unknown config section 'trian' \(did you mean 'train'\?\)"):
        apply_overrides(Config(), {"trian.lr": 1})
    with pytest.raises(ValueError, match="needs a section"):
        apply_overrides(Config(), {"lr": 1})


def test_bad_values_are_errors():
    with pytest.raises(ValueError, match="train.steps must be an integer, got '1.5'"):
        apply_overrides(Config(), {"train.steps": "1.5"})
    with pytest.raises(ValueError, match="train.bf16 must be true or false"):
        apply_overrides(Config(), {"train.bf16": "maybe"})
    with pytest.raises(ValueError, match="--set expects section.key=value"):
        parse_set(["train.lr"])


def test_toml_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nlr = 3e-4\nbatch_size = 64\n[model]\nchannel_mult = [1, 2]\n')
    cfg = apply_overrides(Config(), load_toml(f))
    assert cfg.train.lr == 3e-4 and cfg.train.batch_size == 64 and cfg.model.channel_mult == (1, 2)
    f.write_text("[train\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_toml(f)
    with pytest.raises(ValueError, match="does not exist"):
        load_toml(tmp_path / "missing.toml")


def test_sampling_grid_follows_the_process():
    from unblur.runs import sampling_grid

    vp = apply_overrides(Config(), {"process.kind": "vp"})
    assert sampling_grid(vp) == "trailing" and sampling_grid(Config()) == "karras"
    # A discrete spacing means nothing on a continuous process; an explicit --grid always wins.
    assert sampling_grid(apply_overrides(Config(), {"sample.grid": "leading"})) == "karras"
    assert sampling_grid(apply_overrides(vp, {"sample.grid": "leading"})) == "leading"
    assert sampling_grid(Config(), "logsnr") == "logsnr"


# -- every value checked when the config is resolved ---------------------------------------------

OLD_RUNS = sorted((Path(__file__).parent / "fixtures" / "old_runs").glob("*/config.json"))


def test_the_defaults_validate():
    validate(Config())


@pytest.mark.parametrize("path", OLD_RUNS, ids=lambda p: p.parent.name)
def test_saved_configs_of_earlier_versions_still_load(path):
    cfg = Config.from_dict(json.loads(path.read_text()))
    assert load_model(path.parent / "model.safetensors")[1] == cfg
    state = path.parent / "train_state.pt"
    if state.exists():
        assert Config.from_dict(torch.load(state, weights_only=True)["config"]) == cfg


def test_there_are_old_runs_to_load():
    assert len(OLD_RUNS) >= 4


def test_every_rule_names_a_field_and_every_field_is_checked():
    keys = {f"{sec}.{f.name}": f.type for sec in SECTIONS for f in fields(getattr(Config(), sec))}
    assert set(RULES) <= set(keys)
    cold = {f"process.{name}" for name in COLD_OPTIONS}
    assert cold <= set(keys)
    unchecked = {k for k, tp in keys.items() if "bool" not in str(tp)} - set(RULES) - cold
    assert not unchecked, f"add a rule to config.RULES for {sorted(unchecked)}"


def _registries():
    from unblur.conditioning.image import IMAGE_CONDITIONS
    from unblur.objectives import LOSSES, WEIGHTINGS
    from unblur.objectives import PERCEPTUAL as PERCEPTUAL_TERMS
    from unblur.precond import PREDICTIONS
    from unblur.processes.gaussian import SCHEDULES as GAUSSIAN_SCHEDULES
    from unblur.processes.grids import GRIDS as GRID_NAMES
    from unblur.sampling import SAMPLERS as SAMPLER_REGISTRY

    return [
        (SAMPLERS, tuple(SAMPLER_REGISTRY)),
        (GRIDS, ("auto", *GRID_NAMES)),
        (SCHEDULES, tuple(GAUSSIAN_SCHEDULES)),
        (RULES["cond.image"].choices, tuple(IMAGE_CONDITIONS)),
        (RULES["objective.prediction"].choices, tuple(PREDICTIONS)),
        (tuple(sorted(RULES["objective.loss"].choices)), tuple(sorted(LOSSES))),
        (tuple(sorted(RULES["objective.restore_loss"].choices)), tuple(sorted(LOSSES))),
        (RULES["objective.weighting"].choices, tuple(WEIGHTINGS)),
        (PERCEPTUAL, tuple(PERCEPTUAL_TERMS)),
    ]


def test_the_names_config_accepts_are_the_registries_names():
    """config.py sits below the registries and copies their names: this keeps the copies true."""
    for ours, theirs in _registries():
        assert ours == theirs


REFUSED = [
    "train.lr=inf", "train.lr=nan", "train.lr=0", "train.lr=-1e-3", "train.steps=0", "train.steps=-1",
    "train.steps=inf", "train.steps=1.5", "train.minutes=inf", "train.minutes=nan", "train.minutes=0",
    "train.minutes=-5", "train.log_every=0", "train.grad_accum=0", "train.batch_size=0", "train.threads=-1",
    "train.threads=0", "train.checkpoint_every=-1", "train.sample_every=-1", "train.keep_checkpoints=-1",
    "train.warmup_steps=-1", "train.grad_clip=-1", "train.weight_decay=-0.1", "train.betas=1,0.99",
    "train.betas=0.9,-0.1", "train.betas=0.9", "train.betas=0.9,nan", "train.ema_halflife_kimg=0",
    "train.ema_rampup=-0.1", "train.lr_schedule=linear", "train.device=gpu", "train.seed=-1",
    "data.max_bad_fraction=1.5", "data.max_bad_fraction=-0.1", "data.size=0", "data.size=8,8,8",
    "data.channels=2", "data.shift=-1", "data.num_points=0", "data.num_images=0", "data.source=",
    "model.kind=cnn", "model.base_channels=0", "model.channel_mult=,", "model.channel_mult=1,0",
    "model.num_res_blocks=0", "model.attn_resolutions=0", "model.dropout=1", "model.dropout=-0.5",
    "model.hidden=0", "model.depth=0",
    "process.kind=foo", "process.schedule=quadratic", "process.num_steps=1", "process.sigma_min=0",
    "process.sigma_min=inf", "process.sigma_max=0.001", "process.sigma_max=inf", "process.sigma_data=0",
    "process.mask_fill=nan",
    "objective.prediction=score", "objective.loss=huber", "objective.restore_loss=l3", "objective.weighting=snr",
    "objective.min_snr_gamma=0", "objective.p_std=0", "objective.p_mean=nan",
    "sample.sampler=heunn", "sample.steps=0", "sample.grid=uniform", "sample.grid_n=-1",
    "cond.dropout=1.5", "cond.superres_factor=0", "cond.image=inpaint", "cond.max_tokens=0", "cond.guidance=-1",
    "cond.guidance=inf", "cond.learned_dim=0", "cond.learned_layers=0", "cond.text_encoder=",
    "autoencoder.downsampling=2", "autoencoder.latent_channels=0", "autoencoder.widths=32", "autoencoder.widths=32,64",
    "autoencoder.norm_groups=0", "autoencoder.norm_groups=7", "autoencoder.kl_weight=-1", "autoencoder.kl_weight=nan",
    "autoencoder.perceptual=lpips", "autoencoder.perceptual_weight=-1", "autoencoder.disc_start=-1",
    "autoencoder.disc_weight=-1", "autoencoder.disc_width=0", "autoencoder.disc_layers=0", "autoencoder.holdout=0",
    "autoencoder.holdout=0.9", "autoencoder.layers_per_block=0",
]


@pytest.mark.parametrize("case", REFUSED)
def test_bad_values_are_refused_by_train_dry_run(case, tmp_path, capsys):
    assert main(["train", "--dry-run", "--out", str(tmp_path / "x"), "--set", case]) == 2
    err = capsys.readouterr().err.strip()
    key = case.split("=")[0]
    assert err.startswith("unblur train: error: ") and f"{key} " in err and "\n" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_misspelt_name_is_answered_with_the_nearest(capsys, tmp_path):
    assert main(["train", "--dry-run", "--out", str(tmp_path / "x"), "--set", "sample.sampler=heunn"]) == 2
    assert "did you mean 'heun'?" in capsys.readouterr().err


ACCEPTED = [
    "train.minutes=none", "train.threads=none", "train.threads=2", "train.grad_clip=0", "train.betas=0,0.999",
    "train.ema_rampup=0", "train.sample_every=0", "train.checkpoint_every=0", "train.keep_checkpoints=0",
    "train.device=cuda:1", "train.steps=1e3", "data.max_bad_fraction=1", "data.size=16,24", "data.channels=none",
    "model.attn_resolutions=", "model.dropout=0.5", "cond.dropout=1", "cond.guidance=0", "process.kind=jpeg",
    "process.kind=vp", "process.sigma_data=none", "objective.p_mean=-3", "sample.grid=full",
    "sample.sampler=cold-naive", "sample.grid_n=0", "model.kind=autoencoder", "autoencoder.downsampling=8",
    "autoencoder.widths=8,16,16", "autoencoder.kl_weight=0", "autoencoder.perceptual=ssim+gradient",
]


@pytest.mark.parametrize("case", ACCEPTED)
def test_edge_values_that_mean_something_are_accepted(case):
    cfg = apply_overrides(Config(), parse_set([case]))
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_a_bad_set_item_is_refused(tmp_path, capsys):
    for item in ("train.lr", "=3", " =3"):
        assert main(["train", "--dry-run", "--out", str(tmp_path / "x"), "--set", item]) == 2
        err = capsys.readouterr().err.strip()
        assert "--set expects section.key=value" in err and "\n" not in err


@pytest.mark.parametrize("content, why", [
    (b"\xff\xfe[\x00t\x00r\x00a\x00i\x00n\x00]\x00", "is not UTF-8"),
    (b"[train\nlr = 1\n", "is not valid TOML"),
    (b'[train]\nlr = "fast\n', "is not valid TOML"),
    (b"[train]\nlr = 0\n", "train.lr must be > 0"),
    (None, "does not exist"),
])
def test_a_bad_config_file_is_one_line_naming_it(content, why, tmp_path, capsys):
    f = tmp_path / "c.toml"
    if content is not None:
        f.write_bytes(content)
    before = sorted(tmp_path.iterdir())
    assert main(["train", "--dry-run", "--out", str(tmp_path / "x"), "--config", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert why in err and "\n" not in err, err
    if why.startswith("is"):
        assert str(f) in err
    assert sorted(tmp_path.iterdir()) == before
