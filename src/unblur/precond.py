"""Turn a raw network into a Denoiser ``D(x, sigma, cond) -> x0_hat`` (VE scale).

Every denoiser here has the form of Karras et al. 2022, eq. 7:

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))

and the table below (Karras et al. Table 1 in spirit) gives the coefficients. The conversions
between eps, x0, v and the score live in this module and nowhere else.

==========  ====================  =========================  =====================  ======================
target      c_skip                c_out                      c_in                   c_noise
==========  ====================  =========================  =====================  ======================
eps (VP)    1                     -sigma                     1/sqrt(1 + sigma^2)    timestep(sigma)
x0  (VP)    0                     1                          1/sqrt(1 + sigma^2)    timestep(sigma)
v   (VP)    1/(1 + sigma^2)       -sigma/sqrt(1 + sigma^2)   1/sqrt(1 + sigma^2)    timestep(sigma)
EDM         sd^2/(sigma^2 + sd^2) sigma sd/sqrt(sigma^2+sd^2) 1/sqrt(sigma^2 + sd^2) log(sigma)/4
residual    1                     1                          1                      1000 t (cold level)
==========  ====================  =========================  =====================  ======================

``residual`` is the cold restorer R(x_t, t) = x_t + F(x_t, 1000 t) of every cold degradation but
``noise``, which uses the EDM row at sigma(t) (``ColdPrecond``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .processes.cold import ColdProcess
from .processes.gaussian import DiscreteVP, GaussianProcess
from .types import Cond, Denoiser
from .utils import append_dims, choice_error, expand_sigma

PREDICTIONS = ("eps", "x0", "v")


# -- conversions (VE scale: x = x0 + sigma * eps) --------------------------------------------
def eps_to_x0(x: Tensor, eps: Tensor, sigma: Tensor) -> Tensor:
    """x0 = x - sigma * eps."""
    return x - append_dims(sigma, x.ndim) * eps


def x0_to_eps(x: Tensor, x0: Tensor, sigma: Tensor) -> Tensor:
    """eps = (x - x0) / sigma (sigma > 0)."""
    return (x - x0) / append_dims(sigma, x.ndim)


def x0_to_score(x: Tensor, x0: Tensor, sigma: Tensor) -> Tensor:
    """Tweedie: grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2."""
    return (x0 - x) / append_dims(sigma, x.ndim) ** 2


def v_target(x0: Tensor, eps: Tensor, sigma: Tensor) -> Tensor:
    """v = alpha eps - sigma_vp x0 with alpha = 1/sqrt(1+sigma^2), sigma_vp = sigma alpha (Salimans & Ho 2022)."""
    alpha = append_dims((1 + sigma**2).rsqrt(), x0.ndim)
    return alpha * eps - alpha * append_dims(sigma, x0.ndim) * x0


def coefficients(prediction: str, sigma: Tensor, sigma_data: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in) of ``prediction`` at VE noise level ``sigma`` (see the module table)."""
    if prediction == "eps":
        return torch.ones_like(sigma), -sigma, (1 + sigma**2).rsqrt()
    if prediction == "x0":
        return torch.zeros_like(sigma), torch.ones_like(sigma), (1 + sigma**2).rsqrt()
    if prediction == "v":
        c_in = (1 + sigma**2).rsqrt()
        return c_in**2, -sigma * c_in, c_in
    if prediction == "edm":
        sd2 = sigma_data**2
        c_in = (sigma**2 + sd2).rsqrt()
        return sd2 / (sigma**2 + sd2), sigma * sigma_data * c_in, c_in
    if prediction == "residual":
        one = torch.ones_like(sigma)
        return one, one, one
    raise choice_error("prediction type", prediction, (*PREDICTIONS, "edm", "residual"))


