"""Sampler benchmark: solver error against an exact denoiser, and per-step overhead, beside diffusers.

What is measured
----------------
1. **Solver error.** Data is ``example_mixture()`` (a 2-D, 3-component Gaussian mixture) whose
   optimal denoiser ``D(x, sigma, cond)`` is known in closed form, so every sample set differs
   from the data only through the solver (and the prior, N(0, I) in VP scale at the first
   level, which every method shares). Every method runs on the same process: the discrete
   linear-beta VP schedule of Ho et al. (beta 1e-4 to 0.02, 1000 steps), ``DiscreteVP("linear",
   1000)`` on our side. The figure is the energy distance between ``--n`` samples and one
   reference set of ``--n`` fresh mixture draws (the same reference for every cell, and the same
   starting noise for every method: common random numbers make rows comparable). The floor is
   the energy distance between fresh real samples and that reference (median of 5 sets): no
   sampler can be told apart from the data below it.

   Our samplers run through ``unblur.sampling.generate`` on the grid each is usually run with
   (karras for the k-diffusion family, DDIM's "leading" spacing for DDIM and DDPM); extra rows
   show other grids. The step count is the one whose ``nfe()`` equals the column's NFE; a
   combination that does not exist prints "-" (heun spends 2 * steps - 1, pc-langevin 2 per
   step), and a "nfe+1" row shows heun with one evaluation more than its column.

   diffusers' schedulers (when diffusers is importable) are driven by the same exact denoiser
   through a small model function. Their samples are in VP scale x_t = sqrt(ab) (x0 + sigma n)
   (DDIM, DDPM, DPM-Solver) or already in VE scale with ``scale_model_input`` dividing by
   sqrt(sigma^2 + 1) (Euler, Euler ancestral, Heun): in both cases the model input is
   x_ve / sqrt(1 + sigma^2), so the model multiplies it back. The noise level is the one the
   scheduler's update assumes: ``alphas_cumprod[t]`` at DDIM's and DDPM's integer timesteps,
   and ``scheduler.sigmas[i]`` for the others (DPM-Solver with Karras sigmas rounds the
   timestep it hands the model; the "net sees t" row evaluates the denoiser at the rounded
   timestep instead, which is what a network trained on integer timesteps gets). The model
   returns x0 (``prediction_type="sample"``) where the scheduler accepts it, else eps; samples
   are float64 (diffusers upcasts to float32 inside some steps). Each run gets a fresh
   scheduler and ``set_timesteps`` (they keep a step counter). ``clip_sample`` is off (the
   mixture is not in [-1, 1]); everything else is the scheduler's default, so Euler, Heun and
   DPM-Solver use diffusers' default "linspace" timesteps and DDIM/DDPM "leading".

   A check table runs our sampler on the scheduler's own sigma grid from the same noise and
   prints the largest difference of the final samples: it should be at rounding level.

2. **Per-step overhead.** Time a sampler spends outside the denoiser, per step (per grid
   interval: a heun step holds two evaluations and two diffusers ``step`` calls), on x of
   shape (64, 3, 32, 32) float32, 50 steps, with a denoiser that returns a cached tensor.
   Ours: wall time of the sampler call (grid built beforehand) minus the denoiser's own
   measured time per call, divided by the steps. diffusers: the loop of ``scale_model_input``
   (Euler, Euler ancestral and Heun only, which need it), the model and ``step``, the
   scheduler built and ``set_timesteps`` called beforehand, the same subtraction. Our
   pc-langevin is set beside ``ScoreSdeVeScheduler`` (``step_correct`` + ``step_pred``, as its
   pipeline drives it; timing only, it cannot run the VP schedule). Rounds alternate ours and
   theirs (and which goes first); medians are printed. Table 2b repeats this on x of shape
   (1, 2), where the elementwise work vanishes and the fixed per-step cost (Python, scalar
   tensor arithmetic, host syncs) is what is left.

3. **Summary**: the two goals, with figures and PASS/MISS.

Run (from the repository root, about 2-4 minutes on 2 CPU cores; ``--quick`` for a smoke run)::

    .venv/bin/python benchmarks/samplers.py [--n 2000] [--rounds 21] [--seed 0] [--quick]

Everything runs on one thread (``torch.set_num_threads(1)``): timings on a shared machine are
steadier, and the 2-D problem gains nothing from more.
"""

