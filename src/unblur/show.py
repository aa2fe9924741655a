"""Pictures of the process: forward degradation strips, sampling trajectories, the 2-D toy
figure and training curves, as PNG and GIF.

The forward strip takes any degradation ``degrade(x0, t) -> x_t`` with t in [0, 1] of shape
(B,): the Gaussian processes and the cold degradations are registered in ``DEGRADATIONS``
here, and others join with ``register_degradation(name, factory)``, where ``factory(device)
-> degrade``. A degradation that mixes in images of a data set (blend) is registered in
``PARTNER_DEGRADATIONS`` as ``factory(partners) -> degrade``, partners (N, C, H, W).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from .images import grid_scale, make_grid
from .types import StepInfo
from .utils import atomic_write_bytes, choice_error, read_jsonl

Degrade = Callable[[Tensor, Tensor], Tensor]
"""``degrade(x0, t) -> x_t``: x0 (B, ...) in [-1, 1], t (B,) in [0, 1], degrade(x0, 0) == x0."""

DEGRADATIONS: dict[str, Callable[[torch.device], Degrade]] = {}
PARTNER_DEGRADATIONS: dict[str, Callable[[Tensor], Degrade]] = {}  # name -> factory(partner images)


def register_degradation(name: str, factory: Callable[[torch.device], Degrade]) -> None:
    """Make ``unblur show forward --process NAME`` use ``factory(device)``'s degrade function."""
    DEGRADATIONS[name] = factory


def process_degrade(process, *, seed: int = 0) -> Degrade:
    """A process's forward picture ``process.picture(x0, t)`` as a Degrade, its randomness fixed
    by ``seed`` (the same noise, snow or partner image at every t)."""

    def degrade(x0: Tensor, t: Tensor) -> Tensor:
        return process.picture(x0, t, torch.Generator(x0.device).manual_seed(seed))

    return degrade


def _register_processes() -> None:
    from .processes.cold import COLD_PROCESSES, ColdProcess
    from .processes.gaussian import DiscreteVP, EDMProcess

    register_degradation("vp", lambda device: process_degrade(DiscreteVP("linear", 1000)))
    register_degradation("vp-cosine", lambda device: process_degrade(DiscreteVP("cosine", 1000)))
    register_degradation("edm", lambda device: process_degrade(EDMProcess()))
    for kind in COLD_PROCESSES:
        if kind != "blend":
            register_degradation(kind, lambda device, kind=kind: process_degrade(ColdProcess(kind=kind)))
    PARTNER_DEGRADATIONS["blend"] = lambda partners: process_degrade(ColdProcess(kind="blend", others=partners))


_register_processes()


def get_degrade(name: str, device: torch.device | str = "cpu", *, partners: Tensor | None = None) -> Degrade:
    """The degradation ``name`` shows; one of ``PARTNER_DEGRADATIONS`` mixes in ``partners`` (N, C, H, W)."""
    check_degradation(name)
    if name in PARTNER_DEGRADATIONS:
        if partners is None or not len(partners):
            raise ValueError(f"{name} mixes each image with another image of a data set: give the images to mix "
                             "in (unblur show forward --data D uses other images of D)")
        return PARTNER_DEGRADATIONS[name](partners)
    return DEGRADATIONS[name](torch.device(device))


def check_degradation(name: str) -> None:
    """Refuse a name that is in neither registry, with the nearest one."""
    if name not in DEGRADATIONS and name not in PARTNER_DEGRADATIONS:
        raise choice_error("process to show", name, [*DEGRADATIONS, *PARTNER_DEGRADATIONS])


# -- pictures -----------------------------------------------------------------------------


def _white(mode: str) -> int | tuple[int, int, int]:
    return 255 if mode == "L" else (255, 255, 255)


def _label_strip(img: Image.Image, labels: Sequence[str], cell_w: int, pad: int, height: int = 14,
                 left: int = 0) -> Image.Image:
    """Put one text label above each column of a strip (whose columns start ``left`` pixels in)."""
    out = Image.new(img.mode, (img.width, img.height + height), _white(img.mode))
    out.paste(img, (0, height))
    draw = ImageDraw.Draw(out)
    for j, text in enumerate(labels):
        draw.text((left + pad + j * (cell_w + pad) + 2, 1), text, fill=0 if img.mode == "L" else (0, 0, 0))
    return out


