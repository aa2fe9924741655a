"""The image kind: ``"image"`` (B, C, H, W), a low-resolution copy resized to the model's size
and concatenated to its input channels (super-resolution); zeros are the null. Turned on by
``cond.image``. On a latent run the copy is made from the images and resized to the latent grid
(C image channels beside the latent channels), and ``--image`` is read at that size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import Config
from ..utils import choice_error
from .base import Items, Kind, Requests, register
from .contexts import make_lowres

IMAGE_CONDITIONS = ("none", "superres")


class LowresItems(Items):
    """The low-resolution copies (N, C, H, W) of a data set's images, on the device."""

    guides = False  # an image alone is sampled without guidance by default

    def __init__(self, lowres: Tensor) -> None:
        self.lowres, self.info = lowres, {}

    def __len__(self) -> int:
        return len(self.lowres)

    def items(self, idx: Tensor) -> dict[str, Tensor]:
        return {"image": self.lowres[idx]}  # (B, C, H, W)


class ImageRequests(Requests):
    """One conditioning image file for every sample of the request."""

    conditional = True

    def __init__(self, path: str | Path, image: Tensor) -> None:
        self.path, self.image = path, image  # (1, C, H, W) on the device

    def cond(self, reqs: list[dict], device: torch.device) -> dict[str, Tensor]:
        return {"image": self.image.to(device).expand(len(reqs), -1, -1, -1)}  # (B, C, H, W)

    def record(self, req: dict) -> dict[str, Any]:
        return {"image": str(self.path)}


@register
class ImageKind(Kind):
    name = "image"
    keys = ("image",)
    options = ("image",)
    flag = "--image"
    off = "takes no image (cond.image=none)"

    def enabled(self, cfg: Config) -> bool:
        if cfg.cond.image not in IMAGE_CONDITIONS:
            raise choice_error("cond.image", cfg.cond.image, IMAGE_CONDITIONS)
        return cfg.cond.image == "superres"

    def unet_changes(self, cfg: Config, data_info, ucfg) -> dict[str, Any]:
        latent = data_info.get("latent")  # a latent run: the image's own channels beside the latents
        return {"image_cond_channels": int(latent["image_shape"][0]) if latent else ucfg.in_channels}

    def items(self, cfg: Config, data, out: str | Path, device: torch.device, *, progress: bool) -> LowresItems:
        if data.kind != "image":
            raise ValueError(f"cond.image=superres needs image data, but {data.source!r} is {data.kind} data: "
                             "use an image folder or a built-in image set, or set cond.image=none")
        if data.pixels is not None:  # a latent run: the low-resolution image, on the latent grid
            import torch.nn.functional as F

            low = make_lowres(data.pixels, cfg.cond.superres_factor)
            low = F.interpolate(low, size=tuple(data.x.shape[-2:]), mode="area")
            return LowresItems(low.to(device))
        return LowresItems(make_lowres(data.x, cfg.cond.superres_factor).to(device))

    def requests(self, cfg: Config, info, device: torch.device, asked: dict[str, Any], *,
                 run: str) -> ImageRequests | None:
        path = asked.get("image")
        if path is None:
            return None
        from ..images import read_image

        C, H, W = info["shape"]
        latent = info.get("latent")
        if latent:  # the image's channels, at the latent grid's size
            C = int(latent["image_shape"][0])
        image = read_image(path, channels=C, size=(H, W), option="--image")  # (C, H, W) in [-1, 1]
        return ImageRequests(path, image[None].to(device))
