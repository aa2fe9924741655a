"""The forward processes against their closed forms."""

import math

import pytest
import torch

from unblur.processes import (
    VPSDE,
    DiscreteVP,
    EDMProcess,
    VEProcess,
    ddim_grid,
    discrete_grid,
    karras_grid,
    logsnr_grid,
    make_betas,
    make_grid,
)
from unblur.processes.grids import timesteps_for

SCHEDULES = ["linear", "scaled-linear", "cosine", "sigmoid"]


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_tables_are_consistent(name):
    p = DiscreteVP(name, 1000)
    assert p.betas.shape == (1000,)
    assert ((p.betas > 0) & (p.betas < 1)).all()
    assert torch.allclose(p.alphas, 1 - p.betas)
    assert torch.allclose(p.alphas_cumprod, torch.cumprod(1 - p.betas, 0))
    assert (p.alphas_cumprod[1:] < p.alphas_cumprod[:-1]).all()  # strictly more noise
    # sigma = sqrt((1 - alpha_bar) / alpha_bar) and SNR = 1 / sigma^2
    i = torch.arange(1000)
    assert torch.allclose(p.sigma_at(i.double()), ((1 - p.alphas_cumprod) / p.alphas_cumprod).sqrt())
    assert torch.allclose(p.snr_at(i), p.sigma_at(i.double()) ** -2)


def test_linear_schedule_is_ho_et_al():
    b = make_betas("linear", 1000)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert torch.allclose(b[1:] - b[:-1], torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))


def test_cosine_schedule_matches_nichol_dhariwal():
    T, s = 1000, 0.008
    p = DiscreteVP("cosine", T)
    t = torch.arange(1, T + 1, dtype=torch.float64)
    f = lambda u: torch.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected = f(t) / f(torch.zeros(1, dtype=torch.float64))
    # Identical until the beta clipping at 0.999 bites in the last steps.
    assert torch.allclose(p.alphas_cumprod[:-5], expected[:-5], rtol=1e-10)
    assert p.betas.max() <= 0.999


def test_zero_terminal_snr_rescale():
    p = DiscreteVP("linear", 1000, zero_terminal_snr=True)
    ref = DiscreteVP("linear", 1000)
    assert p.alphas_cumprod[-1].item() == pytest.approx(0.0, abs=1e-12)
    assert p.alphas_cumprod[0].item() == pytest.approx(ref.alphas_cumprod[0].item())
    assert math.isfinite(p.sigma_max)


@pytest.mark.parametrize("name", SCHEDULES)
def test_q_sample_statistics_monte_carlo(name):
    p = DiscreteVP(name, 1000)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.full((n,), 0.7, dtype=torch.float64)
    for step in (0, 250, 999):
        i = torch.full((n,), step)
        xt = p.q_sample_discrete(x0, i, generator=g, noise=None)
        ab = p.alphas_cumprod[step]
        se = math.sqrt(1 / n)
        assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=5 * se)
        assert xt.var().item() == pytest.approx(1 - ab.item(), rel=0.02, abs=5 * math.sqrt(2 / n) * (1 - ab.item()))


def test_continuous_q_sample_matches_discrete():
    p = DiscreteVP("linear", 1000)
    x0 = torch.randn(4, 3, dtype=torch.float64)
    noise = torch.randn(4, 3, dtype=torch.float64)
    i = torch.tensor([0, 10, 500, 999])
    t = i.double() / 999
    assert torch.allclose(p.q_sample(x0, t, noise=noise), p.q_sample_discrete(x0, i, noise=noise), atol=1e-10)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_posterior_matches_bayes_rule_numerically(name):
    """q(x_{t-1} | x_t, x0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0), integrated on a fine grid."""
    p = DiscreteVP(name, 1000)
    x0, xt = 0.6, -0.3
    for step in (1, 10, 400, 998):
        a, ab_prev = p.alphas[step], p.alphas_cumprod[step - 1]
        u = torch.linspace(-6, 6, 400_001, dtype=torch.float64)  # candidate x_{t-1}
        log_lik = -((xt - a.sqrt() * u) ** 2) / (2 * (1 - a))  # q(x_t | x_{t-1})
        log_prior = -((u - ab_prev.sqrt() * x0) ** 2) / (2 * (1 - ab_prev))  # q(x_{t-1} | x0)
        w = torch.softmax(log_lik + log_prior, 0)
        mean_num = (w * u).sum()
        var_num = (w * (u - mean_num) ** 2).sum()
        mean, var = p.q_posterior(
            torch.tensor([x0], dtype=torch.float64), torch.tensor([xt], dtype=torch.float64), torch.tensor([step])
        )
        assert mean.item() == pytest.approx(mean_num.item(), abs=1e-6)
        assert var.item() == pytest.approx(var_num.item(), rel=1e-4)
    # beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t, and beta_tilde_1 = 0
    assert p.posterior_variance[0].item() == 0.0


