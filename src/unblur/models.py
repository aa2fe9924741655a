"""Build the process, the network and its denoiser from a Config and the data's description."""

from __future__ import annotations

import dataclasses

from torch import nn

from .config import Config
from .precond import EDMPrecond, Precond, VPPrecond
from .processes.cold import COLD_PROCESSES, ColdPrecond, ColdProcess, build_cold_process
from .processes.gaussian import DiscreteVP, EDMProcess, GaussianProcess
from .utils import choice_error

PROCESSES = ("edm", "vp", *COLD_PROCESSES)
MODELS = ("auto", "unet", "mlp")


def build_process(cfg: Config, data_info: dict | None = None) -> GaussianProcess | ColdProcess:
    p = cfg.process
    if p.kind in COLD_PROCESSES:  # cold diffusion; data_info gives the image shape and the start statistics
        info = data_info or {}
        return build_cold_process(p, shape=info.get("shape"), start_stats=info.get("cold_start"))
    if p.kind == "edm":
        return EDMProcess(sigma_min=p.sigma_min, sigma_max=p.sigma_max,
                          sigma_data=0.5 if p.sigma_data is None else p.sigma_data)
    if p.kind == "vp":
        return DiscreteVP(p.schedule, p.num_steps, zero_terminal_snr=p.zero_terminal_snr)
    raise choice_error("process", p.kind, PROCESSES)


def data_info_of(data) -> dict:
    """What a run must remember about its data to build and sample the same network."""
    info = {"kind": data.kind, "source": str(data.source), "num_items": len(data)}
    if data.kind == "image":
        info["shape"] = [data.channels, *data.image_size]
    else:
        info["shape"] = [data.dim]
    info["class_names"] = list(data.class_names) if data.class_names else None
    return info


def build_net(cfg: Config, data_info: dict) -> nn.Module:
    from .nets import MLPConfig, MLPDenoiserNet, default_unet_config

    m = cfg.model
    kind = m.kind
    if kind not in MODELS:
        raise choice_error("model kind", kind, MODELS)
    is_image = data_info["kind"] == "image"
    if kind == "auto":
        kind = "unet" if is_image else "mlp"
    if kind == "unet" and not is_image:
        raise ValueError(f"model.kind=unet needs image data, but {data_info['source']!r} holds vectors: use mlp")
    if kind == "mlp" and is_image:
        raise ValueError(f"model.kind=mlp needs vector data, but {data_info['source']!r} holds images: use unet")
    # EDM feeds c_noise = log(sigma) / 4 (about -1.6 to 1.1); spread it over the sinusoids'
    # periods as a timestep index 0..999 would be.
    embed_scale = 250.0 if cfg.process.kind == "edm" else 1.0
    if kind == "mlp":
        return MLPDenoiserNet(MLPConfig(dim=data_info["shape"][0], hidden=m.hidden, depth=m.depth,
                                        dropout=m.dropout, noise_embed_scale=embed_scale))
    C, H, W = data_info["shape"]
    ucfg = default_unet_config(size=(H, W), channels=C)
    overrides = {
        k: getattr(m, k)
        for k in ("base_channels", "channel_mult", "num_res_blocks", "attn_resolutions")
        if getattr(m, k) is not None
    }
    if "base_channels" in overrides:
        overrides["norm_groups"] = min(32, overrides["base_channels"])
    ucfg = dataclasses.replace(ucfg, dropout=m.dropout, noise_embed_scale=embed_scale, **overrides)
    from .conditioning import condition_net

    return condition_net(cfg, data_info, ucfg)


def build_denoiser(cfg: Config, net: nn.Module, process: GaussianProcess | ColdProcess) -> Precond | ColdPrecond:
    if isinstance(process, ColdProcess):
        return ColdPrecond(net, process)
    if isinstance(process, EDMProcess):
        return EDMPrecond(net, process.sigma_data)
    if isinstance(process, DiscreteVP):
        return VPPrecond(net, process, cfg.objective.prediction)
    raise ValueError(f"no preconditioning for {process!r}")


DISCRETE_GRIDS = ("leading", "trailing", "linspace", "ddim", "full")


def sampling_grid(cfg: Config, override: str | None = None) -> str:
    """The grid a run samples on: ``override`` (a command-line ``--grid``) or ``sample.grid``.

    ``auto`` is trailing timesteps for a discrete VP model (Karras' rho-grid, made for EDM's
    sigma range, starts too coarse on a linear-beta schedule at 10 steps and fewer) and
    Karras otherwise. A run's saved discrete spacing falls back to Karras on a continuous
    process, where timestep spacings have no meaning.
    """
    if override:
        return override
    g = cfg.sample.grid
    vp = cfg.process.kind == "vp"
    if g == "auto":
        return "trailing" if vp else "karras"
    return g if vp or g not in DISCRETE_GRIDS else "karras"
