"""Likelihoods: the probability-flow ODE (any Gaussian model) and the DDPM variational bound.

* ``ode_log_likelihood``: log p(x0) in nats by the instantaneous change of variables along
  the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma (Song et al. 2021, eq. 39;
  Karras et al. 2022, eq. 3 with sigma(t) = t), integrated in u = log sigma by classical RK4
  from sigma_min to sigma_max, with the prior N(0, prior_std^2) at the end. The divergence is
  exact (one backward pass per dimension) or Hutchinson's estimate E[e^T J e] with one fixed
  Rademacher probe per sample.
* ``ode_bits_per_dim``: the same for 8-bit images, with uniform dequantization.
* ``vlb_terms`` / ``vlb_bits_per_dim``: the DDPM bound L_T + sum_t L_{t-1} + L_0 for a
  discrete VP model (Ho et al. 2020, eq. 5; Nichol & Dhariwal 2021, sec. 2), with fixed reverse
  variances (beta_tilde or beta) and a discretized Gaussian decoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..processes.gaussian import DiscreteVP
from ..types import Cond, Denoiser, Generator
from ..utils import expand_sigma, rand, randn, sum_flat

LOG2 = math.log(2.0)


def _divergence(denoiser: Denoiser, x: Tensor, sigma: Tensor, cond: Cond, probe: Tensor | None):
    """(D(x, sigma), div_x D(x, sigma) per sample): exact when probe is None, else Hutchinson."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        d = denoiser(x, sigma, cond)
        if probe is not None:
            (vjp,) = torch.autograd.grad((d * probe).sum(), x)
            div = sum_flat(vjp * probe)
        else:
            flat = d.reshape(len(x), -1)
            div = torch.zeros(len(x), dtype=x.dtype, device=x.device)
            for j in range(flat.shape[1]):
                (g,) = torch.autograd.grad(flat[:, j].sum(), x, retain_graph=j + 1 < flat.shape[1])
                div = div + g.reshape(len(x), -1)[:, j]
    return d.detach(), div.detach()


