"""Preconditioning: every prediction type recovers x0 from its own target."""

import pytest
import torch
from torch import nn

from unblur.precond import EDMPrecond, VPPrecond, coefficients, eps_to_x0, v_target, x0_to_eps, x0_to_score
from unblur.processes import DiscreteVP


class Oracle(nn.Module):
    """A 'network' that returns a fixed output, to test the wrapper's algebra."""

    def __init__(self):
        super().__init__()
        self.out = None
        self.seen = None

    def forward(self, x_in, c_noise, cond=None):
        self.seen = (x_in, c_noise)
        return self.out


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_vp_precond_recovers_x0_from_its_target(prediction):
    p = DiscreteVP("linear", 1000)
    net = Oracle()
    D = VPPrecond(net, p, prediction)
    x0 = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    noise = torch.randn_like(x0)
    i = torch.tensor([0, 3, 100, 700, 999])
    sigma = p.sigma_at(i.double())
    x = x0 + sigma[:, None, None, None] * noise
    net.out = D.target(x0, x, sigma)
    assert torch.allclose(D(x, sigma), x0, atol=1e-9)
    # The network saw the VP-scale input x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps ...
    ab = p.alphas_cumprod[i][:, None, None, None]
    assert torch.allclose(net.seen[0], ab.sqrt() * x0 + (1 - ab).sqrt() * noise, atol=1e-12)
    # ... and its integer timestep.
    assert torch.allclose(net.seen[1], i.double(), atol=1e-9)


def test_v_target_is_salimans_ho():
    p = DiscreteVP("cosine", 1000)
    x0, eps = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    i = torch.tensor([5, 300, 900])
    ab = p.alphas_cumprod[i][:, None]
    expected = ab.sqrt() * eps - (1 - ab).sqrt() * x0
    assert torch.allclose(v_target(x0, eps, p.sigma_at(i.double())), expected)


def test_edm_precond_table():
    sd = 0.5
    sigma = torch.tensor([0.002, 0.5, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in = coefficients("edm", sigma, sd)
    assert torch.allclose(c_skip, sd**2 / (sigma**2 + sd**2))
    assert torch.allclose(c_out, sigma * sd / (sigma**2 + sd**2).sqrt())
    assert torch.allclose(c_in, 1 / (sigma**2 + sd**2).sqrt())
    net = Oracle()
    D = EDMPrecond(net, sd)
    x0 = torch.randn(3, 2, dtype=torch.float64)
    noise = torch.randn_like(x0)
    x = x0 + sigma[:, None] * noise
    net.out = D.target(x0, x, sigma)
    assert torch.allclose(D(x, sigma), x0)
    assert torch.allclose(net.seen[1], sigma.log() / 4)


def test_conversions_round_trip():
    x, x0 = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 2.0, 30.0], dtype=torch.float64)
    assert torch.allclose(eps_to_x0(x, x0_to_eps(x, x0, sigma), sigma), x0)
    # Tweedie: for x0 ~ N(0, 1) the score of N(0, 1 + sigma^2) is -x / (1 + sigma^2)
    s2 = sigma[:, None] ** 2
    assert torch.allclose(x0_to_score(x, x / (1 + s2), sigma), -x / (1 + s2))


def test_unknown_prediction_is_an_error():
    with pytest.raises(ValueError, match="prediction type 'epsilon'"):
        VPPrecond(Oracle(), DiscreteVP(), "epsilon")


def test_every_process_row_builds_its_denoiser_with_the_process_sigma_data():
    """``build_denoiser`` reads the row a process names (``process.precond``) and the sigma_data it
    declares: EDM's measured value, the 0.5 of a VE process or a cold one."""
    from dataclasses import replace

    from unblur.config import Config
    from unblur.precond import ColdPrecond
    from unblur.processes import ColdProcess, EDMProcess, VEProcess
    from unblur.runs.build import PRECONDS, build_denoiser

    cfg = Config()
    cfg = replace(cfg, objective=replace(cfg.objective, prediction="v"))
    for process, want in [(EDMProcess(sigma_data=0.3), EDMPrecond), (VEProcess(), EDMPrecond),
                          (ColdProcess("noise"), ColdPrecond)]:
        assert process.precond in PRECONDS
        D = build_denoiser(cfg, Oracle(), process)
        assert type(D) is want and D.sigma_data == pytest.approx(process.sigma_data), process
    vp = build_denoiser(cfg, Oracle(), DiscreteVP("linear", 100))
    assert type(vp) is VPPrecond and vp.prediction == "v"  # its row reads the objective's prediction instead