from __future__ import annotations

import argparse
import inspect
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from unblur.analytic import example_mixture
from unblur.eval.distances import energy_distance
from unblur.processes import DiscreteVP, make_grid
from unblur.sampling import SAMPLERS, generate, nfe

try:
    import diffusers
    from diffusers.utils import logging as diffusers_logging
except ImportError:  # the benchmark still runs our half
    diffusers = None

NFES = (5, 10, 20, 50, 100)  # columns of the solver-error table
BETA_START, BETA_END, TRAIN_STEPS = 1e-4, 0.02, 1000  # the shared linear VP schedule
OVERHEAD_SHAPE = (64, 3, 32, 32)  # batch of CIFAR-sized images
TINY_SHAPE = (1, 2)  # where elementwise work vanishes and only the per-step fixed cost is left
OVERHEAD_STEPS = 50  # grid intervals per timed sampler call
FLOOR_SETS = 5  # fresh real sets for the real-vs-real floor


# -- what is compared ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ours:
    """One of our samplers on one grid."""

    label: str
    sampler: str
    grid: str
    options: dict = field(default_factory=dict)
    extra_nfe: int = 0  # run at the steps whose nfe() is the column's NFE + this

    def steps_for(self, target: int) -> int | None:
        """The step count whose NFE is ``target + extra_nfe``, or None if there is none."""
        want = target + self.extra_nfe
        for steps in range(1, want + 1):
            if nfe(self.sampler, steps, **self.options) == want:
                return steps
        return None


@dataclass(frozen=True)
class Theirs:
    """One diffusers scheduler configuration, and how its model sees the noise level."""

    label: str
    cls: str  # class name in diffusers
    grid: str  # the timestep spacing / sigmas it uses, for the table
    config: dict = field(default_factory=dict)
    level: str = "sigmas"  # "sigmas": scheduler.sigmas[i]; "alpha_bar": alphas_cumprod[t]
    scale_input: bool = False  # k-diffusion style: sample in VE scale, scale_model_input needed
    prediction: str = "sample"  # "sample" (return x0) where the scheduler accepts it, else "epsilon"
    heun: bool = False  # 2 * steps - 1 model calls
    extra_nfe: int = 0
    ours: str | None = None  # our equivalent sampler (overhead table)

    def steps_for(self, target: int) -> int | None:
        want = target + self.extra_nfe
        if not self.heun:
            return want
        return (want + 1) // 2 if want % 2 == 1 else None

    def step_kwargs(self, sched, generator: torch.Generator) -> dict:
        """``generator=`` for the schedulers whose ``step`` takes one (Heun's does not)."""
        return {"generator": generator} if "generator" in inspect.signature(sched.step).parameters else {}

    def make(self):
        """A fresh scheduler on the shared linear schedule (schedulers keep state between calls)."""
        cls = getattr(diffusers, self.cls)
        base = dict(num_train_timesteps=TRAIN_STEPS, beta_start=BETA_START, beta_end=BETA_END, beta_schedule="linear")
        return cls(**base, prediction_type=self.prediction, **self.config)


OURS = [
    Ours("ddim", "ddim", "ddim"),
    Ours("euler", "euler", "karras"),
    Ours("euler-ancestral", "euler-ancestral", "karras"),
    Ours("heun", "heun", "karras"),
    Ours("heun (nfe+1)", "heun", "karras", extra_nfe=1),
    Ours("dpmpp-2m", "dpmpp-2m", "karras"),
    Ours("dpmpp-2m-sde", "dpmpp-2m-sde", "karras"),
    Ours("ddpm", "ddpm", "leading"),
    # norm="batch": its docstring's advice for low-dimensional data (per-sample norms are heavy-tailed)
    Ours("pc-langevin", "pc-langevin", "karras", {"norm": "batch"}),
    # the same samplers on other grids
    Ours("euler", "euler", "trailing"),
    Ours("dpmpp-2m", "dpmpp-2m", "trailing"),
    Ours("dpmpp-2m", "dpmpp-2m", "logsnr"),
    Ours("heun (nfe+1)", "heun", "trailing", extra_nfe=1),
]