def test_discrete_sigma_timestep_round_trip():
    p = DiscreteVP("cosine", 1000)
    i = torch.tensor([0.0, 1.0, 17.0, 17.25, 500.5, 998.0], dtype=torch.float64)
    assert torch.allclose(p.timestep(p.sigma_at(i)), i, atol=1e-9)
    s = torch.tensor([p.sigma_min, 0.3, 1.0, 7.0, p.sigma_max], dtype=torch.float64)
    assert torch.allclose(p.sigma_at(p.timestep(s)), s, rtol=1e-10)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.allclose(p.t_of_sigma(p.sigma(t)), t, atol=1e-10)


@pytest.mark.parametrize("proc", [VPSDE(), VEProcess(), EDMProcess()], ids=["vpsde", "ve", "edm"])
def test_continuous_sigma_t_round_trip(proc):
    t = torch.linspace(0.001, 1, 50, dtype=torch.float64)
    assert torch.allclose(proc.t_of_sigma(proc.sigma(t)), t, atol=1e-9)
    assert (proc.sigma(t)[1:] > proc.sigma(t)[:-1]).all()


def test_vpsde_alpha_bar_closed_form():
    proc = VPSDE(beta_min=0.1, beta_max=20.0)
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    ab = torch.exp(-0.1 * t - 0.5 * 19.9 * t**2)
    assert torch.allclose(proc.alpha(t) ** 2, ab)
    assert torch.allclose(proc.alpha(t) ** 2 + proc.std(t) ** 2, torch.ones(3, dtype=torch.float64))


def test_edm_sigma_endpoints():
    proc = EDMProcess(sigma_min=0.002, sigma_max=80)
    assert proc.sigma(torch.tensor(0.0)).item() == pytest.approx(0.002)
    assert proc.sigma(torch.tensor(1.0)).item() == pytest.approx(80)


def _is_valid_grid(g):
    return g.ndim == 1 and g[-1] == 0 and (g[1:] < g[:-1]).all()


def test_karras_and_logsnr_grids():
    g = karras_grid(10, 0.002, 80.0, rho=7.0)
    assert len(g) == 11 and _is_valid_grid(g)
    assert g[0].item() == pytest.approx(80) and g[-2].item() == pytest.approx(0.002)
    # rho = 1 is linear in sigma
    assert torch.allclose(karras_grid(5, 1.0, 5.0, rho=1.0)[:-1], torch.tensor([5.0, 4, 3, 2, 1], dtype=torch.float64))
    g = logsnr_grid(8, 0.01, 100.0)
    log_snr = -2 * g[:-1].log()
    assert _is_valid_grid(g)
    assert torch.allclose(log_snr.diff(), log_snr.diff()[0].expand(7))


def test_discrete_spacings_match_diffusers_conventions():
    assert timesteps_for(10, 1000, "leading").tolist() == list(range(900, -1, -100))
    assert timesteps_for(10, 1000, "trailing").tolist() == list(range(999, 0, -100))
    assert timesteps_for(10, 1000, "linspace").tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    p = DiscreteVP("linear", 1000)
    for spacing in ("leading", "trailing", "linspace"):
        g = discrete_grid(p, 25, spacing)
        assert len(g) == 26 and _is_valid_grid(g)
    full = ddim_grid(p, 1000)
    assert torch.allclose(full[:-1], p.sigmas.flip(0))


