"""Every sampler against the exact denoiser of a 2-D Gaussian mixture.

With the optimal denoiser E[x0 | x] known in closed form, whatever error remains is the
solver's own: the samples must reproduce the mixture, and deterministic solvers must show
their order of convergence.
"""

import threading

import pytest
import torch
from torch import nn

from unblur.analytic import example_mixture
from unblur.eval.distances import energy_distance
from unblur.guidance import cfg, clip_x0, dynamic_threshold
from unblur.precond import VPPrecond
from unblur.processes import DiscreteVP, EDMProcess, karras_grid, logsnr_grid, make_grid
from unblur.sampling import SAMPLERS, a1111_name, check_grid, generate, get_sampler, nfe, resolve_sampler, sampler_help
from unblur.utils import seeded_generators

GM = example_mixture()
VP = DiscreteVP("linear", 1000)
EDM = EDMProcess()
N = 2000

# Every registered sampler over noise levels (the contract tests below run over these).
GAUSSIAN = [name for name in SAMPLERS if name in EDM.samplers]
# Each sampler reproduces the mixture at DEFAULT, or at its usual settings given here:
# name -> (process, grid, steps, options).
DEFAULT = (EDM, "karras", 100, {})
USUAL = {
    "ddpm": (VP, "full", 1000, {}),
    "ddim": (VP, "ddim", 50, {}),
    "heun": (EDM, "karras", 18, {}),
    "dpmpp-2m": (EDM, "karras", 20, {}),
    "dpmpp-2m-sde": (EDM, "karras", 50, {}),
    "pc-langevin": (EDM, "karras", 100, {"norm": "batch"}),
}
# Variants of a sampler's options: case -> (sampler, process, grid, steps, options).
VARIANTS = {
    "ddpm-beta": ("ddpm", VP, "full", 1000, {"variance": "beta"}),
    "ddpm-subsequence": ("ddpm", VP, "leading", 100, {}),
    "ddim-eta1": ("ddim", VP, "ddim", 100, {"eta": 1.0}),
    "heun-churn": ("heun", EDM, "karras", 40, {"churn": 40, "s_tmin": 0.05, "s_tmax": 50, "s_noise": 1.003}),
}


def _case(case):
    """(sampler, process, grid, steps, options) of a registered sampler or one of its variants."""
    if case in VARIANTS:
        return VARIANTS[case]
    return (case, *USUAL.get(case, DEFAULT))


def _stats(x):
    """Component weights, means and covariances, assigning each point to its likeliest component."""
    logp, _ = GM._component_log_probs(x)
    lab = logp.argmax(1)
    w, m, c = [], [], []
    for k in range(len(GM.weights)):
        xk = x[lab == k]
        w.append(len(xk) / len(x))
        m.append(xk.mean(0))
        c.append(torch.cov(xk.T))
    return torch.tensor(w), torch.stack(m), torch.stack(c)


@pytest.fixture(scope="module")
def reference():
    g = torch.Generator().manual_seed(1234)
    ref = GM.sample(N, generator=g)
    # The real-vs-real floor at the same N, averaged over five pairs (one pair is noisy).
    pairs = [(GM.sample(N, generator=g), GM.sample(N, generator=g)) for _ in range(5)]
    return ref, sum(energy_distance(a, b) for a, b in pairs) / len(pairs)


@pytest.mark.parametrize("case", [*GAUSSIAN, *VARIANTS])
def test_sampler_reproduces_the_mixture(case, reference):
    ref, floor = reference
    sampler, proc, grid, steps, opts = _case(case)
    g = torch.Generator().manual_seed(7)
    x = generate(
        GM.denoiser(), (N, 2), process=proc, sampler=sampler, steps=steps, grid=grid,
        generator=g, dtype=torch.float64, **opts,
    )
    assert torch.isfinite(x).all()
    w, m, c = _stats(x)
    w_ref, m_ref, c_ref = _stats(ref)
    # Tolerances: a few standard errors of N = 2000 draws.
    assert torch.allclose(w, w_ref, atol=0.04), (w, w_ref)
    assert torch.allclose(m, m_ref, atol=0.08), (m, m_ref)
    assert torch.allclose(c, c_ref, atol=0.06), (c, c_ref)
    ed = energy_distance(x, ref)
    assert ed < 4 * floor, f"energy distance {ed:.5f} vs real-vs-real floor {floor:.5f}"