NO_CLIP = {"clip_sample": False}
THEIRS = [
    Theirs("DDIM", "DDIMScheduler", "leading", NO_CLIP, level="alpha_bar", ours="ddim"),
    Theirs("Euler", "EulerDiscreteScheduler", "linspace", scale_input=True, ours="euler"),
    Theirs("Euler", "EulerDiscreteScheduler", "karras", {"use_karras_sigmas": True}, scale_input=True),
    # EulerAncestral raises NotImplementedError for prediction_type="sample"
    Theirs(
        "EulerAncestral",
        "EulerAncestralDiscreteScheduler",
        "linspace",
        scale_input=True,
        prediction="epsilon",
        ours="euler-ancestral",
    ),
    Theirs("Heun", "HeunDiscreteScheduler", "linspace", scale_input=True, heun=True, ours="heun"),
    Theirs("Heun (nfe+1)", "HeunDiscreteScheduler", "linspace", scale_input=True, heun=True, extra_nfe=1),
    Theirs("DPM++ 2M", "DPMSolverMultistepScheduler", "linspace", ours="dpmpp-2m"),
    Theirs("DPM++ 2M", "DPMSolverMultistepScheduler", "karras", {"use_karras_sigmas": True}),
    Theirs(
        "DPM++ 2M, net sees t",
        "DPMSolverMultistepScheduler",
        "karras",
        {"use_karras_sigmas": True},
        level="alpha_bar",
    ),
    Theirs(
        "SDE-DPM++ 2M",
        "DPMSolverMultistepScheduler",
        "linspace",
        {"algorithm_type": "sde-dpmsolver++"},
        ours="dpmpp-2m-sde",
    ),
    Theirs("DDPM", "DDPMScheduler", "leading", NO_CLIP, level="alpha_bar", ours="ddpm"),
]
DPMPP_LABELS = ("DPM++ 2M",)  # the rows the second goal compares against (exact noise level)


# -- driving diffusers with a VE-scale denoiser ---------------------------------------------------


def _noise_level(spec: Theirs, sched, i: int, t: Tensor) -> Tensor:
    """The VE noise level sigma (float64, 0-dim) of the model call at loop index ``i``, timestep ``t``."""
    if spec.level == "alpha_bar":
        ab = sched.alphas_cumprod[int(t)].double()
        return ((1 - ab) / ab).sqrt()
    return sched.sigmas[i].double()


def _diffusers_model(spec: Theirs, denoiser) -> Callable[[Tensor, Tensor], Tensor]:
    """A diffusers-side model ``(model_input, sigma) -> x0 or eps`` backed by our VE denoiser.

    The model input is x_ve / sqrt(1 + sigma^2) for every scheduler here: the VP sample
    sqrt(ab) x_ve with ab = 1 / (1 + sigma^2), or the VE sample after ``scale_model_input``.
    """

    def model(model_input: Tensor, sigma: Tensor) -> Tensor:
        x_ve = model_input.double() * (1 + sigma**2).sqrt()
        x0 = denoiser(x_ve, sigma.expand(x_ve.shape[0]), None)
        out = x0 if spec.prediction == "sample" else (x_ve - x0) / sigma
        return out.to(model_input.dtype)

    return model


def run_theirs(spec: Theirs, steps: int, z: Tensor, generator: torch.Generator, denoiser) -> tuple[Tensor, Tensor]:
    """Sample with a fresh diffusers scheduler from standard normal ``z``; (x0, sigmas walked)."""
    sched = spec.make()
    sched.set_timesteps(steps)
    model = _diffusers_model(spec, denoiser)
    extra = spec.step_kwargs(sched, generator)
    x = z * sched.init_noise_sigma
    levels = []
    for i, t in enumerate(sched.timesteps):
        x_in = sched.scale_model_input(x, t) if spec.scale_input else x
        sigma = _noise_level(spec, sched, i, t)
        levels.append(sigma)
        x = sched.step(model(x_in, sigma), t, x, return_dict=False, **extra)[0]
    return x, torch.stack(levels)


def run_ours(spec: Ours, steps: int, process, n: int, seed: int, denoiser, grid: Tensor | None = None) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return generate(
        denoiser,
        (n, 2),
        process=process,
        sampler=spec.sampler,
        steps=steps,
        grid=spec.grid if grid is None else grid,
        generator=generator,
        dtype=torch.float64,
        **spec.options,
    )


# -- tables ---------------------------------------------------------------------------------------


