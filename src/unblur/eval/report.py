"""Evaluate a trained model: metrics on generated samples beside a data floor, likelihoods,
and sampler sweeps.

The real data are split once (seeded) into two disjoint halves: A is the reference every
sample set is compared with, B stands in for a perfect model. So the *floor*
(metric(B, A)) and the model's number (metric(generated, A)) use the same reference and the
same number of samples, and can be read side by side. A pure-noise baseline (Gaussian noise
clipped to [-1, 1]) marks the other end for images.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from ..data import Data
from ..types import Denoiser
from ..utils import choice_error, seeded_generators
from .extractors import FeatureExtractor, load_extractor, reference_features
from .metrics import frechet_distance, inception_score, kernel_inception_distance, precision_recall

METRICS = ("fid", "kid", "pr", "is", "bpd", "nll", "psnr", "ssim")
DEFAULT_IMAGE_METRICS = ("fid", "kid", "pr", "is")  # "is" left out where the features give no class probabilities
DEFAULT_VECTOR_METRICS = ("fid", "kid", "pr", "nll")
DEFAULT_COLD_METRICS = ("psnr", "ssim")  # and the image metrics where the degradation can generate
DEFAULTS_HELP = (f"{','.join(DEFAULT_IMAGE_METRICS)} for images (without is where the features give no class "
                 f"probabilities: --features pixels, or auto on a folder); {','.join(DEFAULT_VECTOR_METRICS)} for "
                 f"vectors; {','.join(DEFAULT_COLD_METRICS)} for cold-diffusion runs, plus "
                 f"{','.join(DEFAULT_IMAGE_METRICS)} where the degradation generates (blur, mask, blend, noise)")
KID_SCALE = "unscaled MMD^2 (papers often print KID x 1e3)"

Progress = Callable[[str, int], Callable[[int], None]]
"""``progress(description, total)`` returns ``update(k)``; the CLI passes tqdm bars."""


def _no_progress(desc: str, total: int) -> Callable[[int], None]:
    return lambda k: None


@dataclass(frozen=True)
class EvalSettings:
    metrics: tuple[str, ...] | None = None  # any of METRICS; None: ``default_metrics`` (DEFAULTS_HELP)
    n: int | None = None  # generated samples; None: as many as the floor half holds
    features: str = "auto"  # feature network spec (see extractors.py)
    sampler: str = "dpmpp-2m"
    steps: int = 20
    grid: str = "karras"
    seed: int = 0  # samples use seed + i; the real data split uses this seed too
    batch: int = 256
    kid_subset: int = 1000  # KID subset size (capped at the sample count)
    kid_subsets: int = 100
    pr_k: int = 3  # neighbours for the precision/recall manifolds
    likelihood_n: int = 64  # real items whose bits/dim or NLL is computed
    ode_steps: int = 32  # RK4 steps of the probability-flow ODE
    vlb_variance: str = "beta"  # reverse variance of the bound: beta | beta_tilde
    levels: int = 256  # quantization levels of image data for bits/dim
    restore_level: float = 0.5  # psnr/ssim: held-out images degraded to this level, then restored
    use_cache: bool = True  # reuse cached reference features


def check_metrics(names: Sequence[str]) -> tuple[str, ...]:
    out = []
    for m in names:
        m = m.strip().lower()
        if m not in METRICS:
            raise choice_error("metric", m, METRICS)
        out.append(m)
    if not out:
        raise ValueError(f"no metrics asked for: give --metrics with some of {', '.join(METRICS)}")
    return tuple(dict.fromkeys(out))


def default_metrics(info: dict, process) -> tuple[str, ...]:
    """What ``evaluate`` measures when no metrics are named (see DEFAULTS_HELP): restoration for a
    cold-diffusion run (and sample quality where its degradation can generate), sample quality
    and likelihood otherwise."""
    gen = DEFAULT_IMAGE_METRICS if info["kind"] == "image" else DEFAULT_VECTOR_METRICS
    if process.restores:
        return DEFAULT_COLD_METRICS + (gen if process.can_generate else ())
    return gen


def check_data(real: Data, info: dict) -> None:
    """The real data must be non-empty and shaped like the model's samples."""
    if len(real) == 0:
        raise ValueError(f"the data set {real.source!r} is empty: give a folder or file with items in it")
    if real.kind != info["kind"]:
        raise ValueError(f"the model makes {info['kind']} data but {real.source!r} holds {real.kind} data")
    shape = list(real.x.shape[1:])
    if shape != list(info["shape"]):
        raise ValueError(
            f"mismatched sizes: the model makes items of shape {tuple(info['shape'])} but {real.source!r} has "
            f"{tuple(shape)}; pass --resize to resize the data to the model's size, or evaluate on data of that size"
        )


