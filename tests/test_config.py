"""Config parsing: strict keys, typed values, round trips."""

import pytest

from unblur.config import Config, apply_overrides, load_toml, parse_set


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
