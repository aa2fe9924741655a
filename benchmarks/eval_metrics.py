"""Acceptance figures of the evaluation layer, with closed-form or reference answers.

    .venv/bin/python benchmarks/eval_metrics.py      # about 30 s on 2 CPU cores

1. Fréchet distance against scipy's float64 sqrtm reference, on random features.
2. KID over many draws of one distribution (mean near 0, negative draws) and of shifted ones.
3. Precision/recall: identical sets, two draws of one distribution, disjoint sets, half the modes.
4. Likelihood with the exact denoiser (``unblur.analytic``): ODE NLL against the true entropy
   for a 2-D Gaussian and a 2-D mixture at several RK4 step counts, exact trace and
   Hutchinson; the DDPM bound against the exact NLL of the same points.
5. The built-in digits classifier: shipped held-out accuracy, and accuracy on all digits at
   8x8, 16x16 and 32x32.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from unblur.analytic import GaussianMixture, example_mixture  # noqa: E402
from unblur.eval.likelihood import ode_log_likelihood, vlb_terms  # noqa: E402
from unblur.eval.metrics import frechet_distance, kernel_inception_distance, precision_recall  # noqa: E402
from unblur.processes.gaussian import DiscreteVP  # noqa: E402


def scipy_fid(x, y):
    from scipy import linalg

    x, y = x.numpy(), y.numpy()
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))


def main() -> None:
    g = torch.Generator().manual_seed(0)
    print("1. Fréchet distance vs scipy (float64)")
    print("| dim | n | ours | scipy | relative difference |\n|---:|---:|---:|---:|---:|")
    for dim in (2, 16, 64, 256):
        a = torch.randn(1000, dim, generator=g, dtype=torch.float64) @ torch.randn(dim, dim, generator=g,
                                                                                    dtype=torch.float64)
        b = torch.randn(1000, dim, generator=g, dtype=torch.float64) + 0.1
        ours, ref = frechet_distance(a, b), scipy_fid(a, b)
        print(f"| {dim} | 1000 | {ours:.6f} | {ref:.6f} | {abs(ours - ref) / ref:.1e} |")

    print("\n2. KID (unbiased): 500 draws of 100 vs 100 points, 16-d")
    same, shifted = [], []
    for _ in range(500):
        same.append(kernel_inception_distance(torch.randn(100, 16, generator=g), torch.randn(100, 16, generator=g),
                                              num_subsets=1, generator=g)["kid"])
    for _ in range(100):
        shifted.append(kernel_inception_distance(torch.randn(100, 16, generator=g),
                                                 torch.randn(100, 16, generator=g) + 0.3, num_subsets=1,
                                                 generator=g)["kid"])
    s, t = np.array(same), np.array(shifted)
    print(f"identical distributions: mean {s.mean():.2e} +- {s.std() / math.sqrt(len(s)):.2e} (SE), "
          f"{(s < 0).mean():.0%} of draws negative")
    print(f"shifted by 0.3 per coordinate: mean {t.mean():.2e} +- {t.std() / math.sqrt(len(t)):.2e}")

    print("\n3. Precision / recall (k = 3), 1000 points, 8-d")
    x = torch.randn(1000, 8, generator=g)
    cases = {
        "identical sets": x.clone(),
        "two draws of one distribution": torch.randn(1000, 8, generator=g),
        "disjoint (shifted by 20)": torch.randn(1000, 8, generator=g) + 20,
        "fake = the half of real with x_0 > 0": x[x[:, 0] > 0],
    }
    print("| case | precision | recall |\n|---|---:|---:|")
    for name, y in cases.items():
        pr = precision_recall(x, y)
        print(f"| {name} | {pr['precision']:.3f} | {pr['recall']:.3f} |")

    print("\n4. Likelihood with the exact denoiser (sigma 1e-3 .. 80, prior N(0, 80^2))")
    gauss = GaussianMixture(torch.ones(1), torch.tensor([[0.3, -0.2]]), torch.tensor([[[0.5, 0.2], [0.2, 0.3]]]))
    print("| data | estimator | RK4 steps | NLL (nats) | exact NLL (same points) | entropy | error | s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, dist in (("2-D Gaussian", gauss), ("2-D mixture", example_mixture())):
        xs = dist.sample(4000, generator=torch.Generator().manual_seed(1))
        exact = float(-dist.log_prob(xs).mean())
        H = dist.entropy(generator=torch.Generator().manual_seed(2))
        for steps, tr in ((8, True), (16, True), (32, True), (64, True), (32, False)):
            t0 = time.perf_counter()
            lp = ode_log_likelihood(dist.denoiser(), xs, sigma_min=1e-3, sigma_max=80.0, prior_std=80.0, steps=steps,
                                    exact_trace=tr, generator=torch.Generator().manual_seed(3))
            nll = float(-lp.mean())
            print(f"| {name} | {'exact trace' if tr else 'Hutchinson'} | {steps} | {nll:.4f} | {exact:.4f} | "
                  f"{H:.4f} | {abs(nll - H) / H:.2%} | {time.perf_counter() - t0:.1f} |")
    vp = DiscreteVP("linear", 1000)
    xs = gauss.sample(2000, generator=torch.Generator().manual_seed(4))
    exact = float(-gauss.log_prob(xs).mean())
    print("\nDDPM bound (linear VP, T = 1000, Gaussian decoder), 2-D Gaussian, 2000 points")
    print("| reverse variance | bound (nats) | +- SE | exact NLL | prior | sum of KL | decoder |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for var in ("beta", "beta_tilde"):
        t = vlb_terms(gauss.denoiser(), xs, vp, decoder="gaussian", variance=var,
                      generator=torch.Generator().manual_seed(5))
        tot = t["total"]
        print(f"| {var} | {float(tot.mean()):.4f} | {float(tot.std()) / math.sqrt(len(tot)):.4f} | {exact:.4f} | "
              f"{float(t['prior'].mean()):.2e} | {float(t['kl'].mean()):.4f} | {float(t['decoder'].mean()):.4f} |")

    print("\n5. Built-in digits classifier")
    from unblur.data import load_data
    from unblur.eval.features import feature_net_info, recognizability

    info = feature_net_info("digits")
    st = info["stats"]
    print(f"shipped: held-out accuracy {st['held_out_accuracy']:.4f} on {st['held_out']} digits "
          f"(seed {st['seed']}, {st['epochs']} epochs, sha256 {info['sha256'][:12]})")
    for size in (8, 16, 32):
        d = load_data("builtin:digits", size=size)
        r = recognizability((d.x + 1) / 2, labels=d.labels)
        print(f"all 1797 digits at {size}x{size}: accuracy {r['accuracy']:.4f}, mean top probability "
              f"{r['mean_top_prob']:.3f}")


if __name__ == "__main__":
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    main()