def print_table(title: str, header: list[str], rows: list[list[str]], notes: list[str] = ()) -> None:
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]

    def line(r):
        return "  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths)))

    print(f"\n{title}")
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    for note in notes:
        print(note)


def solver_error(args, vp, denoiser, mixture) -> dict:
    """Table 1: energy distance per method and NFE; returns {(who, label, grid): {nfe: value}}."""
    ref = mixture.sample(args.n, generator=torch.Generator().manual_seed(args.seed + 1))
    floors = [
        energy_distance(mixture.sample(args.n, generator=torch.Generator().manual_seed(args.seed + 2 + k)), ref)
        for k in range(FLOOR_SETS)
    ]
    floor = statistics.median(floors)
    results, rows = {}, []
    for spec in OURS:
        cells = {}
        for target in NFES:
            steps = spec.steps_for(target)
            if steps is not None:
                x = run_ours(spec, steps, vp, args.n, args.seed, denoiser)
                cells[target] = energy_distance(x, ref)
        results["ours", spec.label, spec.grid] = cells
        rows.append(["unblur " + spec.label, spec.grid, *_cells(cells)])
    if diffusers is not None:
        for spec in THEIRS:
            cells = {}
            for target in NFES:
                steps = spec.steps_for(target)
                if steps is not None:
                    generator = torch.Generator().manual_seed(args.seed)
                    z = torch.randn((args.n, 2), generator=generator, dtype=torch.float64)
                    x, _ = run_theirs(spec, steps, z, generator, denoiser)
                    cells[target] = energy_distance(x, ref)
            results["diffusers", spec.label, spec.grid] = cells
            rows.append(["diffusers " + spec.label, spec.grid, *_cells(cells)])
    notes = [
        f"floor (real vs real, n={args.n}): {floor:.4f} (median of {FLOOR_SETS}; "
        f"range {min(floors):.4f} to {max(floors):.4f})",
        "grids: karras/logsnr over the process's [sigma_min, sigma_max]; leading/trailing/linspace: timestep "
        "spacings (Lin et al. 2024 table 2); ddim = leading.",
        "pc-langevin runs with norm='batch'; 'nfe+1' rows spend one evaluation more than the column says.",
        "ddim (eta=0) is Euler on the VE probability-flow ODE: on the same grid the two agree exactly.",
    ]
    if diffusers is None:
        notes.append("diffusers is not importable: its rows are left out.")
    header = ["method", "grid", *[f"NFE {k}" for k in NFES]]
    print_table(f"1. Solver error: energy distance to the data, exact denoiser, n={args.n}", header, rows, notes)
    results["floor"] = floor
    return results


def _cells(cells: dict) -> list[str]:
    return [f"{cells[k]:.4f}" if k in cells else "-" for k in NFES]