def ode_log_likelihood(
    denoiser: Denoiser,
    x0: Tensor,
    *,
    sigma_min: float,
    sigma_max: float,
    prior_std: float,
    steps: int = 64,
    exact_trace: bool | None = None,
    cond: Cond = None,
    generator: Generator = None,
    callback: Callable[[int], None] | None = None,
) -> Tensor:
    """log p(x0) in nats per sample (B,) by the probability-flow ODE.

    Args:
        sigma_min, sigma_max: the integration range in VE noise levels; x0 is taken as the
            state at sigma_min (the model's smallest level).
        prior_std: std of the VE-scale prior at sigma_max (``process.prior_std(sigma_max)``).
        steps: RK4 steps in log sigma (4 denoiser calls and divergences each).
        exact_trace: exact divergence (default when a sample has at most 16 dimensions) or a
            Hutchinson estimate with one Rademacher probe per sample, fixed along the path.
    """
    if sigma_min <= 0 or sigma_max <= sigma_min:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    B = len(x0)
    dim = x0[0].numel()
    exact = dim <= 16 if exact_trace is None else exact_trace
    probe = None
    if not exact:
        probe = (rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype) < 0.5).to(x0.dtype) * 2 - 1

    def field(x: Tensor, u: float) -> tuple[Tensor, Tensor]:
        # In u = log sigma: dx/du = sigma dx/dsigma = x - D(x, sigma), and d(log-density)/du = -div.
        sigma = expand_sigma(math.exp(u), B, x)
        d, div_d = _divergence(denoiser, x, sigma, cond, probe)
        return x - d, dim - div_d

    u0, u1 = math.log(sigma_min), math.log(sigma_max)
    h = (u1 - u0) / steps
    x = x0.detach()
    acc = torch.zeros(B, dtype=torch.float64, device=x0.device)  # integral of div(dx/du) du
    for k in range(steps):
        u = u0 + k * h
        k1, l1 = field(x, u)
        k2, l2 = field(x + 0.5 * h * k1, u + 0.5 * h)
        k3, l3 = field(x + 0.5 * h * k2, u + 0.5 * h)
        k4, l4 = field(x + h * k3, u + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        acc = acc + (h / 6 * (l1 + 2 * l2 + 2 * l3 + l4)).to(torch.float64)
        if callback is not None:
            callback(k)
    xf = x.to(torch.float64).reshape(B, -1)
    log_prior = -0.5 * (xf**2).sum(1) / prior_std**2 - dim * (math.log(prior_std) + 0.5 * math.log(2 * math.pi))
    return log_prior + acc


def ode_bits_per_dim(
    denoiser: Denoiser,
    x0: Tensor,
    *,
    levels: int = 256,
    generator: Generator = None,
    **ode_kwargs,
) -> Tensor:
    """Bits per dimension of images in [-1, 1] quantized to ``levels`` values, per sample (B,).

    Uniform dequantization: x = x0 + (u - 1/2) * delta with delta = 2 / (levels - 1), so
    -log2 P(x0) <= -(log p(x) + D log delta) / ln 2 in expectation over u.
    """
    delta = 2.0 / (levels - 1)
    u = rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x = x0 + (u - 0.5) * delta
    logp = ode_log_likelihood(denoiser, x, generator=generator, **ode_kwargs)
    dim = x0[0].numel()
    return -(logp + dim * math.log(delta)) / (dim * LOG2)


# -- the variational bound of a discrete VP model ----------------------------------------------


def gaussian_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mean1, var1) || N(mean2, var2)) elementwise, in nats."""
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)


def _std_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def discretized_gaussian_log_likelihood(x0: Tensor, mean: Tensor, log_scale: Tensor, *, levels: int = 256) -> Tensor:
    """log P(x0) elementwise under N(mean, exp(log_scale)^2) integrated over x0's bin (Ho et al. sec. 3.3).

    x0 lies on the grid of ``levels`` values in [-1, 1]; bins have half-width 1 / (levels - 1)
    and the first and last extend to -inf and +inf.
    """
    half = 1.0 / (levels - 1)
    inv_s = torch.exp(-log_scale)
    upper = _std_normal_cdf((x0 - mean + half) * inv_s)
    lower = _std_normal_cdf((x0 - mean - half) * inv_s)
    upper = torch.where(x0 > 1 - half, torch.ones_like(upper), upper)
    lower = torch.where(x0 < -1 + half, torch.zeros_like(lower), lower)
    return torch.log((upper - lower).clamp(min=1e-12))


def vlb_terms(
    denoiser: Denoiser,
    x0: Tensor,
    process: DiscreteVP,
    *,
    timesteps: int | None = None,
    variance: str = "beta_tilde",
    decoder: str = "discretized",
    levels: int = 256,
    cond: Cond = None,
    generator: Generator = None,
    callback: Callable[[int], None] | None = None,
) -> dict[str, Tensor]:
    """The terms of the DDPM bound, each in nats per sample (B,).

    ``prior`` is L_T = KL(q(x_T | x0) || N(0, I)); ``kl`` is sum_{t=2}^T L_{t-1} with
    L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)), estimated from one x_t per step;
    ``decoder`` is L_0 = -log p(x0 | x1). With ``timesteps=K`` the kl sum is estimated from one
    random step in each of K equal strata of 2..T (unbiased). The reverse mean is the posterior
    mean at D's x0_hat; its variance is beta_tilde_t or beta_t (``variance``). ``decoder`` is
    "discretized" (images on ``levels`` values) or "gaussian" (a density, for vectors).
    """
    if not isinstance(process, DiscreteVP):
        raise ValueError(f"the variational bound needs a discrete VP (DDPM) model, got {process!r}; "
                         "use the ODE likelihood (--metrics bpd with an EDM model uses the ODE)")
    if process.zero_terminal_snr:
        raise ValueError("the variational bound needs a finite terminal sigma; this model uses zero terminal SNR")
    if variance not in ("beta_tilde", "beta"):
        raise ValueError(f"variance must be 'beta_tilde' or 'beta', got {variance!r}")
    if decoder not in ("discretized", "gaussian"):
        raise ValueError(f"decoder must be 'discretized' or 'gaussian', got {decoder!r}")
    T = process.num_steps
    B = len(x0)
    dev, dt = x0.device, x0.dtype

    def x0_hat_at(xt: Tensor, i: int) -> Tensor:
        ab = float(process.alphas_cumprod[i])
        sigma = expand_sigma(float(process.sigmas[i]), B, xt)
        return denoiser(xt / math.sqrt(ab), sigma, cond)  # the model's D in VE scale

    def step_index(i: int) -> Tensor:
        return torch.full((B,), i, dtype=torch.long)

    # L_T: the prior term.
    ab_T = float(process.alphas_cumprod[-1])
    prior = sum_flat(gaussian_kl(math.sqrt(ab_T) * x0, torch.full_like(x0, 1 - ab_T),
                                 torch.zeros_like(x0), torch.ones_like(x0)))

    # sum_{t=2}^T L_{t-1}: indices i = t - 1 in 1..T-1.
    if timesteps is None or timesteps >= T - 1:
        idx, weight = list(range(1, T)), 1.0
    else:
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        edges = torch.linspace(1, T, timesteps + 1, dtype=torch.float64)
        u = rand((timesteps,), generator=generator if isinstance(generator, torch.Generator) else None,
                 dtype=torch.float64)
        idx = sorted({int(min(T - 1, math.floor(a + (b - a) * float(w)))) for a, b, w in zip(edges[:-1], edges[1:], u)})
        weight = (T - 1) / len(idx)
    kl = torch.zeros(B, dtype=torch.float64, device=dev)
    for n, i in enumerate(idx):
        noise = randn(x0.shape, generator=generator, device=dev, dtype=dt)
        xt = process.q_sample_discrete(x0, step_index(i).to(dev), noise=noise)
        mean_q, var_q = process.q_posterior(x0, xt, step_index(i).to(dev))
        mean_p, _ = process.q_posterior(x0_hat_at(xt, i), xt, step_index(i).to(dev))
        var_p = float(process.posterior_variance[i] if variance == "beta_tilde" else process.betas[i])
        kl = kl + sum_flat(gaussian_kl(mean_q, var_q, mean_p, torch.full_like(mean_p, var_p))).double()
        if callback is not None:
            callback(n)
    kl = kl * weight

    # L_0: the decoder -log p(x0 | x1), mean = posterior mean at x0_hat (which is x0_hat itself), var = beta_1.
    noise = randn(x0.shape, generator=generator, device=dev, dtype=dt)
    x1 = process.q_sample_discrete(x0, step_index(0).to(dev), noise=noise)
    mean0, _ = process.q_posterior(x0_hat_at(x1, 0), x1, step_index(0).to(dev))
    log_scale = torch.full_like(mean0, 0.5 * math.log(float(process.betas[0])))
    if decoder == "discretized":
        dec = -sum_flat(discretized_gaussian_log_likelihood(x0, mean0, log_scale, levels=levels))
    else:
        var0 = float(process.betas[0])
        dec = sum_flat(0.5 * ((x0 - mean0) ** 2 / var0 + math.log(2 * math.pi * var0)))
    return {"prior": prior.double(), "kl": kl, "decoder": dec.double(), "total": prior.double() + kl + dec.double()}


def vlb_bits_per_dim(denoiser: Denoiser, x0: Tensor, process: DiscreteVP, **kwargs) -> dict[str, Tensor]:
    """``vlb_terms`` divided by (D ln 2): bits per dimension per sample, term by term."""
    dim = x0[0].numel()
    return {k: v / (dim * LOG2) for k, v in vlb_terms(denoiser, x0, process, **kwargs).items()}
