"""``model.kind = prior``: DALL-E 2's prior, a diffusion model over a contrastive encoder's image
embeddings given the caption's text embedding (Ramesh et al. 2022, sec. 2.2).

Its defaults are the paper's and its benchmark's (``benchmarks/unclip.py``): x0-prediction on a
cosine VP schedule, the prior transformer 256 wide (on held-out caption combinations of
builtin:shapes its samples carry the right shape 0.995 of the time, the residual MLP's 0.670),
batches of 256. The data are x = sqrt(E) * image embedding (unit variance per coordinate),
conditioned on the caption's text embedding through the ``embedding`` conditioning kind. A
prior folder opens as a ``runs.Run`` over vectors; ``runs.unclip.Unclip`` chains it with a decoder.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from ..config import Config
from ..data import Data
from ..types import DataInfo
from .base import PrepareContext, TaskContext, contexts_asked, register
from .diffusion import DiffusionKind, DiffusionTask


@register
class PriorKind(DiffusionKind):
    name = "prior"
    config_names = ("prior",)
    help = "DALL-E 2's prior over a contrastive encoder's image embeddings (needs --clip ENCODER)"
    defaults: ClassVar[dict] = {"process.kind": "vp", "process.schedule": "cosine", "objective.prediction": "x0",
                                "model.hidden": 256, "model.prior_net": "transformer", "train.batch_size": 256}

    def check(self, cfg: Config) -> None:
        if not cfg.cond.clip:
            raise ValueError("model.kind=prior diffuses a contrastive encoder's image embeddings: give the encoder "
                             "run with --clip RUN (cond.clip)")
        used = [k for k in contexts_asked(cfg) if k != "cond.clip"] + (["data.latent"] if cfg.data.latent else [])
        if used:
            raise ValueError(f"model.kind=prior is conditioned on the encoder's text embedding alone, but "
                             f"{', '.join(used)} asks for more: drop it")

    def embeddings(self, cfg: Config, data: Data, ctx: PrepareContext, recorded):
        """(encoder, vectors sqrt(E) * image embedding with each caption's text embedding)."""
        from ..pipelines.unclip import prior_training_data

        return prior_training_data(data, cfg.cond.clip, device=ctx.device, recorded=recorded, cache=ctx.out,
                                   say=ctx.say)

    def encoder_record(self, enc):
        return enc.record(for_prior=True)

    def embedding_words(self, cfg: Config) -> tuple[str, str]:
        return (f"the caption embeddings of the encoder {cfg.cond.clip}",
                "prompts through `unblur sample DECODER --prior`")

    def build_net(self, cfg: Config, info: DataInfo) -> nn.Module:
        """The prior transformer (``model.prior_net=transformer``) or the residual MLP with an embedding input."""
        from ..conditioning.embedding import embedding_dim
        from ..nets import MLPConfig, MLPDenoiserNet

        if info.kind == "image":
            raise ValueError("model.kind=prior diffuses embeddings; its data are the encoder's image embeddings")
        m = cfg.model
        embed_scale = 250.0 if cfg.process.kind == "edm" else 1.0
        if m.prior_net == "transformer":
            from ..nets.prior import PriorTransformerConfig, PriorTransformerNet

            heads = next(h for h in range(max(1, m.hidden // 64), 0, -1) if m.hidden % h == 0)  # 64-wide heads
            return PriorTransformerNet(PriorTransformerConfig(
                dim=info.shape[0], cond_dim=embedding_dim(info), width=m.hidden, layers=m.depth, heads=heads,
                noise_embed_scale=embed_scale, dropout=m.dropout))
        return MLPDenoiserNet(MLPConfig(dim=info.shape[0], hidden=m.hidden, depth=m.depth, dropout=m.dropout,
                                        noise_embed_scale=embed_scale, cond_dim=embedding_dim(info)))

    def task(self, ctx: TaskContext) -> PriorTask:
        return PriorTask(ctx)


class PriorTask(DiffusionTask):
    def describe(self, how: str) -> str:
        from ..nets import count_parameters

        net, m = self.ctx.net, self.cfg.model
        params = f"{count_parameters(net) / 1e6:.2f} M parameters"
        if m.prior_net == "transformer":
            c = net.cfg
            return (f"model: prior transformer, width {c.width}, {c.layers} layers, {c.heads} heads; {params}; set "
                    "model.hidden, model.depth to choose")
        return super().describe(how)
