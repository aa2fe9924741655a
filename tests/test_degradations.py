"""The contract every registered cold degradation keeps, run over the registry, and the jpeg one."""

import dataclasses
import math

import pytest
import torch

from unblur.config import ProcessConfig
from unblur.processes.cold import COLD_PROCESSES, COLD_SAMPLERS, ColdProcess, build_cold_process, check_process_config
from unblur.processes.degradations import DEGRADATIONS, Jpeg, get_degradation
from unblur.utils import seeded_generators

NAMES = list(DEGRADATIONS)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def process(name: str, shape=(3, 12, 10)) -> ColdProcess:
    """The degradation with its default options (blend: a seeded second data set of ``shape``)."""
    others = torch.rand(6, *shape, generator=torch.Generator().manual_seed(9)) * 2 - 1
    return ColdProcess(name, others=others)


def smooth(b=3, shape=(3, 12, 10), dtype=torch.float32) -> torch.Tensor:
    """A fixed smooth test batch in [-0.8, 0.8]: a different low-frequency pattern per image and channel."""
    C, H, W = shape
    y = torch.linspace(0, 1, H, dtype=torch.float64)[:, None]
    x = torch.linspace(0, 1, W, dtype=torch.float64)[None]
    imgs = [[0.8 * torch.sin(math.pi * ((i + 1) * x + (c + 1) * y) + i) for c in range(C)] for i in range(b)]
    return torch.stack([torch.stack(im) for im in imgs]).to(dtype)


def degrade(p: ColdProcess, x, t, seed=0, layer=None):
    """degrade with a fixed generator (the layer of a stochastic degradation) or a given layer."""
    if layer is not None:
        return p.degrade(x, t, layer=layer)
    return p.degrade(x, t, torch.Generator().manual_seed(seed))


def test_the_registry_lists_every_degradation_and_names_them_in_errors():
    assert COLD_PROCESSES == tuple(DEGRADATIONS) and "jpeg" in COLD_PROCESSES
    assert all(cls.name == name for name, cls in DEGRADATIONS.items())
    with pytest.raises(ValueError, match=r"unknown cold process 'jpg' \(did you mean 'jpeg'\?\).*blur"):
        get_degradation("jpg")
    assert {n for n in NAMES if process(n).can_generate} >= {"blur", "mask", "blend", "noise"}
    assert not process("jpeg").can_generate and process("jpeg").level_estimable


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("device", DEVICES)
def test_level_zero_is_the_identity_and_shape_dtype_device_are_kept(name, device):
    p = process(name)
    for dtype in (torch.float32, torch.float64):
        x = smooth(4, dtype=dtype).to(device)
        assert torch.equal(degrade(p, x, 0.0), x)
        t = torch.tensor([0.0, 0.3, 0.0, 1.0], dtype=torch.float64)  # one level per image
        y = degrade(p, x, t)
        assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
        assert torch.isfinite(y).all()
        assert torch.equal(y[0], x[0]) and torch.equal(y[2], x[2])
        assert not torch.equal(y[3], x[3])  # level 1 changes the image


@pytest.mark.parametrize("name", NAMES)
def test_distance_to_x0_does_not_decrease_with_the_level(name):
    shape = (3, 16, 16)  # pixelation's grids 16, 8, 4, 2, 1 at these levels are nested
    p = process(name, shape)
    x = smooth(3, shape)
    layer = p.draw_layer(x, torch.Generator().manual_seed(5)) if p.stochastic else None
    levels = [0.0, 0.25, 0.5, 0.75, 1.0]
    d = [float((degrade(p, x, t, layer=layer) - x).double().norm()) for t in levels]
    assert all(b >= a - 1e-9 for a, b in zip(d, d[1:])), d
    assert d[-1] > 0


@pytest.mark.parametrize("name", NAMES)
def test_the_same_seed_gives_the_same_output_and_images_do_not_depend_on_their_batch(name):
    p = process(name)
    x = smooth(4)
    assert torch.equal(degrade(p, x, 0.6, seed=3), degrade(p, x, 0.6, seed=3))
    if p.stochastic:
        assert not torch.equal(degrade(p, x, 0.6, seed=3), degrade(p, x, 0.6, seed=4))
    t = torch.tensor([0.2, 0.5, 0.7, 1.0], dtype=torch.float64)
    full = p.degrade(x, t, seeded_generators(range(10, 14)))
    for i in range(4):
        alone = p.degrade(x[i : i + 1], t[i : i + 1], seeded_generators([10 + i]))
        assert torch.equal(full[i : i + 1], alone), i


@pytest.mark.parametrize("name", NAMES)
def test_scalar_and_per_image_levels_agree_and_invalid_levels_raise(name):
    p = process(name)
    x = smooth(3)
    assert torch.equal(degrade(p, x, 0.4), degrade(p, x, torch.full((3,), 0.4, dtype=torch.float64)))
    assert torch.equal(degrade(p, x, 0.4), degrade(p, x, torch.tensor(0.4, dtype=torch.float64)))
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"level t must lie in \[0, 1\]"):
            degrade(p, x, bad)
    with pytest.raises(ValueError, match=r"level t must be a scalar or have shape \(3,\)"):
        degrade(p, x, torch.zeros(2))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) images"):
        degrade(p, x[0], 0.5)