class Precond(nn.Module):
    """Base: ``D(x, sigma, cond) = c_skip x + c_out F(c_in x, c_noise, cond)``.

    ``raw(x, sigma, cond)`` returns the network's own output (what the loss compares with
    its target); ``forward`` returns x0_hat. The network runs in its own dtype; the
    combination is done in the input's dtype.
    """

    prediction: str = "x0"
    sigma_data: float = 1.0

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def c_noise(self, sigma: Tensor) -> Tensor:
        raise NotImplementedError

    def raw(self, x: Tensor, sigma: Tensor, cond: Cond = None) -> Tensor:
        sigma = expand_sigma(sigma, x.shape[0], x)
        _, _, c_in = coefficients(self.prediction, sigma, self.sigma_data)
        return self.net(append_dims(c_in, x.ndim) * x, self.c_noise(sigma), cond)

    def combine(self, x: Tensor, sigma: Tensor, out: Tensor) -> Tensor:
        """x0_hat from the network output ``out`` (the inverse of the loss target)."""
        c_skip, c_out, _ = coefficients(self.prediction, sigma, self.sigma_data)
        return append_dims(c_skip, x.ndim) * x + append_dims(c_out, x.ndim) * out.to(x.dtype)

    def forward(self, x: Tensor, sigma: Tensor, cond: Cond = None) -> Tensor:
        sigma = expand_sigma(sigma, x.shape[0], x)
        return self.combine(x, sigma, self.raw(x, sigma, cond))

    def target(self, x0: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
        """What ``raw`` should output at x = x0 + sigma * noise (so that D returns x0)."""
        if self.prediction == "x0":
            return x0
        if self.prediction in ("eps", "v"):
            noise = x0_to_eps(x, x0, sigma)
            return noise if self.prediction == "eps" else v_target(x0, noise, sigma)
        # EDM: F's target is (x0 - c_skip x) / c_out (Karras et al. eq. 8).
        c_skip, c_out, _ = coefficients("edm", sigma, self.sigma_data)
        return (x0 - append_dims(c_skip, x.ndim) * x) / append_dims(c_out, x.ndim)


class VPPrecond(Precond):
    """An eps-, x0- or v-predicting network over a discrete VP schedule, as a Denoiser.

    The network sees x_t = x / sqrt(1 + sigma^2) (its training input) and the fractional
    timestep index whose log sigma interpolates to sigma, so any grid can be sampled.
    """

    def __init__(self, net: nn.Module, process: DiscreteVP, prediction: str = "eps"):
        super().__init__(net)
        if prediction not in PREDICTIONS:
            raise choice_error("prediction type", prediction, PREDICTIONS)
        self.process = process
        self.prediction = prediction

    def c_noise(self, sigma: Tensor) -> Tensor:
        return self.process.timestep(sigma).to(sigma.dtype)


class ContinuousVPPrecond(VPPrecond):
    """A VP network over a continuous process (e.g. the VP SDE): c_noise = 999 * t(sigma)."""

    def __init__(self, net: nn.Module, process: GaussianProcess, prediction: str = "eps"):
        Precond.__init__(self, net)
        if prediction not in PREDICTIONS:
            raise choice_error("prediction type", prediction, PREDICTIONS)
        self.process = process
        self.prediction = prediction

    def c_noise(self, sigma: Tensor) -> Tensor:
        return 999.0 * self.process.t_of_sigma(sigma)


class EDMPrecond(Precond):
    """EDM preconditioning (Karras et al. 2022, Table 1, "Ours" column)."""

    prediction = "edm"

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__(net)
        self.sigma_data = float(sigma_data)

    def c_noise(self, sigma: Tensor) -> Tensor:
        return sigma.log() / 4


def score_fn(denoiser: Denoiser):
    """The score grad_x log p_sigma(x) of the noisy marginal, from a denoiser (Tweedie)."""

    def score(x: Tensor, sigma: Tensor, cond: Cond = None) -> Tensor:
        return x0_to_score(x, denoiser(x, sigma, cond), sigma)

    return score


class ColdPrecond(nn.Module):
    """A cold restorer R(x_t, t) -> x0_hat as a Denoiser ``D(x, t, cond)`` (the level t in place of sigma).

    ``D = c_skip x + c_out F(c_in x, c_noise = 1000 t)`` with the coefficients of the row
    ``process.prediction`` of ``coefficients`` at ``process.precond_sigma(t)``: ``residual``
    (c_skip = c_out = c_in = 1, whose zero-initialized output layer starts as the identity)
    for every degradation but ``noise``, which uses EDM's row at sigma(t) with sigma_data =
    ``process.sigma_data`` (0.5; Karras et al. 2022, Table 1). Trained by || D(x_t, t) - x0 ||
    (Bansal et al. 2022, eq. 1): ``raw`` is D itself and ``target`` is x0.
    """

    def __init__(self, net: nn.Module, process: ColdProcess):
        super().__init__()
        self.net = net
        self.process = process
        self.sigma_data = float(process.sigma_data)

    def forward(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        t = expand_sigma(t, x.shape[0], x)  # (B,) in x's dtype
        coef = coefficients(self.process.prediction, self.process.precond_sigma(t), self.sigma_data)
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in coef)
        out = self.net(c_in * x, 1000.0 * t, cond)
        return c_skip * x + c_out * out.to(x.dtype)

    def raw(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """What the loss compares with ``target``: the restored image D(x_t, t)."""
        return self(x, t, cond)

    def target(self, x0: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """x0: the restorer is trained to return the clean image (L1 or L2, ``objective.restore_loss``)."""
        return x0