def test_bad_grid_and_schedule_names_are_errors():
    with pytest.raises(ValueError, match="schedule 'cosin'.*cosine"):
        DiscreteVP("cosin")
    with pytest.raises(ValueError, match="grid 'karas'"):
        make_grid("karas", 10, EDMProcess())
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        karras_grid(0, 0.1, 10)
    with pytest.raises(ValueError, match="discrete schedule"):
        make_grid("trailing", 10, EDMProcess())
    with pytest.raises(ValueError, match="exceeds"):
        timesteps_for(2000, 1000, "leading")


# -- the Process protocol, run over the registry --------------------------------------------------------
def _partners(source, shape):
    """The reader of a second data set (blend's) in these tests: seeded images of ``shape``."""
    return torch.rand(6, *shape, generator=torch.Generator().manual_seed(9)) * 2 - 1


def _build(name, shape=(3, 8, 8), cold_start=None):
    """The registered process ``name`` from the default config, through its factory alone."""
    from dataclasses import replace

    from unblur.config import Config
    from unblur.processes import PROCESSES
    from unblur.types import DataInfo

    cfg = Config()
    cfg = replace(cfg, process=replace(cfg.process, kind=name, blend_data="partners"))
    info = DataInfo(kind="image", shape=shape, cold_start=cold_start)
    return PROCESSES[name](cfg, info, read_data=_partners)


def _protocol_members():
    """Every attribute and method ``types.Process`` declares."""
    from unblur.types import Process

    methods = [k for k, v in vars(Process).items() if callable(v) and not k.startswith("_")]
    return [*Process.__annotations__, *methods]


def _registered():
    from unblur.processes import PROCESSES

    return list(PROCESSES)


@pytest.mark.parametrize("name", _registered())
def test_every_registered_process_keeps_the_protocol(name):
    from unblur.config import ObjectiveConfig
    from unblur.runs.build import PRECONDS
    from unblur.sampling import SAMPLERS

    p = _build(name)
    missing = [m for m in _protocol_members() if not hasattr(p, m)]
    assert not missing, f"the {name} process lacks {missing}"
    assert p.kind == name
    assert set(p.samplers) <= set(SAMPLERS) and p.default_sampler in p.samplers
    assert p.precond in PRECONDS and p.loss_key in ObjectiveConfig.__dataclass_fields__
    assert p.sigma_data > 0
    if p.restores:
        assert p.restore_sampler in (*p.samplers, "one-shot")
    else:  # a noise process: it generates, and restores nothing
        assert p.restore_sampler is None and not p.level_estimable and p.can_generate
    x0 = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.equal(p.degrade(x0, 0.0, torch.Generator().manual_seed(1)), x0)
    levels = p.levels(4, "karras")
    assert levels.dtype == torch.float64 and len(levels) == 5 and levels[-1] == 0 and (levels.diff() < 0).all()
    top = float(levels[0])
    x_t = p.degrade(x0, torch.tensor([0.0, top / 2, top, top], dtype=torch.float64), torch.Generator().manual_seed(1))
    assert x_t.shape == x0.shape and torch.equal(x_t[0], x0[0]) and not torch.equal(x_t[3], x0[3])
    layer_from = torch.Generator().manual_seed(2)
    level, pair = p.training_pair(x0, layer_from)
    assert level.shape == (4,) and pair.shape == x0.shape and torch.isfinite(pair).all()
    pic = p.picture(x0, torch.tensor([0.0, 0.3, 0.6, 1.0]), torch.Generator().manual_seed(3))
    assert pic.shape == x0.shape and torch.equal(pic[0], x0[0])
    stats = p.fit_start(torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(6)) * 2 - 1)
    if p.can_generate:  # the start of generation, after the statistics it needs are fitted (DataInfo.cold_start)
        q = _build(name, cold_start=stats) if stats else p
        start = q.prior((2, 3, 8, 8), torch.Generator().manual_seed(4), level=top)
        assert start.shape == (2, 3, 8, 8) and torch.isfinite(start).all()