@pytest.mark.parametrize("name", NAMES)
def test_the_process_protocol(name):
    p = process(name)
    assert p.kind == name and p.default_sampler == "cold" and p.samplers == COLD_SAMPLERS
    assert p.loss_key == "restore_loss" and p.sampler_options() == {"process": p}
    assert p.restores and p.restore_sampler in (*COLD_SAMPLERS, "one-shot") and p.precond == "cold"
    if p.inpaints:  # what editing.cold_inpaint reads: the masked fraction at each level, and the fill value
        m = p.mask(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), (12, 10))
        assert m.shape == (3, 1, 12, 10) and float(m[0].max()) == 0 and float(m[2].min()) == 1
        assert isinstance(p.fill, float)
    if p.degradation.partner_data:  # a config key naming the second data set the caller reads
        assert p.degradation.partner_data in ProcessConfig.__dataclass_fields__
    levels = p.levels(4, "karras")
    assert levels.dtype == torch.float64 and levels.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    x = smooth(3)
    # The training pair draws t ~ U[0, 1] and then the layer from one generator, as the trainer did.
    g = torch.Generator().manual_seed(7)
    t_ref = torch.rand(3, generator=g)
    x_ref = p.degrade(x, t_ref, g)
    t, x_t = p.training_pair(x, torch.Generator().manual_seed(7))
    assert torch.equal(t, t_ref) and torch.equal(x_t, x_ref)
    pic = p.picture(x, torch.tensor([0.0, 0.5, 1.0]), torch.Generator().manual_seed(1))
    assert pic.min() >= -1 and pic.max() <= 1 and torch.equal(pic[0], x[0])
    if p.can_generate and name != "blur":  # blur's start needs statistics fitted on data
        a = p.prior((2, 3, 12, 10), torch.Generator().manual_seed(0), level=1.0)
        b = p.start((2, 3, 12, 10), torch.Generator().manual_seed(0))
        assert torch.equal(a, b) and a.shape == (2, 3, 12, 10)
    elif not p.can_generate:
        with pytest.raises(ValueError, match="no image-free start"):
            p.prior((2, 3, 12, 10), level=1.0)


# A bad value for every config key any degradation reads: a new option needs a line here.
BAD = {"blur_sigma_max": -1.0, "blur_schedule": "foo", "blur_start": "foo", "start_noise": -0.5, "pixelate_min": 0,
       "mask_kind": "foo", "mask_fill": float("nan"), "mask_patch": 0, "fade_width": 0.0, "cold_seed": None,
       "snow_density": 0.0, "snow_flake": -1.0, "noise_sigma_max": 0.0, "blend_data": None}


@pytest.mark.parametrize("name", NAMES)
def test_check_process_config_rejects_each_bad_option_naming_its_key(name):
    cls = DEGRADATIONS[name]
    good = ProcessConfig(kind=name, blend_data="builtin:digits")
    check_process_config(good)  # the defaults are valid, and no data is loaded
    for key in cls.options.values():
        assert key in BAD, f"add a bad value for process.{key} to BAD"
        if BAD[key] is None and key != "blend_data":
            continue  # any value is valid (a seed)
        bad = dataclasses.replace(good, **{key: BAD[key]})
        with pytest.raises(ValueError, match=rf"process\.{key}\b"):
            check_process_config(bad)
    check_process_config(ProcessConfig(kind="edm"))  # Gaussian processes are checked elsewhere


def test_bad_options_name_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"unknown process.mask_kind 'foo'.*accepted: centre, fade, patches"):
        check_process_config(ProcessConfig(kind="mask", mask_kind="foo"))
    with pytest.raises(ValueError, match=r"process.blur_sigma_max must be a positive width in pixels, got -1"):
        check_process_config(ProcessConfig(kind="blur", blur_sigma_max=-1))
    with pytest.raises(TypeError, match="unknown cold process option 'sigma'"):
        ColdProcess("blur", sigma=2.0)


def test_jpeg_loses_more_at_higher_levels_and_handles_grey_colour_and_any_size():
    assert Jpeg.quality(torch.tensor([0.0, 0.001, 0.5, 1.0])) == [100, 100, 52, 5]
    p = ColdProcess("jpeg")
    for shape in ((3, 17, 30), (1, 9, 24), (3, 32, 32)):
        x = smooth(2, shape) + 0.1 * (torch.rand(2, *shape, generator=torch.Generator().manual_seed(0)) - 0.5)
        errs = [float((p.degrade(x, t) - x).abs().mean()) for t in (0.001, 0.3, 0.7, 1.0)]
        assert errs[0] < 0.02, (shape, errs)  # quality 100: the 8-bit rounding and little else
        assert errs[0] < errs[1] < errs[2] < errs[3], (shape, errs)
        y = p.degrade(x, 1.0)
        assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
        # Values come back on the 8-bit grid of [-1, 1].
        assert torch.allclose((y.double() + 1) * 127.5, ((y.double() + 1) * 127.5).round(), atol=1e-4)
    with pytest.raises(ValueError, match="jpeg compresses grey or RGB images, but the data has 2 channel"):
        p.degrade(torch.zeros(1, 2, 8, 8), 0.5)
    with pytest.raises(ValueError, match="2 channel"):
        build_cold_process(ProcessConfig(kind="jpeg"), shape=(2, 8, 8))
    assert build_cold_process(ProcessConfig(kind="jpeg"), shape=(1, 8, 8)).kind == "jpeg"


def test_options_read_as_attributes_and_replace_changes_them():
    p = ColdProcess("mask", mask_kind="patches", seed=3)
    assert p.mask_kind == "patches" and p.cold_seed == 3 and p.seed == 3 and p.degradation.pattern == "patches"
    q = dataclasses.replace(ColdProcess("blur", blur_sigma_max=2.0), blur_start="means")
    assert q.blur_start == "means" and q.blur_sigma_max == 2.0
    assert ColdProcess("blur", mask_kind="fade") == ColdProcess("blur")  # options of other degradations: ignored
    with pytest.raises(AttributeError, match="the blur process has no attribute 'mask_kind'"):
        getattr(ColdProcess("blur"), "mask_kind")  # noqa: B009