def same_grid_check(args, vp, denoiser) -> None:
    """Our sampler on diffusers' own sigma grid, same starting noise: the final samples should agree."""
    pairs = [("ddim", 0), ("euler", 1), ("euler-ancestral", 3), ("heun", 4), ("dpmpp-2m", 6), ("ddpm", 10)]
    rows = []
    n, steps = min(args.n, 500), 10
    for name, k in pairs:
        spec = THEIRS[k]
        generator = torch.Generator().manual_seed(args.seed)
        z = torch.randn((n, 2), generator=generator, dtype=torch.float64)
        x_theirs, levels = run_theirs(spec, steps, z, generator, denoiser)
        grid = torch.cat([levels.unique_consecutive(), levels.new_zeros(1)])  # heun visits each level twice
        # The same start: x_ve = z * init_noise_sigma for the k-style schedulers (sigma_max, where
        # generate's prior would take sqrt(1 + sigma_max^2)), x_ve = x_T / sqrt(ab) for the VP ones.
        scale = spec.make().init_noise_sigma if spec.scale_input else (1 + grid[0] ** 2).sqrt()
        generator = torch.Generator().manual_seed(args.seed)
        z = torch.randn((n, 2), generator=generator, dtype=torch.float64)
        x_ours = SAMPLERS[name](denoiser, z * scale, grid, generator=generator)
        diff = (x_ours - x_theirs).abs().max().item()
        rows.append([name, f"diffusers {spec.label} {spec.grid}", f"{diff:.1e}", f"{x_theirs.abs().max().item():.2f}"])
    print_table(
        f"1b. Same grid, same noise: our sampler on the scheduler's own sigmas ({steps} steps, n={n})",
        ["unblur", "vs", "max |ours - theirs|", "max |x|"],
        rows,
        ["differences at 1e-5 and below are float32 rounding inside diffusers (sigmas are float32)."],
    )


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def overhead(args, vp, shape: tuple[int, ...], title: str) -> dict:
    """Table 2: microseconds per step outside the denoiser, ours and diffusers', medians over rounds."""
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(shape, generator=gen)
    cached = torch.randn(shape, generator=gen) * 0.5

    def instant(x, sigma, cond=None):  # the denoiser that costs nothing
        return cached

    # The denoiser's own time per call, to subtract.
    sig = torch.ones(shape[0])
    reps = 2000
    t_denoiser = statistics.median(_time(lambda: [instant(x, sig) for _ in range(reps)]) / reps for _ in range(5))

    theirs = {spec.ours: spec for spec in THEIRS if spec.ours is not None} if diffusers is not None else {}
    # The first row of each sampler in OURS: the grid it is usually run with.
    ours_specs = {name: next(spec for spec in OURS if spec.sampler == name) for name in SAMPLERS}
    S = OVERHEAD_STEPS

    def time_ours(spec: Ours) -> float:
        grid = make_grid(spec.grid, S, vp)
        fn = SAMPLERS[spec.sampler]
        g = torch.Generator().manual_seed(0)
        total = _time(lambda: fn(instant, x, grid, generator=g, **spec.options))
        return (total - nfe(spec.sampler, S, **spec.options) * t_denoiser) / S

    def time_theirs(spec: Theirs) -> float:
        sched = spec.make()
        sched.set_timesteps(S)
        extra = spec.step_kwargs(sched, torch.Generator().manual_seed(0))
        timesteps = list(sched.timesteps)

        def loop():
            sample = x
            for t in timesteps:
                x_in = sched.scale_model_input(sample, t) if spec.scale_input else sample
                sample = sched.step(instant(x_in, t), t, sample, return_dict=False, **extra)[0]

        return (_time(loop) - len(timesteps) * t_denoiser) / S

    def time_sde_ve() -> float:
        """ScoreSdeVeScheduler as ScoreSdeVePipeline drives it: one corrector and one predictor per step."""
        sched = diffusers.ScoreSdeVeScheduler(sigma_min=vp.sigma_min, sigma_max=vp.sigma_max, correct_steps=1)
        sched.set_timesteps(S)
        sched.set_sigmas(S)
        g = torch.Generator().manual_seed(0)
        timesteps = list(sched.timesteps)

        def loop():
            sample = x
            for i, t in enumerate(timesteps):
                sigma_t = sched.sigmas[i] * torch.ones(shape[0])
                sample = sched.step_correct(instant(sample, sigma_t), sample, generator=g, return_dict=False)[0]
                sample = sched.step_pred(instant(sample, sigma_t), t, sample, generator=g, return_dict=False)[0]

        return (_time(loop) - 2 * len(timesteps) * t_denoiser) / S

    def time_their(name: str) -> float:
        return time_sde_ve() if name == "pc-langevin" else time_theirs(theirs[name])

    if diffusers is not None:
        theirs["pc-langevin"] = None  # ScoreSdeVeScheduler, driven by time_sde_ve
    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in ours_specs}
    for r in range(args.rounds + 1):  # round 0 warms up and is dropped
        for name, spec in ours_specs.items():
            ours_first = r % 2 == 0
            if ours_first:
                samples[name][0].append(time_ours(spec))
            if name in theirs:
                samples[name][1].append(time_their(name))
            if not ours_first:
                samples[name][0].append(time_ours(spec))
            if r == 0:
                samples[name][0].clear()
                samples[name][1].clear()

    results, rows = {}, []
    for name, spec in ours_specs.items():
        ours_us = statistics.median(samples[name][0]) * 1e6
        if samples[name][1]:
            theirs_us = statistics.median(samples[name][1]) * 1e6
            results[name] = (ours_us, theirs_us)
            cls = "ScoreSdeVeScheduler" if name == "pc-langevin" else theirs[name].cls
            rows.append([name, spec.grid, f"{ours_us:.1f}", cls, f"{theirs_us:.1f}", f"{ours_us / theirs_us:.2f}"])
        else:
            rows.append([name, spec.grid, f"{ours_us:.1f}", "(none)", "-", "-"])
    print_table(
        f"{title}, x {tuple(shape)} float32, {S} steps, median of {args.rounds} rounds (us/step)",
        ["unblur sampler", "grid", "ours", "diffusers", "theirs", "ours/theirs"],
        rows,
        [
            f"denoiser's own time per call: {t_denoiser * 1e6:.2f} us (subtracted); heun: per grid interval "
            "(2 evaluations, 2 diffusers step calls); diffusers: scale_model_input + step, set_timesteps excluded;",
            "pc-langevin (norm='batch') against ScoreSdeVeScheduler step_correct + step_pred (its own VE sigmas; "
            "overhead only).",
        ],
    )
    return results