def _shrink(x, level, cond=None):
    """The exact denoiser of N(0, I) data in VE scale, x / (1 + sigma^2); a fine stand-in restorer."""
    return x / (1 + level.reshape(-1, *[1] * (x.ndim - 1)) ** 2)


@pytest.mark.parametrize("name", _registered())
def test_every_sampler_of_a_process_walks_its_levels_at_its_counted_cost(name):
    from unblur.sampling import get_sampler, nfe

    p = _build(name)
    x0 = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    levels = p.levels(3, "karras")
    calls = []

    def D(x, level, cond=None):
        calls.append(len(x))
        return _shrink(x, level)

    for sampler in p.samplers:
        calls.clear()
        g = torch.Generator().manual_seed(5)
        x = p.degrade(x0, float(levels[0]), g)
        out = get_sampler(sampler)(D, x, levels, generator=g, **p.sampler_options())
        assert out.shape == x0.shape and torch.isfinite(out).all(), sampler
        assert len(calls) == nfe(sampler, 3), (sampler, len(calls))


def test_every_registered_sampler_applies_to_some_registered_process():
    from unblur.sampling import SAMPLERS

    accepted = {s for name in _registered() for s in _build(name).samplers}
    assert accepted == set(SAMPLERS)


def test_a_new_forward_process_needs_only_its_class_and_its_register_line():
    """A throwaway process, VE with sigma linear in t, registered and built through the registry
    alone: ``runs.build.build_process`` builds it from a Config, its ``precond`` row makes its
    denoiser, and the samplers it lists reproduce a mixture with the exact denoiser."""
    from dataclasses import dataclass, replace

    from torch import nn

    from unblur.analytic import example_mixture
    from unblur.config import Config
    from unblur.eval.distances import energy_distance
    from unblur.processes import PROCESSES, register_process
    from unblur.runs.build import build_denoiser, build_process
    from unblur.sampling import generate
    from unblur.types import DataInfo

    @dataclass
    class LinearVE(VEProcess):
        """sigma(t) = sigma_min + t (sigma_max - sigma_min)."""

        kind = "ve-linear"

        def sigma(self, t):
            return self.sigma_min + t * (self.sigma_max - self.sigma_min)

        def t_of_sigma(self, sigma):
            return (sigma - self.sigma_min) / (self.sigma_max - self.sigma_min)

        @classmethod
        def from_config(cls, cfg, data_info=None, *, read_data=None):
            return cls(sigma_min=cfg.process.sigma_min, sigma_max=cfg.process.sigma_max)

    class Zero(nn.Module):
        def forward(self, x, c_noise, cond=None):
            return torch.zeros_like(x)

    register_process("ve-linear", LinearVE.from_config)
    try:
        cfg = Config()
        cfg = replace(cfg, process=replace(cfg.process, kind="ve-linear", sigma_min=0.01, sigma_max=40.0))
        p = build_process(cfg, DataInfo(kind="vector", shape=(2,)))
        assert isinstance(p, LinearVE) and (p.sigma_min, p.sigma_max) == (0.01, 40.0)
        t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
        assert torch.allclose(p.t_of_sigma(p.sigma(t)), t) and float(p.sigma(t)[1]) == pytest.approx(20.005)
        # Its precond row ("edm", inherited) makes the denoiser: a zero network leaves c_skip x.
        D = build_denoiser(cfg, Zero(), p)
        x, s = torch.randn(3, 2, dtype=torch.float64), torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
        assert torch.allclose(D(x, s), (0.25 / (s**2 + 0.25))[:, None] * x)
        level, x_t = p.training_pair(torch.zeros(5, 2), torch.Generator().manual_seed(0))
        assert level.shape == (5,) and ((level >= 0.01) & (level <= 40.0)).all() and x_t.shape == (5, 2)
        gm = example_mixture()
        g = torch.Generator().manual_seed(1)
        ref = gm.sample(1000, generator=g)
        floor = energy_distance(gm.sample(1000, generator=g), gm.sample(1000, generator=g))
        x = generate(gm.denoiser(), (1000, 2), process=p, steps=20, generator=g, dtype=torch.float64)
        assert energy_distance(x, ref) < 5 * floor + 1e-3
    finally:
        PROCESSES.pop("ve-linear", None)
