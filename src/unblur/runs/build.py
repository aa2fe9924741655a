"""Build a run's process, network and denoiser from its Config and data description."""

from __future__ import annotations

import dataclasses

from torch import nn

from ..config import Config
from ..precond import ColdPrecond, ContinuousVPPrecond, EDMPrecond, VPPrecond
from ..processes.cold import COLD_PROCESSES, build_cold_process
from ..processes.gaussian import DiscreteVP, EDMProcess
from ..types import DataInfo, Denoiser, Process
from ..utils import choice_error

PROCESSES = ("edm", "vp", *COLD_PROCESSES)
MODELS = ("auto", "unet", "mlp", "autoencoder", "clip", "prior")


def build_process(cfg: Config, data_info: DataInfo | None = None) -> Process:
    """The forward process of ``cfg.process``; a cold process takes the image shape, the blend
    partner images and the fitted start statistics from the data."""
    p, o = cfg.process, cfg.objective
    if p.kind == "edm":
        return EDMProcess(sigma_min=p.sigma_min, sigma_max=p.sigma_max,
                          sigma_data=0.5 if p.sigma_data is None else p.sigma_data, p_mean=o.p_mean, p_std=o.p_std)
    if p.kind == "vp":
        return DiscreteVP(p.schedule, p.num_steps, zero_terminal_snr=p.zero_terminal_snr)
    if p.kind not in COLD_PROCESSES:
        raise choice_error("process", p.kind, PROCESSES)
    shape = data_info.shape if data_info is not None else None
    others = blend_images(p.blend_data, shape) if p.blend_data and p.kind == "blend" else None
    start = data_info.cold_start if data_info is not None else None
    return build_cold_process(p, shape=shape, start_stats=start, others=others)


def blend_images(source: str, shape: tuple[int, ...] | None):
    """The second data set of the blend process, at the model's image shape (C, H, W)."""
    from ..data import load_data

    if shape is None or len(shape) != 3:
        raise ValueError("the blend process needs the model's image shape to load its second data set")
    C, H, W = shape
    x = load_data(source, size=(H, W), channels=C).x
    if x.ndim != 4:
        raise ValueError(f"--blend-data {source!r} holds vectors, not images")
    return x


def data_info_of(data) -> DataInfo:
    """What a run must remember about its data to build and sample the same network."""
    import hashlib

    shape = (data.channels, *data.image_size) if data.kind == "image" else (data.dim,)
    digest = hashlib.sha256(data.x.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
    return DataInfo(kind=data.kind, shape=tuple(shape), source=str(data.source), num_items=len(data),
                    class_names=tuple(data.class_names) if data.class_names else None, fingerprint=digest)


def build_net(cfg: Config, data_info: DataInfo) -> nn.Module:
    """The raw network (U-Net or MLP) for the data, with the conditioning inputs ``cfg.cond`` asks for;
    for ``model.kind=autoencoder`` the ``AutoencoderKL`` of ``cfg.autoencoder`` and for ``clip`` the
    contrastive ``ClipModel`` (neither a ``Net``); for ``prior`` the MLP with an embedding input or the
    prior transformer (``model.prior_net``)."""
    from ..nets import MLPConfig, MLPDenoiserNet, default_unet_config

    m = cfg.model
    kind = m.kind
    if kind not in MODELS:
        raise choice_error("model kind", kind, MODELS)
    is_image = data_info.kind == "image"
    if kind == "autoencoder":
        if not is_image:
            raise ValueError(f"model.kind=autoencoder needs image data, but {data_info.source!r} holds vectors")
        from ..pipelines.autoencoder import build_autoencoder

        return build_autoencoder(cfg, data_info.shape)
    if kind == "clip":
        from ..pipelines.unclip import build_clip

        return build_clip(cfg, data_info)
    if kind == "prior":  # the residual MLP over sqrt(E)-scaled image embeddings, given the text embedding
        if is_image:
            raise ValueError("model.kind=prior diffuses embeddings; its data are the encoder's image embeddings")
        from ..conditioning.embedding import embedding_dim

        embed_scale = 250.0 if cfg.process.kind == "edm" else 1.0
        if m.prior_net == "transformer":
            from ..nets.prior import PriorTransformerConfig, PriorTransformerNet

            heads = next(h for h in range(max(1, m.hidden // 64), 0, -1) if m.hidden % h == 0)  # 64-wide heads
            return PriorTransformerNet(PriorTransformerConfig(
                dim=data_info.shape[0], cond_dim=embedding_dim(data_info), width=m.hidden, layers=m.depth,
                heads=heads, noise_embed_scale=embed_scale, dropout=m.dropout))
        return MLPDenoiserNet(MLPConfig(dim=data_info.shape[0], hidden=m.hidden, depth=m.depth, dropout=m.dropout,
                                        noise_embed_scale=embed_scale, cond_dim=embedding_dim(data_info)))
    if kind == "auto":
        kind = "unet" if is_image else "mlp"
    if kind == "unet" and not is_image:
        raise ValueError(f"model.kind=unet needs image data, but {data_info.source!r} holds vectors: use mlp")
    if kind == "mlp" and is_image:
        raise ValueError(f"model.kind=mlp needs vector data, but {data_info.source!r} holds images: use unet")
    # EDM feeds c_noise = log(sigma) / 4 (about -1.6 to 1.1); spread it over the sinusoids'
    # periods as a timestep index 0..999 would be.
    embed_scale = 250.0 if cfg.process.kind == "edm" else 1.0
    if kind == "mlp":
        return MLPDenoiserNet(MLPConfig(dim=data_info.shape[0], hidden=m.hidden, depth=m.depth,
                                        dropout=m.dropout, noise_embed_scale=embed_scale))
    C, H, W = data_info.shape
    ucfg = default_unet_config(size=(H, W), channels=C)
    overrides = {
        k: getattr(m, k)
        for k in ("base_channels", "channel_mult", "num_res_blocks", "attn_resolutions")
        if getattr(m, k) is not None
    }
    if "base_channels" in overrides:
        overrides["norm_groups"] = min(32, overrides["base_channels"])
    ucfg = dataclasses.replace(ucfg, dropout=m.dropout, noise_embed_scale=embed_scale, **overrides)
    from ..conditioning import condition_net

    return condition_net(cfg, data_info, ucfg)


# The network -> denoiser wrapper of each preconditioning row a process names (``process.precond``).
PRECONDS = {
    "vp": lambda net, process, cfg: VPPrecond(net, process, cfg.objective.prediction),
    "vp-continuous": lambda net, process, cfg: ContinuousVPPrecond(net, process, cfg.objective.prediction),
    "edm": lambda net, process, cfg: EDMPrecond(net, getattr(process, "sigma_data", 0.5)),
    "cold": lambda net, process, cfg: ColdPrecond(net, process),
}


def build_denoiser(cfg: Config, net: nn.Module, process: Process) -> Denoiser:
    """The network as a Denoiser D(x, level, cond) through its process's preconditioning."""
    return PRECONDS[process.precond](net, process, cfg)


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


def downsampling(net: nn.Module) -> int:
    """The factor a network's input H and W must be multiples of: 2^(levels - 1) for a U-Net."""
    from ..nets import UNet

    return next((2 ** (m.cfg.levels - 1) for m in net.modules() if isinstance(m, UNet)), 1)