def summary(errors: dict, costs: dict) -> None:
    print("\n3. Summary")
    if not costs:
        print("goal: our per-step overhead <= diffusers': n/a (diffusers is not importable)")
    else:
        ratios = {name: o / t for name, (o, t) in costs.items()}
        worst = max(ratios, key=ratios.get)
        geo = math.exp(statistics.fmean(math.log(r) for r in ratios.values()))
        ours_total = sum(o for o, _ in costs.values())
        theirs_total = sum(t for _, t in costs.values())
        ok = all(r <= 1 for r in ratios.values())
        print(
            f"goal: our per-step overhead <= diffusers': {'PASS' if ok else 'MISS'} "
            f"({sum(r <= 1 for r in ratios.values())} of {len(ratios)} samplers at or below, "
            f"{sum(r <= 1.05 for r in ratios.values())} within 5%; "
            f"total {ours_total:.0f} vs {theirs_total:.0f} us/step, geometric-mean ratio {geo:.2f}, "
            f"worst {worst} {ratios[worst]:.2f})"
        )
    ours10 = {(label, grid): c[10] for (who, label, grid), c in _rows(errors) if who == "ours" and 10 in c}
    best = min(ours10, key=ours10.get)
    theirs10 = {
        (label, grid): c[10] for (who, label, grid), c in _rows(errors) if who == "diffusers" and label in DPMPP_LABELS
    }
    if not theirs10:
        print(f"goal: at 10 NFE our best sampler's solver error <= diffusers' DPM-Solver++: n/a (best ours {best})")
        return
    ref = min(theirs10, key=theirs10.get)
    ok = ours10[best] <= theirs10[ref]
    print(
        f"goal: at 10 NFE our best sampler's solver error <= diffusers' DPM-Solver++: {'PASS' if ok else 'MISS'} "
        f"(unblur {best[0]} {best[1]} {ours10[best]:.4f} vs diffusers {ref[0]} {ref[1]} {theirs10[ref]:.4f}, "
        f"best of its DPM++ 2M rows; floor {errors['floor']:.4f})"
    )


def _rows(errors: dict):
    return [(k, v) for k, v in errors.items() if k != "floor"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="samples per cell of the solver-error table")
    parser.add_argument("--rounds", type=int, default=21, help="timing rounds (medians are reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: n=300, 3 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.rounds = min(args.n, 300), min(args.rounds, 3)
    if args.n < 2 or args.rounds < 1:
        parser.error(f"need --n >= 2 and --rounds >= 1, got --n {args.n} --rounds {args.rounds}")

    torch.set_num_threads(1)
    if diffusers is not None:
        diffusers_logging.set_verbosity_error()
        warnings.filterwarnings("ignore", category=FutureWarning)
    t0 = time.perf_counter()
    vp = DiscreteVP("linear", TRAIN_STEPS, beta_start=BETA_START, beta_end=BETA_END)
    mixture = example_mixture()
    denoiser = mixture.denoiser()
    version = f"diffusers {diffusers.__version__}" if diffusers is not None else "no diffusers"
    print(f"torch {torch.__version__}, {version}, process {vp!r} (linear betas {BETA_START} to {BETA_END}), 1 thread")

    errors = solver_error(args, vp, denoiser, mixture)
    if diffusers is not None:
        same_grid_check(args, vp, denoiser)
    costs = overhead(args, vp, OVERHEAD_SHAPE, "2. Per-step overhead outside the denoiser")
    overhead(args, vp, TINY_SHAPE, "2b. The same on a tiny x: the fixed, per-step cost (Python, scalar tensor ops)")
    summary(errors, costs)
    print(f"\n(total time {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
