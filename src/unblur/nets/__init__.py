"""The networks: an ADM U-Net for images and a residual MLP for vectors (the ``Net`` contract).

>>> net = UNet(default_unet_config(size=(32, 32), channels=3))
>>> out = net(x_in, c_noise, {"class": labels})  # (B, 3, 32, 32)
"""

from .autoencoder_kl import AutoencoderKL as AutoencoderKL
from .build import NETS, build_net, config_from_dict, count_parameters, forward_flops
from .mlp import MLPConfig, MLPDenoiserNet
from .taesd import AutoencoderTiny as AutoencoderTiny
from .unet import UNet, UNetConfig, default_unet_config

__all__ = [
    "NETS",
    "MLPConfig",
    "MLPDenoiserNet",
    "UNet",
    "UNetConfig",
    "build_net",
    "config_from_dict",
    "count_parameters",
    "default_unet_config",
    "forward_flops",
]