def _ode_error(sampler, steps, x_T, reference):
    grid = karras_grid(steps, EDM.sigma_min, EDM.sigma_max)
    out = get_sampler(sampler)(GM.denoiser(), x_T, grid)
    return (out - reference).norm(dim=1).mean().item()


@pytest.fixture(scope="module")
def ode_problem():
    g = torch.Generator().manual_seed(3)
    x_T = torch.randn(64, 2, generator=g, dtype=torch.float64) * EDM.sigma_max
    fine = karras_grid(4096, EDM.sigma_min, EDM.sigma_max)
    return x_T, get_sampler("heun")(GM.denoiser(), x_T, fine)


@pytest.mark.parametrize(
    "sampler, lo, hi", [("euler", 1.6, 2.6), ("heun", 3.0, 5.5), ("dpmpp-2m", 3.0, 6.0)]
)
def test_convergence_order(sampler, lo, hi, ode_problem):
    """Doubling the steps divides the error by ~2 (first order) or ~4 (second order)."""
    x_T, ref = ode_problem
    errs = [_ode_error(sampler, n, x_T, ref) for n in (64, 128, 256)]
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    for r in ratios:
        assert lo < r < hi, (sampler, errs, ratios)


def _ddpm_algorithm2(eps_net, p, x_T, g, variance):
    """Algorithm 2 of Ho et al. 2020, line by line (paper's 1-based t, our 0-based index)."""
    x = x_T
    for t in range(p.num_steps, 0, -1):
        i = t - 1
        z = torch.randn(x.shape, generator=g, dtype=x.dtype) if t > 1 else torch.zeros_like(x)
        alpha, ab, beta = p.alphas[i], p.alphas_cumprod[i], p.betas[i]
        sigma_t = beta.sqrt() if variance == "beta" else p.posterior_variance[i].sqrt()
        eps = eps_net(x, torch.full((x.shape[0],), float(i), dtype=x.dtype))
        x = 1 / alpha.sqrt() * (x - (1 - alpha) / (1 - ab).sqrt() * eps) + sigma_t * z
    return x


class RandomEpsNet(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(3, 32, generator=g, dtype=torch.float64) * 0.5)
        self.w2 = nn.Parameter(torch.randn(32, 2, generator=g, dtype=torch.float64) * 0.5)

    def forward(self, x, c_noise, cond=None):
        h = torch.cat([x, (c_noise / 1000)[:, None]], 1)
        return torch.tanh(h @ self.w1) @ self.w2


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_equals_algorithm2_transcription(variance):
    net = RandomEpsNet()
    p = DiscreteVP("linear", 1000)
    D = VPPrecond(net, p, "eps")
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    x_T = torch.randn(16, 2, generator=g1, dtype=torch.float64)
    with torch.no_grad():
        expected = _ddpm_algorithm2(net, p, x_T, g1, variance)
        x_T2 = torch.randn(16, 2, generator=g2, dtype=torch.float64)
        grid = make_grid("full", 1000, p)
        ours = SAMPLERS["ddpm"](D, x_T2 * (1 + grid[0] ** 2).sqrt(), grid, generator=g2, variance=variance)
    assert torch.allclose(ours, expected, atol=1e-6, rtol=0), (ours - expected).abs().max()


