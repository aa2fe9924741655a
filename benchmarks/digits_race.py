"""A race on the 8x8 digits: unblur against diffusers, same machine, same time budget.

Both libraries train a U-Net of matched parameter count for ``--minutes`` each, in
alternating slices of ``--slice`` seconds (this shared machine drifts by up to 30% from minute
to minute; alternating spreads the drift over both). diffusers trains its ``UNet2DModel``
with ``DDPMScheduler`` and eps-prediction, the standard recipe of its training examples;
unblur trains with its defaults (EDM preconditioning and loss, EMA). Then each draws
``--n`` samples (diffusers: DDPM ancestral sampling over ``--ddpm-steps`` steps; unblur: its
run's default sampler), and a fixed digits classifier (an MLP trained on the training split)
gives the Fréchet distance between its hidden features of the samples and of the held-out
real digits. The floor is the same distance for real training digits.

    python benchmarks/digits_race.py --minutes 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from unblur.config import Config, apply_overrides
from unblur.data import load_data, split
from unblur.eval.distances import frechet_distance
from unblur.guidance import clip_x0
from unblur.nets import count_parameters
from unblur.sampling import generate
from unblur.training.trainer import Trainer
from unblur.utils import seeded_generators


class Features:
    """A fixed digits classifier; its hidden layer is the feature space."""

    def __init__(self, x_train: np.ndarray, y_train: np.ndarray):
        from sklearn.neural_network import MLPClassifier

        self.clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=600, random_state=0).fit(x_train, y_train)

    def __call__(self, images01: np.ndarray) -> torch.Tensor:
        x = images01.reshape(len(images01), -1)
        h = np.maximum(x @ self.clf.coefs_[0] + self.clf.intercepts_[0], 0)  # ReLU hidden layer
        return torch.from_numpy(h)

    def accuracy(self, x, y) -> float:
        return float((self.clf.predict(x.reshape(len(x), -1)) == y).mean())


class DiffusersRun:
    def __init__(self, x_train: torch.Tensor, target_params: int, batch: int, lr: float, seed: int):
        from diffusers import DDPMScheduler, UNet2DModel

        torch.manual_seed(seed)
        best = None
        for width in (24, 32, 40, 48, 56, 64):
            net = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=2,
                              block_out_channels=(width, 2 * width), down_block_types=("DownBlock2D", "DownBlock2D"),
                              up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8)
            gap = abs(count_parameters(net) - target_params)
            if best is None or gap < best[0]:
                best = (gap, net)
        self.net = best[1]
        self.sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=lr)
        self.x, self.batch, self.step = x_train, batch, 0
        self.gen = torch.Generator().manual_seed(seed)

    def train_step(self):
        idx = torch.randint(0, len(self.x), (self.batch,), generator=self.gen)
        x0 = self.x[idx]
        noise = torch.randn(x0.shape, generator=self.gen)
        t = torch.randint(0, 1000, (self.batch,), generator=self.gen)
        xt = self.sched.add_noise(x0, noise, t)
        loss = torch.nn.functional.mse_loss(self.net(xt, t).sample, noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1

    @torch.no_grad()
    def sample(self, n: int, steps: int, seed: int) -> torch.Tensor:
        from diffusers import DDPMScheduler

        sched = DDPMScheduler.from_config(self.sched.config)
        sched.set_timesteps(steps)
        x = torch.randn((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))
        self.net.eval()
        for t in sched.timesteps:
            eps = self.net(x, t).sample
            x = sched.step(eps, t, x, generator=torch.Generator().manual_seed(seed + int(t))).prev_sample
        return x.clamp(-1, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget of each library")
    ap.add_argument("--slice", type=float, default=30.0, help="seconds per alternating slice")
    ap.add_argument("--n", type=int, default=500, help="samples per library")
    ap.add_argument("--ddpm-steps", type=int, default=100, help="diffusers' DDPM sampling steps")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    data = load_data("builtin:digits")
    train_set, held_out = split(data, 0.2, seed=args.seed)
    to01 = lambda t: ((t.clamp(-1, 1) + 1) / 2).numpy()  # noqa: E731
    feats = Features(to01(train_set.x).reshape(len(train_set), -1), train_set.labels.numpy())

    cfg = apply_overrides(Config(), {"train.steps": 10**9, "train.checkpoint_every": 0, "train.sample_every": 0,
                                     "train.device": "cpu", "sample.grid_n": 0})
    ours = Trainer(cfg, "runs/race-unblur", overwrite=True, data=train_set, progress=False)
    theirs = DiffusersRun(train_set.x, count_parameters(ours.net), cfg.train.batch_size, 2e-4, args.seed)

    spent = {"unblur": 0.0, "diffusers": 0.0}
    budget = args.minutes * 60
    while min(spent.values()) < budget:
        for name, step in (("unblur", ours.train_step), ("diffusers", theirs.train_step)):
            t0 = time.time()
            end = t0 + min(args.slice, budget - spent[name])
            while time.time() < end:
                step()
            spent[name] += time.time() - t0
        print(f"  trained {spent['unblur']:.0f} s / {spent['diffusers']:.0f} s: "
              f"unblur {ours.step} steps, diffusers {theirs.step} steps", flush=True)

    t0 = time.time()
    with torch.no_grad():
        s = cfg.sample
        ours_x = generate(clip_x0(ours.ema_denoiser()), (args.n, 1, 8, 8), process=ours.process, sampler=s.sampler,
                          steps=s.steps, generator=seeded_generators(range(args.n)))
    t_ours = time.time() - t0
    t0 = time.time()
    theirs_x = theirs.sample(args.n, args.ddpm_steps, args.seed)
    t_theirs = time.time() - t0

    real_ref = feats(to01(held_out.x))
    fd_ours = frechet_distance(feats(to01(ours_x)), real_ref)
    fd_theirs = frechet_distance(feats(to01(theirs_x)), real_ref)
    m = min(len(train_set), args.n)
    fd_floor = frechet_distance(feats(to01(train_set.x[:m])), real_ref)

    print()
    print(f"digits race: {args.minutes:g} min of training each on 2 CPU cores, {args.n} samples each")
    acc = feats.accuracy(to01(held_out.x), held_out.labels.numpy())
    print(f"classifier accuracy on held-out real digits: {acc:.3f}")
    print(f"{'library':<10} {'params':>9} {'steps':>7} {'img/s':>7} {'sampler':<22} {'sample s':>8} {'FD':>8}")
    rows = [
        ("unblur", count_parameters(ours.net), ours.step, ours.step * cfg.train.batch_size / spent["unblur"],
         f"{cfg.sample.sampler} x{cfg.sample.steps}", t_ours, fd_ours),
        ("diffusers", count_parameters(theirs.net), theirs.step,
         theirs.step * cfg.train.batch_size / spent["diffusers"], f"DDPM x{args.ddpm_steps}", t_theirs, fd_theirs),
    ]
    for r in rows:
        print(f"{r[0]:<10} {r[1]:>9,} {r[2]:>7} {r[3]:>7.0f} {r[4]:<22} {r[5]:>8.1f} {r[6]:>8.2f}")
    print(f"{'real':<10} {'':>9} {'':>7} {'':>7} {'(training digits)':<22} {'':>8} {fd_floor:>8.2f}")
    verdict = "PASS" if fd_ours < fd_theirs else "MISS"
    print(f"goal: unblur's FD below diffusers': {verdict} ({fd_ours:.2f} vs {fd_theirs:.2f}; floor {fd_floor:.2f})")


if __name__ == "__main__":
    main()
