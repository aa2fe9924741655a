"""Gaussian forward processes: discrete VP schedules (DDPM) and continuous VP, VE and EDM.

Every Gaussian process is also seen in "VE scale", where ``x = x0 + sigma * n``: a VP sample
``x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps`` divided by ``sqrt(alpha_bar)`` is
exactly that, with ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``. Samplers work on sigma only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..config import SAMPLERS
from ..types import Generator
from ..utils import append_dims, choice_error, rand, randn, randn_like
from .cold import COLD_SAMPLERS
from .grids import make_grid

if TYPE_CHECKING:
    from ..config import Config
    from ..types import DataInfo
    from .registry import DataReader

SCHEDULES = ("linear", "scaled-linear", "cosine", "sigmoid")
# Every sampler walks VE noise levels but the cold ones: ``config.SAMPLERS`` is the sampler
# registry's names (``unblur.sampling.SAMPLERS``, a test keeps them equal).
GAUSSIAN_SAMPLERS = tuple(name for name in SAMPLERS if name not in COLD_SAMPLERS)


def sigma_to_alpha_bar(sigma: Tensor) -> Tensor:
    """alpha_bar = 1 / (1 + sigma^2): the VP signal fraction at VE noise level sigma."""
    return 1.0 / (1.0 + sigma**2)


def alpha_bar_to_sigma(alpha_bar: Tensor) -> Tensor:
    """sigma = sqrt((1 - alpha_bar) / alpha_bar), the VE noise level of a VP marginal."""
    return ((1.0 - alpha_bar) / alpha_bar).sqrt()


def make_betas(
    name: str,
    num_steps: int = 1000,
    *,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    cosine_s: float = 0.008,
    max_beta: float = 0.999,
    sigmoid_range: tuple[float, float] = (-6.0, 6.0),
) -> Tensor:
    """beta_1..beta_T (float64, shape (T,)) of a named discrete schedule.

    * ``linear``: Ho et al. 2020, beta linear from ``beta_start`` to ``beta_end``.
    * ``scaled-linear``: sqrt(beta) linear (latent diffusion; defaults 0.00085 to 0.012 are
      the usual choice there, pass them explicitly).
    * ``cosine``: Nichol & Dhariwal 2021 eq. 17, alpha_bar(t) = f(t)/f(0) with
      f(t) = cos^2((t/T + s)/(1 + s) * pi/2), betas clipped at ``max_beta``.
    * ``sigmoid``: beta = sigmoid(linspace(lo, hi)) rescaled to [beta_start, beta_end]
      (Jabri et al. 2022).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    T = num_steps
    if name == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    if name == "scaled-linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    if name == "cosine":
        t = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((t + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
        return betas.clamp(max=max_beta)
    if name == "sigmoid":
        lo, hi = sigmoid_range
        s = torch.sigmoid(torch.linspace(lo, hi, T, dtype=torch.float64))
        s = (s - s.min()) / (s.max() - s.min())
        return beta_start + s * (beta_end - beta_start)
    raise choice_error("schedule", name, SCHEDULES)


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Rescale betas so that the last step has SNR exactly 0 (Lin et al. 2024, Algorithm 1).

    sqrt(alpha_bar) is shifted so its last value is 0 and scaled so its first is unchanged.
    """
    sqrt_ab = torch.cumprod(1 - betas, 0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    ab = sqrt_ab**2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1 - alphas


class GaussianProcess:
    """A Gaussian forward process over t in [0, 1], seen in VE scale.

    Subclasses give ``sigma(t)`` (and its inverse ``t_of_sigma``) and the scale ``s(t)``
    with ``x_t = s(t) * (x0 + sigma(t) * n)``; for VP processes s = sqrt(alpha_bar).
    """

    sigma_min: float
    sigma_max: float
    variance_preserving: bool = False

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        raise NotImplementedError

    def scale(self, t: Tensor) -> Tensor:
        """s(t): the factor between the VE-scale sample and the process's own sample."""
        s = self.sigma(t)
        return sigma_to_alpha_bar(s).sqrt() if self.variance_preserving else torch.ones_like(s)

    def alpha(self, t: Tensor) -> Tensor:
        """Signal coefficient of x_t = alpha(t) x0 + std(t) n in the process's own scale."""
        return self.scale(t)

    def std(self, t: Tensor) -> Tensor:
        """Noise coefficient of x_t = alpha(t) x0 + std(t) n in the process's own scale."""
        return self.scale(t) * self.sigma(t)

    def prior_std(self, sigma: float | Tensor | None = None) -> float:
        """Standard deviation of the VE-scale prior at ``sigma`` (default sigma_max).

        VP models are trained so x_T ~ N(0, I) in their own scale, which is
        N(0, (1 + sigma^2) I) in VE scale; VE/EDM priors are N(0, sigma^2 I).
        """
        s = float(self.sigma_max if sigma is None else sigma)
        return math.sqrt(1.0 + s * s) if self.variance_preserving else s

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio alpha^2 / std^2 = 1 / sigma^2."""
        return self.sigma(t) ** -2

    def q_sample(
        self, x0: Tensor, t: Tensor, *, generator: Generator = None, noise: Tensor | None = None
    ) -> Tensor:
        """Draw x_t ~ q(x_t | x0) in the process's own scale; t has shape (B,)."""
        noise = randn_like(x0, generator) if noise is None else noise
        return append_dims(self.alpha(t), x0.ndim) * x0 + append_dims(self.std(t), x0.ndim) * noise

    # -- the Process protocol (``unblur.types.Process``): levels are VE noise levels sigma ----
    kind: str = "gaussian"
    default_sampler: str = "dpmpp-2m"
    samplers: tuple[str, ...] = GAUSSIAN_SAMPLERS
    can_generate: bool = True
    loss_key: str = "loss"
    precond: str = "vp"  # the preconditioning row of ``unblur.precond`` a network over it uses
    sigma_data: float = 0.5  # images in [-1, 1]; EDMProcess takes it from the config (measured on the data)
    restores: bool = False  # it generates from noise; it is no restorer of degraded images (no PSNR/SSIM)
    restore_sampler: str | None = None
    level_estimable: bool = False
    inpaints: bool = True  # replacement and RePaint fill a user's mask (``unblur.editing.gaussian``)
    num_steps: int | None = None  # the training steps of a discrete schedule; None: continuous

    def degrade(self, x0: Tensor, level: Tensor | float, generator: Generator = None, *,
                layer: Tensor | None = None) -> Tensor:
        """x = x0 + sigma n in VE scale at the noise level(s) ``level`` (a scalar or (B,)), n ~ N(0, I)
        from ``generator`` or ``layer``; ``level`` 0 gives x0 exactly."""
        sigma = torch.as_tensor(level, device=x0.device).to(x0.dtype)
        if sigma.ndim == 0:
            sigma = sigma.expand(x0.shape[0])
        if sigma.shape != (x0.shape[0],):
            raise ValueError(f"the noise level must be a scalar or have shape ({x0.shape[0]},), "
                             f"got {tuple(sigma.shape)}")
        if bool(((sigma < 0) | ~torch.isfinite(sigma)).any()):
            raise ValueError(f"noise levels must be finite and >= 0, got {sigma.tolist()}")
        noise = randn_like(x0, generator) if layer is None else layer.to(x0.dtype)
        return x0 + append_dims(sigma, x0.ndim) * noise

    def levels(self, steps: int, grid: str) -> Tensor:
        """The named grid of ``steps`` noise levels, ending at 0 (``unblur.processes.grids``)."""
        return make_grid(grid, steps, self).to(torch.float64)

    def prior(self, shape: tuple[int, ...], generator: Generator = None, *, level: float,
              device=None, dtype: torch.dtype = torch.float32) -> Tensor:
        """x_T ~ N(0, prior_std(level)^2 I) in VE scale."""
        return randn(shape, generator=generator, device=device, dtype=dtype) * self.prior_std(level)

    def training_sigma(self, batch: int, generator: Generator = None, device=None) -> Tensor:
        """Training noise levels (B,): uniform t in [0, 1] through sigma(t) (subclasses refine)."""
        t = rand((batch,), generator=generator, device=device)
        return self.sigma(t).float()

    def training_pair(self, x0: Tensor, generator: Generator = None) -> tuple[Tensor, Tensor]:
        """(sigma (B,), x = x0 + sigma n): the process's training levels, then the noise."""
        sigma = self.training_sigma(x0.shape[0], generator, x0.device)
        noise = randn_like(x0, generator)
        return sigma, x0 + append_dims(sigma, x0.ndim) * noise  # = degrade(x0, sigma), its levels known good

    def picture(self, x0: Tensor, t: Tensor, generator: Generator = None) -> Tensor:
        """(x0 + sigma(t) n) / sqrt(1 + sigma(t)^2): every level as a VP model sees it, in [-1, 1]
        up to the noise; t = 0 is x0 exactly."""
        n = randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        tt = t.to(torch.float64).clamp(0, 1)
        sigma = torch.where(tt > 0, self.sigma(tt), torch.zeros_like(tt)).to(x0.dtype).to(x0.device)
        s = append_dims(sigma, x0.ndim)
        return (x0 + s * n) / (1 + s**2).sqrt()

    def sampler_options(self) -> dict:
        return {}

    def fit_start(self, x: Tensor, *, seed: int = 0) -> dict:
        """Statistics of the start fitted to the training data: none (the prior is N(0, I))."""
        return {}


@dataclass
class VPSDE(GaussianProcess):
    """The VP SDE of Song et al. 2021: beta(t) = beta_min + t (beta_max - beta_min), t in [eps, 1].

    alpha_bar(t) = exp(-beta_min t - (beta_max - beta_min) t^2 / 2).
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-3
    variance_preserving: bool = field(default=True, init=False)
    kind = "vpsde"
    precond = "vp-continuous"

    def __post_init__(self):
        if not 0 < self.beta_min < self.beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got {self.beta_min}, {self.beta_max}")
        self.sigma_min = float(self.sigma(torch.tensor(self.t_min, dtype=torch.float64)))
        self.sigma_max = float(self.sigma(torch.tensor(1.0, dtype=torch.float64)))

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        return -self.beta_min * t - 0.5 * (self.beta_max - self.beta_min) * t**2

    def sigma(self, t: Tensor) -> Tensor:
        return torch.expm1(-self.log_alpha_bar(t)).sqrt()

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        # Solve beta_min t + (d/2) t^2 = log(1 + sigma^2) for t >= 0.
        d = self.beta_max - self.beta_min
        c = torch.log1p(sigma**2)
        return (-self.beta_min + (self.beta_min**2 + 2 * d * c).sqrt()) / d


@dataclass
class VEProcess(GaussianProcess):
    """The VE SDE of Song et al. 2021: sigma(t) = sigma_min (sigma_max / sigma_min)^t."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    kind = "ve"
    precond = "edm"

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        return torch.log(sigma / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)


@dataclass
class EDMProcess(GaussianProcess):
    """EDM (Karras et al. 2022): sigma(t) = t, s(t) = 1, sigma in [sigma_min, sigma_max].

    ``t`` in [0, 1] is mapped to sigma through the Karras rho schedule so that t = 0 is
    sigma_min and t = 1 is sigma_max; ``sigma_data`` is the data standard deviation used by
    the preconditioning and the loss weighting.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    rho: float = 7.0
    p_mean: float = -1.2  # training levels: ln sigma ~ N(p_mean, p_std^2) (Karras et al. 2022, sec. 5)
    p_std: float = 1.2
    kind = "edm"
    precond = "edm"

    @classmethod
    def from_config(cls, cfg: Config, data_info: DataInfo | None = None, *,
                    read_data: DataReader | None = None) -> EDMProcess:
        """The process of ``cfg.process`` (sigma range, sigma_data: 0.5 until measured) and its
        training levels ``cfg.objective.p_mean`` / ``p_std``."""
        p, o = cfg.process, cfg.objective
        sigma_data = 0.5 if p.sigma_data is None else p.sigma_data
        return cls(sigma_min=p.sigma_min, sigma_max=p.sigma_max, sigma_data=sigma_data, p_mean=o.p_mean, p_std=o.p_std)

    def training_sigma(self, batch: int, generator: Generator = None, device=None) -> Tensor:
        """ln sigma ~ N(p_mean, p_std^2), shape (B,) (Karras et al. 2022, sec. 5)."""
        z = randn((batch,), generator=generator, device=device)
        return (self.p_mean + self.p_std * z).exp()

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    def sigma(self, t: Tensor) -> Tensor:
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (lo + t * (hi - lo)) ** self.rho

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (sigma ** (1 / self.rho) - lo) / (hi - lo)


class DiscreteVP(GaussianProcess):
    """A discrete variance-preserving schedule over T steps, as in DDPM (Ho et al. 2020).

    Index ``i`` in 0..T-1 is the paper's step t = i + 1. All tables are float64, shape (T,).
    The continuous t in [0, 1] maps to the index (T - 1) * t, with log sigma interpolated
    linearly between steps, so any sigma in [sigma_min, sigma_max] has a fractional timestep.
    """

    variance_preserving = True
    kind = "vp"

    def __init__(
        self,
        schedule: str = "linear",
        num_steps: int = 1000,
        *,
        zero_terminal_snr: bool = False,
        **schedule_kwargs,
    ):
        self.schedule = schedule
        self.num_steps = num_steps
        betas = make_betas(schedule, num_steps, **schedule_kwargs)
        if zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        self.zero_terminal_snr = zero_terminal_snr
        self.betas = betas  # beta_t
        self.alphas = 1.0 - betas  # alpha_t = 1 - beta_t
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)  # alpha_bar_t
        # alpha_bar_{t-1}, with alpha_bar_0 = 1
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        # beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t  (Ho et al. eq. 7)
        self.posterior_variance = (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod) * betas
        # Coefficients of the posterior mean mu_tilde(x_t, x0) (Ho et al. eq. 7)
        self.posterior_mean_coef_x0 = self.alphas_cumprod_prev.sqrt() * betas / (1 - self.alphas_cumprod)
        self.posterior_mean_coef_xt = self.alphas.sqrt() * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)
        # With zero terminal SNR the last sigma is infinite; sample from the step before it.
        self.sigmas = alpha_bar_to_sigma(self.alphas_cumprod)  # (T,), increasing
        finite = self.sigmas[torch.isfinite(self.sigmas)]
        self.sigma_min = float(finite[0])
        self.sigma_max = float(finite[-1])
        self._log_sigmas = finite.log()

    @classmethod
    def from_config(cls, cfg: Config, data_info: DataInfo | None = None, *,
                    read_data: DataReader | None = None) -> DiscreteVP:
        """The schedule of ``cfg.process`` (``schedule``, ``num_steps``, ``zero_terminal_snr``)."""
        p = cfg.process
        return cls(p.schedule, p.num_steps, zero_terminal_snr=p.zero_terminal_snr)

    def __repr__(self) -> str:
        ztsnr = ", zero_terminal_snr=True" if self.zero_terminal_snr else ""
        return f"DiscreteVP({self.schedule!r}, num_steps={self.num_steps}{ztsnr})"

    def training_sigma(self, batch: int, generator: Generator = None, device=None) -> Tensor:
        """Uniform integer steps (Ho et al. Algorithm 1) as noise levels (B,)."""
        u = rand((batch,), generator=generator, device=device, dtype=torch.float64)
        n = len(self._log_sigmas)
        i = (u * n).floor().clamp(max=n - 1)
        return self.sigma_at(i.cpu()).to(device=device, dtype=torch.float32)

    # -- tables at integer steps -------------------------------------------------------------
    def _take(self, table: Tensor, i: Tensor, like: Tensor | None = None) -> Tensor:
        out = table.to(i.device)[i.long()]
        return out if like is None else out.to(like.dtype)

    def q_mean_var(self, x0: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_t | x0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I)."""
        ab = append_dims(self._take(self.alphas_cumprod, i, x0), x0.ndim)
        return ab.sqrt() * x0, (1 - ab).expand_as(x0)

    def q_sample_discrete(
        self, x0: Tensor, i: Tensor, *, generator: Generator = None, noise: Tensor | None = None
    ) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps at integer steps i (B,)."""
        noise = randn_like(x0, generator) if noise is None else noise
        mean, var = self.q_mean_var(x0, i)
        return mean + var.sqrt() * noise

    def q_posterior(self, x0: Tensor, xt: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance beta_tilde_t of q(x_{t-1} | x_t, x0) (Ho et al. eq. 6-7)."""
        c0 = append_dims(self._take(self.posterior_mean_coef_x0, i, x0), x0.ndim)
        ct = append_dims(self._take(self.posterior_mean_coef_xt, i, x0), x0.ndim)
        var = append_dims(self._take(self.posterior_variance, i, x0), x0.ndim)
        return c0 * x0 + ct * xt, var.expand_as(x0)

    def snr_at(self, i: Tensor) -> Tensor:
        """SNR_t = alpha_bar_t / (1 - alpha_bar_t) at integer steps."""
        ab = self._take(self.alphas_cumprod, i)
        return ab / (1 - ab)

    # -- continuous view ---------------------------------------------------------------------
    def sigma_at(self, i: Tensor) -> Tensor:
        """The VE noise level of integer or fractional step(s) i in [0, T-1] (log-linear)."""
        i = torch.as_tensor(i, dtype=torch.float64)
        log_sigmas = self._log_sigmas
        n = len(log_sigmas)
        i = i.clamp(0, n - 1)
        lo = i.floor().long().clamp(max=n - 1)
        hi = (lo + 1).clamp(max=n - 1)
        w = i - lo
        return ((1 - w) * log_sigmas[lo] + w * log_sigmas[hi]).exp()

    def timestep(self, sigma: Tensor) -> Tensor:
        """The fractional step index in [0, T-1] whose log sigma interpolates to ``sigma``.

        The inverse of ``sigma_at``; values outside [sigma_min, sigma_max] are clamped to the
        ends (a network was never trained beyond them).
        """
        dtype, device = sigma.dtype, sigma.device
        log_sigmas = self._log_sigmas.to(device)
        log_s = sigma.to(torch.float64).clamp(min=1e-30).log()
        hi = torch.searchsorted(log_sigmas, log_s.contiguous()).clamp(1, len(log_sigmas) - 1)
        lo = hi - 1
        w = (log_s - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])
        return (lo.to(torch.float64) + w.clamp(0, 1)).to(dtype)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_at(torch.as_tensor(t, dtype=torch.float64) * (len(self._log_sigmas) - 1))

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        return self.timestep(sigma) / (len(self._log_sigmas) - 1)