def _label_rows(img: Image.Image, labels: Sequence[str], cell_h: int, pad: int) -> Image.Image:
    """Put one text label left of each row of a grid; the margin fits the longest label."""
    draw = ImageDraw.Draw(img)
    width = int(max(draw.textlength(text) for text in labels)) + 6
    out = Image.new(img.mode, (img.width + width, img.height), _white(img.mode))
    out.paste(img, (width, 0))
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(labels):
        draw.text((2, pad + i * (cell_h + pad) + cell_h // 2 - 5), text, fill=0 if img.mode == "L" else (0, 0, 0))
    return out


def forward_strip(x0: Tensor, degrade: Degrade, ts: Sequence[float], *, scale: int | None = None) -> Image.Image:
    """Rows: images; columns: degrade(x0, t) for t in ``ts``, labelled with t."""
    B = len(x0)
    cols = [degrade(x0, torch.full((B,), float(t), device=x0.device)).clamp(-1, 1).cpu() for t in ts]
    tiles = torch.stack(cols, 1).reshape(B * len(ts), *x0.shape[1:])  # (B * T, C, H, W), row-major
    scale = scale or grid_scale(x0.shape[-2])
    img = make_grid(tiles, nrow=len(ts), scale=scale)
    return _label_strip(img, [f"t={t:.2f}" for t in ts], x0.shape[-1] * scale, 2 * scale)


def forward_frame(x0: Tensor, degrade: Degrade, t: float) -> Image.Image:
    """One animation frame: every image of x0 side by side at level t, labelled."""
    xt = degrade(x0, torch.full((len(x0),), float(t), device=x0.device)).clamp(-1, 1).cpu()
    img = make_grid(xt, nrow=len(x0), scale=grid_scale(x0.shape[-2]))
    return _label_strip(img, [f"t={t:.2f}"], img.width, 2)


def save_gif(frames: Sequence[Image.Image], path: str | Path, *, ms: int = 120, hold_last: int = 8) -> None:
    """An animated GIF (looping), with the last frame held a little longer."""
    frames = list(frames) + [frames[-1]] * hold_last
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=ms, loop=0)
    atomic_write_bytes(path, buf.getvalue())


@torch.no_grad()
def record_trajectory(run, plan, *, n: int, seed: int) -> tuple[list[StepInfo], Tensor]:
    """Sample ``n`` items from a ``Run`` with ``plan`` and keep every StepInfo (x, x0_hat, sigma) on the CPU."""
    from .utils import seeded_generators

    infos: list[StepInfo] = []

    def keep(info: StepInfo) -> None:
        infos.append(StepInfo(info.step, info.total, info.x.float().cpu(), info.sigma.cpu(), info.sigma_next.cpu(),
                              info.x0_hat.float().cpu()))

    gens = seeded_generators(range(seed, seed + n), device=run.device)
    x = run.generate(n, plan=plan, generator=gens, callback=keep)
    if getattr(run, "latent", None) is not None:  # a latent run's trajectory, decoded at every step
        infos = [_decoded(run, i) for i in infos]
        x = run.decode(x)
    return infos, x.float().cpu()


def _decoded(run, info: StepInfo) -> StepInfo:
    """A latent run's step with x0_hat decoded, and x_t decoded as the VP model sees it (x / sqrt(1 +
    sigma^2)), stored so that ``_vp_view`` shows exactly that decoded picture."""
    s = float(info.sigma_next)
    x = run.decode(_vp_view(info.x, s)).float().cpu() * math.sqrt(1 + s * s)
    return StepInfo(info.step, info.total, x, info.sigma, info.sigma_next, run.decode(info.x0_hat).float().cpu())


def _vp_view(x: Tensor, sigma: float) -> Tensor:
    """A VE-scale state shown as the VP model sees it: x / sqrt(1 + sigma^2)."""
    return x / math.sqrt(1 + sigma**2)


def trajectory_pictures(infos: list[StepInfo], *, columns: int = 8) -> tuple[Image.Image, list[Image.Image]]:
    """A strip (per sample: a row of x_t, a row of x0_hat, over ``columns`` evenly spaced
    steps, each row labelled on the left with what it shows and the sample's index) and
    animation frames ([x_t | x0_hat] grids at every step)."""
    total = len(infos)
    pick = sorted({round(i) for i in np.linspace(0, total - 1, min(columns, total))})
    n = len(infos[0].x)
    H = infos[0].x.shape[-2]
    scale = grid_scale(H)
    rows = []
    for b in range(n):
        rows.append(torch.stack([_vp_view(infos[i].x[b], float(infos[i].sigma_next)) for i in pick]))
        rows.append(torch.stack([infos[i].x0_hat[b] for i in pick]))
    tiles = torch.cat(rows).clamp(-1, 1)  # (2n * len(pick), C, H, W)
    strip = make_grid(tiles, nrow=len(pick), scale=scale)
    strip = _label_rows(strip, [f"{what} #{b}" for b in range(n) for what in ("x_t", "x0_hat")], H * scale,
                        2 * scale)
    margin = strip.width - (len(pick) * (infos[0].x.shape[-1] + 2) + 2) * scale
    labels = [f"{i + 1}/{total} s={float(infos[i].sigma_next):.2g}" for i in pick]
    strip = _label_strip(strip, labels, infos[0].x.shape[-1] * scale, 2 * scale, left=margin)
    frames = []
    for info in infos:
        left = make_grid(_vp_view(info.x, float(info.sigma_next)).clamp(-1, 1), scale=scale)
        right = make_grid(info.x0_hat.clamp(-1, 1), scale=scale)
        frame = Image.new(left.mode, (left.width + right.width + 8, left.height + 14), _white(left.mode))
        frame.paste(left, (0, 14))
        frame.paste(right, (left.width + 8, 14))
        ImageDraw.Draw(frame).text((2, 1), f"step {info.step + 1}/{info.total}  x_t | x0_hat",
                                   fill=0 if left.mode == "L" else (0, 0, 0))
        frames.append(frame)
    return strip, frames


def labelled_grid(x: Tensor, nrow: int, labels: Sequence[str], *, scale: int | None = None) -> Image.Image:
    """A grid of images (B, C, H, W) in [-1, 1], ``nrow`` per row, each row labelled on the left."""
    scale = scale or grid_scale(x.shape[-2])
    img = make_grid(x.float().clamp(-1, 1), nrow=nrow, scale=scale)
    return _label_rows(img, list(labels), x.shape[-2] * scale, 2 * scale)


def edit_strip(x: Tensor, mask: Tensor | None, infos: list[StepInfo], out: Tensor, *, columns: int = 4,
               labels: Sequence[str] | None = None) -> Image.Image:
    """One row per edited image: the input, its mask (the kept pixels dimmed, the regenerated
    ones light grey), ``columns`` of the x0_hat estimates at evenly spaced steps, and the output.

    ``x`` (B, C, H, W) the inputs (the canvas, for outpainting), ``mask`` (B or 1, 1, H, W) or
    None, ``infos`` every step's StepInfo of the edit of the B images together, ``out`` the
    results.
    """
    B, C = x.shape[:2]
    total = len(infos)
    pick = sorted({round(i) for i in np.linspace(0, total - 1, min(columns, total))}) if total else []
    # The mask column: the kept pixels dimmed, the regenerated ones a flat light grey.
    dim = x.cpu().float() * 0.5 - 0.5
    m = dim if mask is None else torch.where(mask.cpu().bool().expand(B, 1, *x.shape[-2:]), 0.4, dim)
    rows = [torch.stack([x[b].cpu(), m[b], *[infos[i].x0_hat[b].cpu() for i in pick], out[b].cpu()])
            for b in range(B)]
    scale = grid_scale(x.shape[-2])
    img = make_grid(torch.cat(rows).float().clamp(-1, 1), nrow=len(pick) + 3, scale=scale)
    head = ["input", "mask", *[f"x0_hat {i + 1}/{total}" for i in pick], "output"]
    img = _label_strip(img, head, x.shape[-1] * scale, 2 * scale)
    if labels:
        img = _label_rows(img, list(labels), x.shape[-2] * scale, 2 * scale)
    return img


def _fig_to_image(fig) -> Image.Image:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


@torch.no_grad()
def toy_figure(denoiser, process, data_x: Tensor, samples: Tensor, *, sigmas: Sequence[float] = (0.1, 0.4, 1.0, 3.0),
               field_sigmas: Sequence[float] = (0.05, 0.2, 0.5, 2.0), lim: float | None = None,
               device: torch.device | str = "cpu", seed: int = 0):
    """The classic 2-D picture: data, noised marginals, the learned denoising field, samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = data_x.double().cpu()
    lim = lim or float(np.percentile(data.abs().numpy(), 99.5)) * 1.25
    ncol = max(len(sigmas), len(field_sigmas)) + 1
    fig, ax = plt.subplots(2, ncol, figsize=(3.1 * ncol, 6.4))
    g = torch.Generator().manual_seed(seed)

    def scatter(a, pts, title, color):
        pts = pts.cpu().numpy()
        a.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.35, color=color, linewidths=0)
        a.set_title(title, fontsize=9)

    scatter(ax[0, 0], data, "data x0", "tab:blue")
    for j, s in enumerate(sigmas):
        noisy = (data + s * torch.randn(data.shape, generator=g, dtype=data.dtype)) / math.sqrt(1 + s * s)
        scatter(ax[0, j + 1], noisy, f"noised, sigma={s:g}\n(x0 + sigma n) / sqrt(1+sigma^2)", "tab:gray")
    k = 21
    u = torch.linspace(-lim, lim, k, dtype=torch.float64)
    gx, gy = torch.meshgrid(u, u, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1).float().to(device)  # (k*k, 2)
    for j, s in enumerate(field_sigmas):
        sig = torch.full((len(pts),), float(s), device=device)
        d = (denoiser(pts, sig, None) - pts).double().cpu()  # the denoising direction x0_hat - x
        mag = d.norm(dim=1).clamp(min=1e-12)
        unit = d / mag[:, None] * (0.85 * 2 * lim / (k - 1))  # equal lengths: direction only
        a = ax[1, j]
        scatter(a, data, "", "tab:blue")
        a.quiver(pts[:, 0].cpu(), pts[:, 1].cpu(), unit[:, 0], unit[:, 1], mag.log().numpy(), angles="xy",
                 scale_units="xy", scale=1.0, width=0.005, cmap="viridis")
        a.set_title(f"learned field D(x, sigma) - x, sigma={s:g}\n(direction; colour: log length)", fontsize=9)
    scatter(ax[1, -1], samples.double(), f"{len(samples)} samples", "tab:red")
    for a in ax.flat:
        a.set_xlim(-lim, lim)
        a.set_ylim(-lim, lim)
        a.set_aspect("equal")
        a.tick_params(labelsize=7)
    for j in range(len(field_sigmas), ncol - 1):
        ax[1, j].axis("off")
    fig.suptitle("a simple distribution (top right: nearly Gaussian) carried into the data by the learned denoiser",
                 fontsize=10)
    fig.tight_layout()
    img = _fig_to_image(fig)
    plt.close(fig)
    return img


def toy_frames(infos: list[StepInfo], lim: float, size: int = 360) -> list[Image.Image]:
    """Animation frames of 2-D samples moving from the prior to the data (VP view)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = []
    for info in infos:
        fig, a = plt.subplots(figsize=(size / 90, size / 90))
        p = _vp_view(info.x, float(info.sigma_next)).numpy()
        a.scatter(p[:, 0], p[:, 1], s=2, alpha=0.4, color="tab:red", linewidths=0)
        a.set_xlim(-lim, lim)
        a.set_ylim(-lim, lim)
        a.set_aspect("equal")
        a.set_title(f"step {info.step + 1}/{info.total}, sigma={float(info.sigma_next):.3g}", fontsize=9)
        a.tick_params(labelsize=7)
        fig.tight_layout()
        frames.append(_fig_to_image(fig).convert("P", palette=Image.ADAPTIVE))
        plt.close(fig)
    return frames


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.exists():
        raise ValueError(f"no metrics file {str(path)!r}: give a run folder written by `unblur train`")
    records = read_jsonl(path)
    if not records:
        raise ValueError(f"{path} holds no records yet: train for at least log_every steps")
    return records


def curves_figure(records: list[dict], *, title: str = ""):
    """One panel per logged quantity against the optimizer step (loss log-scaled, with a moving average)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skip = {"step", "nimg", "time"}
    keys = [k for k in dict.fromkeys(k for r in records for k in r)
            if k not in skip and any(isinstance(r.get(k), (int, float)) for r in records)]
    keys = sorted(keys, key=lambda k: (k != "loss", k))
    ncol = min(3, len(keys)) or 1
    nrow = math.ceil(len(keys) / ncol) or 1
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.0 * nrow), squeeze=False)
    for a, k in zip(axes.flat, keys):
        pts = [(r["step"], r[k]) for r in records if isinstance(r.get(k), (int, float)) and "step" in r]
        steps_, vals = np.array([p[0] for p in pts]), np.array([p[1] for p in pts], dtype=float)
        a.plot(steps_, vals, lw=0.8, alpha=0.5 if k == "loss" else 1.0, label=k)
        if k == "loss" and len(vals) >= 8:
            w = max(2, len(vals) // 20)
            smooth = np.convolve(vals, np.ones(w) / w, mode="valid")
            a.plot(steps_[w - 1 :], smooth, lw=1.6, color="black", label=f"moving mean ({w})")
            a.legend(fontsize=7)
        if k in ("loss", "lr", "grad_norm") and (vals > 0).all():
            a.set_yscale("log")
        a.set_title(k, fontsize=10)
        a.set_xlabel("step", fontsize=8)
        a.grid(True, alpha=0.3)
    for a in list(axes.flat)[len(keys) :]:
        a.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    img = _fig_to_image(fig)
    plt.close(fig)
    return img