def split_halves(real: Data, seed: int) -> tuple[Tensor, Tensor]:
    """Two disjoint halves (A: reference, B: floor) of the real items, by a seeded permutation."""
    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
    half = len(real) // 2
    return real.x[perm[:half]], real.x[perm[half : 2 * half]]


def vector_extractor(device: torch.device) -> FeatureExtractor:
    """Vectors are their own features (Fréchet distance etc. in data space)."""
    return FeatureExtractor(id="vectors", label="the vectors themselves", fn=lambda x: (x, None), device=device)


@torch.no_grad()
# generate_samples, evaluate and sweep share keyword options on purpose (one settings vocabulary).
def generate_samples(
    denoiser: Denoiser,
    process,
    shape: Sequence[int],
    n: int,
    *,
    sampler: str,
    steps: int,
    grid: str,
    seed: int,
    batch: int,
    device: torch.device,
    progress: Progress = _no_progress,
    decode: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, float]:
    """n samples (on the CPU, images clamped to [-1, 1]) and the seconds they took. ``decode``
    turns what the sampler makes (a latent run's latents of ``shape``) into the images."""
    from ..sampling import generate

    update = progress(f"sample {sampler} x{steps}", n)
    chunks = []
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        b = min(batch, n - start)
        gens = seeded_generators(range(seed + start, seed + start + b), device=device)
        x = generate(denoiser, (b, *shape), process=process, sampler=sampler, steps=steps, grid=grid,
                     generator=gens, device=device)
        if decode is not None:
            x = decode(x)
        chunks.append(x.float().cpu())
        update(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    x = torch.cat(chunks)
    return (x.clamp(-1, 1) if x.ndim == 4 else x), seconds


def compare(
    fake: Tensor,
    ref: Tensor,
    metrics: Sequence[str],
    settings: EvalSettings,
    *,
    fake_probs: Tensor | None = None,
) -> dict[str, Any]:
    """fid / kid / precision, recall / is of one feature set against the reference features."""
    out: dict[str, Any] = {}
    if "fid" in metrics:
        out["fid"] = frechet_distance(fake, ref)
    if "kid" in metrics:
        out.update(kernel_inception_distance(fake, ref, subset_size=settings.kid_subset,
                                             num_subsets=settings.kid_subsets,
                                             generator=torch.Generator().manual_seed(settings.seed)))
    if "pr" in metrics:
        out.update(precision_recall(ref, fake, k=settings.pr_k))
    if "is" in metrics and fake_probs is not None:
        out.update(inception_score(fake_probs))
    return out


def evaluate(
    denoiser: Denoiser,
    process,
    info: dict,
    real: Data,
    *,
    settings: EvalSettings,
    device: torch.device,
    progress: Progress = _no_progress,
    decode: Callable[[Tensor], Tensor] | None = None,
    sample_shape: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The whole report: metrics of generated samples, the floor, baselines, likelihoods, settings.

    A latent run gives ``decode`` (latents -> images) and ``sample_shape`` (its latents' shape);
    ``info`` then describes the images, and the samples are compared as decoded images against
    the data at full resolution. Likelihoods and restoration metrics, which would measure the
    latents, are refused there.

    With no ``settings.metrics``, the defaults for the data and process (``default_metrics``);
    of those, the Inception Score is left out, and the report's ``notes`` say so, where the
    features give no class probabilities (asked for by name, it is an error there).
    """
    given = settings.metrics is not None
    metrics = check_metrics(settings.metrics) if given else default_metrics(info, process)
    latent_notes = []
    if decode is not None:
        latent_only = [m for m in metrics if m in ("bpd", "nll", "psnr", "ssim")]
        if latent_only and given:
            raise ValueError(f"{', '.join(latent_only)} would measure a latent run's latents, not its images: "
                             "drop them (fid, kid, pr and is are computed on the decoded images)")
        if latent_only:
            metrics = tuple(m for m in metrics if m not in latent_only)
            latent_notes.append(f"{', '.join(latent_only)} left out: on a latent run they would measure the latents")
    check_data(real, info)
    is_image = info["kind"] == "image"
    if not is_image and "bpd" in metrics:
        raise ValueError("bits/dim is for images; for vector data ask for nll (nats)")
    if is_image and "nll" in metrics:
        raise ValueError("nll (nats) is for vector data; for images ask for bpd")
    if "psnr" in metrics or "ssim" in metrics:
        check_restoration(process, settings.restore_level)
    sample_metrics = [m for m in metrics if m in ("fid", "kid", "pr", "is")]
    ref, floor_x = split_halves(real, settings.seed)
    n = settings.n or len(floor_x)
    if sample_metrics:
        need = settings.pr_k + 1 if "pr" in sample_metrics else 2
        if min(len(ref), n) < need:
            raise ValueError(
                f"too few samples: {len(real)} real items give halves of {len(ref)}, and --n is {n}; "
                f"{', '.join(sample_metrics)} need at least {need} in each set (use more data or a larger --n)"
            )
    report: dict[str, Any] = {"data": real.source, "model_shape": list(info["shape"]), "notes": latent_notes}
    settings_out = asdict(settings) | {"n": n, "metrics": list(metrics), "reference_items": len(ref),
                                       "floor_items": min(n, len(floor_x))}
    timings: dict[str, float] = {}

    if sample_metrics:
        ext = (load_extractor(settings.features, device=device, data_source=real.source) if is_image
               else vector_extractor(device))
        if "is" in sample_metrics and not ext.has_probs:
            if given:
                raise ValueError(f"the Inception Score needs a classifier, and {ext.label} gives no class "
                                 "probabilities: use --features builtin:NAME or a torchvision classifier, or drop 'is'")
            sample_metrics.remove("is")
            metrics = tuple(m for m in metrics if m != "is")
            settings_out["metrics"] = list(metrics)
            report["notes"].append(f"the Inception Score (is) was left out of the default metrics: {ext.label} gives "
                                   "no class probabilities (use --features builtin:NAME or a torchvision classifier)")
        settings_out["features"] = ext.id
        report["features"] = ext.label
        t0 = time.perf_counter()
        ref_f, _, cached = reference_features(ext, ref, source=f"{real.source}|half-A|seed{settings.seed}",
                                              use_cache=settings.use_cache, batch=settings.batch)
        timings["reference_features_s"] = round(time.perf_counter() - t0, 2)
        report["reference_cached"] = cached

        fake, seconds = generate_samples(denoiser, process, sample_shape or info["shape"], n,
                                         sampler=settings.sampler, steps=settings.steps, grid=settings.grid,
                                         seed=settings.seed, batch=settings.batch, device=device, progress=progress,
                                         decode=decode)
        timings["sampling_s"] = round(seconds, 2)
        fake_f, fake_p = ext(fake, batch=settings.batch)
        report.update(compare(fake_f, ref_f, sample_metrics, settings, fake_probs=fake_p))
        if "kid" in sample_metrics:
            report["kid_scale"] = KID_SCALE

        floor_f, floor_p = ext(floor_x[:n], batch=settings.batch)
        report["floor"] = compare(floor_f, ref_f, sample_metrics, settings, fake_probs=floor_p)
        if n > len(floor_x):
            report["floor"]["note"] = f"the floor half holds {len(floor_x)} items, fewer than --n {n}"
        if is_image:
            g = torch.Generator().manual_seed(settings.seed + 1)
            noise = torch.randn((n, *info["shape"]), generator=g).clamp(-1, 1)
            noise_f, noise_p = ext(noise, batch=settings.batch)
            report["noise"] = compare(noise_f, ref_f, sample_metrics, settings, fake_probs=noise_p)
        if not ext.semantic:
            report["warning"] = "metrics were computed on raw pixels, not on a feature network's features"

    lik_x = floor_x[: settings.likelihood_n].to(device)
    if "bpd" in metrics:
        report.update(image_bits_per_dim(denoiser, process, lik_x, settings, progress=progress, timings=timings))
        report["floor"] = report.get("floor", {})
    if "nll" in metrics:
        report.update(vector_nll(denoiser, process, lik_x, real, settings, progress=progress, timings=timings))
    if "psnr" in metrics or "ssim" in metrics:
        t0 = time.perf_counter()
        report.update(restoration_report(denoiser, process, floor_x[:n].to(device), settings, metrics))
        timings["restoration_s"] = round(time.perf_counter() - t0, 2)
    report.setdefault("floor", {})
    for key in ("fid", "kid", "precision", "recall"):
        report.setdefault(key, None)
    report["settings"] = settings_out
    report["timings"] = timings
    return report


def check_restoration(process, level: float) -> None:
    """psnr/ssim need a cold-diffusion run and a level in (0, 1]; checked before any sampling starts."""
    if not process.restores:
        raise ValueError(f"psnr and ssim measure restoration by a cold-diffusion run (--process blur, mask, ...); "
                         f"this run's process is {process!r}: ask for fid, kid, pr, is or bpd instead")
    if not 0 < level <= 1:
        raise ValueError(f"--level must lie in (0, 1], got {level}")


def restoration_report(restorer, process, x: Tensor, settings: EvalSettings, metrics: Sequence[str]) -> dict:
    """PSNR / SSIM of held-out images x degraded to ``settings.restore_level`` and restored by a cold
    run (the improved sampler, about ``steps * level`` steps), beside those of the degraded input."""
    from ..sampling.cold import restore
    from .restoration import psnr, ssim

    check_restoration(process, settings.restore_level)
    level = settings.restore_level
    g = torch.Generator(x.device).manual_seed(settings.seed)
    degraded = process.degrade(x, torch.full((len(x),), level, device=x.device, dtype=x.dtype), generator=g)
    with torch.no_grad():
        restored = torch.cat([
            restore(restorer, degraded[i : i + settings.batch], level, process=process, sampler="cold",
                    steps=settings.steps, generator=torch.Generator(x.device).manual_seed(settings.seed + i))
            for i in range(0, len(x), settings.batch)
        ]).clamp(-1, 1)
    out: dict[str, Any] = {"restore_level": level, "restored_items": len(x), "degraded": {}}
    for name, fn in (("psnr", psnr), ("ssim", ssim)):
        if name in metrics:
            out[name] = float(fn(restored, x).mean())
            out["degraded"][name] = float(fn(degraded.clamp(-1, 1), x).mean())
    return out


def _ode_range(process) -> tuple[float, float, float]:
    s_min, s_max = float(process.sigma_min), float(process.sigma_max)
    return s_min, s_max, float(process.prior_std(s_max))


def image_bits_per_dim(denoiser, process, x: Tensor, settings: EvalSettings, *, progress: Progress = _no_progress,
                       timings: dict | None = None) -> dict[str, Any]:
    """Bits/dim of real images by the ODE (any Gaussian model) and by the VLB (discrete VP models)."""
    from ..processes.gaussian import DiscreteVP
    from .likelihood import ode_bits_per_dim, vlb_bits_per_dim

    out: dict[str, Any] = {}
    s_min, s_max, prior = _ode_range(process)
    g = torch.Generator(device=x.device).manual_seed(settings.seed)
    t0 = time.perf_counter()
    update = progress("bits/dim (ODE)", settings.ode_steps)
    bpd = ode_bits_per_dim(denoiser, x, levels=settings.levels, sigma_min=s_min, sigma_max=s_max, prior_std=prior,
                           steps=settings.ode_steps, exact_trace=False, generator=g, callback=lambda k: update(1))
    out["bpd_ode"] = float(bpd.mean())
    out["bpd_ode_se"] = float(bpd.std() / math.sqrt(len(bpd))) if len(bpd) > 1 else None
    if timings is not None:
        timings["bpd_ode_s"] = round(time.perf_counter() - t0, 2)
    if isinstance(process, DiscreteVP):
        t0 = time.perf_counter()
        update = progress("bits/dim (VLB)", process.num_steps - 1)
        with torch.no_grad():
            terms = vlb_bits_per_dim(denoiser, x, process, variance=settings.vlb_variance, levels=settings.levels,
                                     generator=g, callback=lambda k: update(1))
        out["bpd_vlb"] = float(terms["total"].mean())
        out["bpd_vlb_se"] = float(terms["total"].std() / math.sqrt(len(x))) if len(x) > 1 else None
        out["bpd_vlb_terms"] = {k: float(v.mean()) for k, v in terms.items() if k != "total"}
        if timings is not None:
            timings["bpd_vlb_s"] = round(time.perf_counter() - t0, 2)
    else:
        out["bpd_vlb"] = None
        out["bpd_vlb_note"] = "the variational bound needs a discrete VP (DDPM) model"
    out["bpd_items"] = len(x)
    return out


def vector_nll(denoiser, process, x: Tensor, real: Data, settings: EvalSettings, *,
               progress: Progress = _no_progress, timings: dict | None = None) -> dict[str, Any]:
    """Exact NLL in nats of real vectors by the ODE, beside the data's true entropy when known."""
    from .likelihood import ode_log_likelihood

    s_min, s_max, prior = _ode_range(process)
    t0 = time.perf_counter()
    update = progress("NLL (ODE)", settings.ode_steps)
    logp = ode_log_likelihood(denoiser, x, sigma_min=s_min, sigma_max=s_max, prior_std=prior,
                              steps=settings.ode_steps, exact_trace=True, callback=lambda k: update(1))
    out: dict[str, Any] = {"nll": float(-logp.mean()), "nll_se": float(logp.std() / math.sqrt(len(logp))),
                           "nll_items": len(x)}
    dist = getattr(real, "distribution", None)
    if dist is not None:
        out["true_nll"] = float(-dist.log_prob(x.cpu().double()).mean())  # on the same points
        out["true_entropy"] = float(dist.entropy(generator=torch.Generator().manual_seed(settings.seed)))
    if timings is not None:
        timings["nll_s"] = round(time.perf_counter() - t0, 2)
    return out


def sweep(
    denoiser: Denoiser,
    process,
    info: dict,
    real: Data,
    *,
    samplers: Sequence[str],
    steps: Sequence[int],
    settings: EvalSettings,
    device: torch.device,
    progress: Progress = _no_progress,
    decode: Callable[[Tensor], Tensor] | None = None,
    sample_shape: Sequence[int] | None = None,
) -> dict[str, Any]:
    """FID (and KID, precision, recall) against NFE and wall time for each sampler and step count
    (``decode`` and ``sample_shape``: a latent run's, as in ``evaluate``)."""
    from ..sampling import get_sampler, nfe

    for s in samplers:
        get_sampler(s)
    if not steps or min(steps) < 1:
        raise ValueError(f"--steps must be positive integers, got {list(steps)}")
    check_data(real, info)
    ref, floor_x = split_halves(real, settings.seed)
    n = settings.n or len(floor_x)
    if min(len(ref), n) < settings.pr_k + 1:
        raise ValueError(f"too few samples for a sweep: {len(ref)} reference items, --n {n}")
    ext = (load_extractor(settings.features, device=device, data_source=real.source) if info["kind"] == "image"
           else vector_extractor(device))
    ref_f, _, _ = reference_features(ext, ref, source=f"{real.source}|half-A|seed{settings.seed}",
                                     use_cache=settings.use_cache, batch=settings.batch)
    metrics = ("fid", "kid", "pr")
    floor_f, _ = ext(floor_x[:n], batch=settings.batch)
    rows = []
    for s in samplers:
        for k in steps:
            x, seconds = generate_samples(denoiser, process, sample_shape or info["shape"], n, sampler=s, steps=k,
                                          grid=settings.grid, seed=settings.seed, batch=settings.batch,
                                          device=device, progress=progress, decode=decode)
            f, _ = ext(x, batch=settings.batch)
            m = compare(f, ref_f, metrics, settings)
            rows.append({"sampler": s, "steps": k, "nfe": nfe(s, k), "seconds": round(seconds, 2),
                         "fid": m["fid"], "kid": m["kid"], "precision": m["precision"], "recall": m["recall"]})
    return {"rows": rows, "floor": compare(floor_f, ref_f, metrics, settings), "features": ext.label,
            "settings": asdict(settings) | {"n": n, "samplers": list(samplers), "steps": list(steps),
                                            "features": ext.id}}


def sweep_table(result: dict) -> str:
    """A Markdown table of a sweep, with the floor as its last line."""
    lines = ["| sampler | steps | NFE | seconds* | FID | KID (MMD^2) | precision | recall |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['seconds']:.2f} | {r['fid']:.3f} | "
                     f"{r['kid']:.4f} | {r['precision']:.3f} | {r['recall']:.3f} |")
    f = result["floor"]
    lines.append(f"| data floor | | | | {f['fid']:.3f} | {f['kid']:.4f} | {f['precision']:.3f} | {f['recall']:.3f} |")
    lines += ["", f"\\* {WALL_TIME_NOTE}; KID is the {KID_SCALE}."]
    return "\n".join(lines)


WALL_TIME_NOTE = ("seconds: wall time of sampling on this machine, comparable between rows (and runs) only when "
                  "measured on an otherwise idle machine")


def sweep_plot(result: dict, path) -> None:
    """FID against NFE and against wall time, one line per sampler, the floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    samplers = list(dict.fromkeys(r["sampler"] for r in result["rows"]))
    for s in samplers:
        rows = [r for r in result["rows"] if r["sampler"] == s]
        axes[0].plot([r["nfe"] for r in rows], [r["fid"] for r in rows], "o-", label=s)
        axes[1].plot([r["seconds"] for r in rows], [r["fid"] for r in rows], "o-", label=s)
    for ax, xl in zip(axes, ("denoiser evaluations (NFE)", "wall time of sampling (s; comparable on an idle machine)")):
        ax.axhline(result["floor"]["fid"], color="gray", ls="--", label="data floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("FID (" + result["features"].split(" (")[0] + ")")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    n = result["settings"]["n"]
    fig.suptitle(f"sample quality against cost ({n} samples per point)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