def test_ddim_eta0_over_all_steps_follows_the_probability_flow_ode():
    g = torch.Generator().manual_seed(11)
    grid = make_grid("full", 1000, VP)
    x_T = torch.randn(256, 2, generator=g, dtype=torch.float64) * (1 + grid[0] ** 2).sqrt()
    ddim = SAMPLERS["ddim"](GM.denoiser(), x_T, grid, eta=0.0)
    fine = logsnr_grid(4000, VP.sigma_min, float(grid[0]))
    ode = SAMPLERS["heun"](GM.denoiser(), x_T, fine)
    err = (ddim - ode).norm(dim=1)
    assert err.mean() < 0.01 and err.max() < 0.1, (err.mean(), err.max())


class ClassMixtureDenoiser:
    """Exact denoiser of one mixture component per class; class 3 is the whole mixture."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma, cond=None):
        self.calls.append(x.shape[0])
        out = GM.denoise(x, sigma)
        c = cond["class"]
        for k in range(3):
            sel = c == k
            if sel.any():
                comp = type(GM)(torch.ones(1, dtype=torch.float64), GM.means[k : k + 1], GM.covs[k : k + 1])
                out[sel] = comp.denoise(x[sel], sigma[sel])
        return out


def test_cfg_is_one_batched_forward_and_reduces_to_plain_at_scale_one():
    D = ClassMixtureDenoiser()
    x = torch.randn(8, 2, dtype=torch.float64)
    sigma = torch.full((8,), 0.8, dtype=torch.float64)
    cond = {"class": torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])}
    uncond = {"class": torch.full((8,), 3)}
    plain, null = D(x, sigma, cond), D(x, sigma, uncond)
    assert torch.equal(cfg(D, 1.0, uncond)(x, sigma, cond), plain)
    assert torch.equal(cfg(D, 0.0, uncond)(x, sigma, cond), null)
    D.calls.clear()
    guided = cfg(D, 3.0, uncond)(x, sigma, cond)
    assert D.calls == [16]  # one forward of 2B
    assert torch.allclose(guided, null + 3.0 * (plain - null))


def test_cfg_guides_samples_towards_the_class():
    D = ClassMixtureDenoiser()
    B = 400
    cond = {"class": torch.full((B,), 2)}
    uncond = {"class": torch.full((B,), 3)}
    x = generate(cfg(D, 1.0, uncond), (B, 2), process=EDM, steps=20, cond=cond,
                 generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert (x.mean(0) - GM.means[2]).norm() < 0.05


def test_thresholding_wrappers():
    D = lambda x, s, c=None: x * 3  # noqa: E731
    x = torch.linspace(-1, 1, 200).reshape(2, 100)
    s = torch.ones(2)
    assert clip_x0(D)(x, s).abs().max() == 1
    y = dynamic_threshold(D, 0.9)(x, s)
    assert y.abs().max() <= 1 + 1e-6
    # Below the threshold (s = 1) dynamic thresholding is a plain clamp.
    small = torch.full((1, 10), 0.1)
    assert torch.allclose(dynamic_threshold(D)(small, torch.ones(1)), small * 3)


# The samplers that draw noise, at their defaults or under their ``noise_options``.
STOCHASTIC = [name for name in GAUSSIAN if SAMPLERS[name].stochastic or SAMPLERS[name].noise_options]


def _run(name, x, generator, **opts):
    grid = make_grid("karras", 8, EDM)
    return SAMPLERS[name](GM.denoiser(), x, grid, generator=generator, **{**SAMPLERS[name].noise_options, **opts})


@pytest.mark.parametrize("name", STOCHASTIC)
def test_determinism_and_batch_independence(name):
    x = torch.randn(6, 2, dtype=torch.float64) * 80
    a = _run(name, x, seeded_generators(range(6)))
    b = _run(name, x, seeded_generators(range(6)))
    assert torch.equal(a, b)
    # Sample 3 alone, with its own generator, gives the same point as inside the batch.
    alone = _run(name, x[3:4], seeded_generators([3]))
    assert torch.allclose(alone, a[3:4], atol=1e-12)
    # A different seed gives a different sample.
    other = _run(name, x[3:4], seeded_generators([99]))
    assert not torch.allclose(other, a[3:4])


@pytest.mark.parametrize("name", GAUSSIAN)
def test_a_sampler_draws_noise_only_where_its_record_says(name):
    """At its defaults a sampler not marked ``stochastic`` ignores the generator; one that is does not."""
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 80
    grid = make_grid("karras", 6, EDM)
    a, b = (SAMPLERS[name](GM.denoiser(), x, grid, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    assert torch.equal(a, b) != SAMPLERS[name].stochastic


def test_two_threads_sampling_at_once_match_sequential_runs():
    xs = [torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(i)) * 80 for i in range(2)]
    names = ["dpmpp-2m-sde", "heun"]
    seq = [_run(n, x, torch.Generator().manual_seed(42)) for n, x in zip(names, xs)]
    out = [None, None]

    def work(k):
        for _ in range(3):
            out[k] = _run(names[k], xs[k], torch.Generator().manual_seed(42))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.equal(out[0], seq[0]) and torch.equal(out[1], seq[1])


def test_callback_sees_every_step():
    seen = []
    grid = make_grid("karras", 5, EDM)
    SAMPLERS["dpmpp-2m"](GM.denoiser(), torch.randn(4, 2, dtype=torch.float64) * 80, grid, callback=seen.append)
    assert [s.step for s in seen] == list(range(5))
    assert all(s.total == 5 for s in seen)
    assert seen[-1].sigma_next == 0 and seen[0].sigma == grid[0]


def test_nfe_counts():
    assert nfe("heun", 18) == 35
    assert nfe("pc-langevin", 10) == 20
    assert nfe("pc-langevin", 10, corrector_steps=3) == 40
    assert nfe("ddim", 50) == 50


@pytest.mark.parametrize("name", GAUSSIAN)
def test_nfe_is_the_count_of_denoiser_calls(name):
    calls = []

    def D(x, sigma, cond=None):
        calls.append(len(x))
        return GM.denoise(x, sigma)

    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 80
    for steps in (1, 2, 7):
        calls.clear()
        SAMPLERS[name](D, x, make_grid("karras", steps, EDM), generator=torch.Generator().manual_seed(1))
        assert len(calls) == nfe(name, steps), (name, steps)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_the_web_uis_names_read_back_as_the_sampler(name):
    """What a PNG's parameters write (AUTOMATIC1111's name) reads back, with " Karras" picking the karras
    grid, and ComfyUI's name reads too; a sampler without one is written under its own name."""
    s = SAMPLERS[name]
    assert resolve_sampler(a1111_name(name)) == (name, None)
    assert a1111_name(name) == (s.a1111 or name)
    if s.a1111:
        assert resolve_sampler(f"{s.a1111} Karras") == (name, "karras")
    if s.comfyui:
        assert resolve_sampler(s.comfyui) == (name, None)
    assert f"{name} (" in sampler_help() and s.help in sampler_help()


def test_bad_input_is_a_clear_error():
    D = GM.denoiser()
    x = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="sampler 'dpm\\+\\+'.*accepted"):
        get_sampler("dpm++")
    with pytest.raises(ValueError, match="must end at 0"):
        SAMPLERS["euler"](D, x, torch.tensor([2.0, 1.0]))
    with pytest.raises(ValueError, match="strictly decreasing"):
        check_grid(torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="eta must be in"):
        SAMPLERS["ddim"](D, x, torch.tensor([2.0, 0.0]), eta=-0.5)
    with pytest.raises(ValueError, match="variance must be"):
        SAMPLERS["ddpm"](D, x, torch.tensor([2.0, 0.0]), variance="large")
    with pytest.raises(ValueError, match="3 generators for a batch of 4"):
        SAMPLERS["ddpm"](D, x, torch.tensor([2.0, 1.0, 0.0]), generator=seeded_generators(range(3)))
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        generate(D, (4, 2), process=EDM, steps=0)
