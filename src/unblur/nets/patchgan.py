"""A small PatchGAN discriminator (Isola et al. 2017, pix2pix; as in the VQGAN and latent-diffusion
autoencoders): stride-2 4x4 convolutions with LeakyReLU, then 3x3 ones down to one logit per patch.

>>> d = PatchDiscriminator(channels=3, width=32, layers=2)
>>> logits = d(x)  # x (B, 3, H, W) in [-1, 1] -> (B, 1, H / 4, W / 4), one real/fake logit per patch
"""

from __future__ import annotations

import math

from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """``layers`` stride-2 convolutions (width doubling up to 8x ``width``), a 3x3 convolution and a
    3x3 projection to one logit: (B, C, H, W) -> (B, 1, H / 2^layers, W / 2^layers).

    GroupNorm stands where pix2pix has BatchNorm (after every convolution but the first), so a
    patch's logit does not depend on the other images of its batch. No weights are downloaded.
    """

    def __init__(self, channels: int, *, width: int = 32, layers: int = 2) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"the discriminator needs at least one stride-2 layer, got {layers}")
        widths = [min(width * 2**i, width * 8) for i in range(layers + 1)]
        mods: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for i in range(1, layers):
            mods += [nn.Conv2d(widths[i - 1], widths[i], 4, stride=2, padding=1), _norm(widths[i]), nn.LeakyReLU(0.2)]
        mods += [nn.Conv2d(widths[layers - 1], widths[layers], 3, padding=1), _norm(widths[layers]), nn.LeakyReLU(0.2),
                 nn.Conv2d(widths[layers], 1, 3, padding=1)]
        self.layers = layers
        self.net = nn.Sequential(*mods)
        for m in self.modules():  # pix2pix's initialisation: N(0, 0.02) weights
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, 1, H / 2^layers, W / 2^layers)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, 8), channels)  # 8 groups where the width allows
