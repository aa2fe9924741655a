"""JPEG compression whose quality falls from 100 at t = 0 to 5 at t = 1."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .base import Degradation


@dataclass(frozen=True, kw_only=True)
class Jpeg(Degradation):
    """x_t = J(x0, q(t)): each image quantised to 8 bits, encoded as an in-memory JPEG of
    quality q(t) = round(100 - 95 t) (libjpeg's scale of the quantisation tables; 4:4:4, so that
    the quality alone sets the loss) through Pillow, decoded and mapped back to [-1, 1].
    Deterministic, one or three channels, any size; no image-free start."""

    name = "jpeg"
    restore_sampler = "one-shot"  # see Degradation: the cold walk adds JPEG artefacts at every step

    def check_shape(self, shape: tuple[int, ...], *, for_model: bool) -> None:
        if shape[0] not in (1, 3):
            raise ValueError(f"jpeg compresses grey or RGB images, but the data has {shape[0]} channel(s): "
                             "use --set data.channels=1 or 3")

    @staticmethod
    def quality(t: Tensor) -> list[int]:
        """The JPEG quality q(t) = round(100 - 95 t) of each level t (B,)."""
        return [round(100 - 95 * float(v)) for v in t.tolist()]

    def degrade(self, x0: Tensor, t: Tensor, layer: Tensor | None = None) -> Tensor:
        from PIL import Image

        self.check_shape(tuple(x0.shape[1:]), for_model=False)
        u8 = ((x0.detach().to(torch.float64).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        pixels = u8.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C)
        out = []
        for img, q in zip(pixels, self.quality(t)):
            buf = io.BytesIO()
            pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)  # mode L or RGB
            pil.save(buf, format="JPEG", quality=q, subsampling=0)
            buf.seek(0)
            out.append(np.asarray(Image.open(buf).convert(pil.mode)).reshape(img.shape))
        y = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)  # (B, C, H, W) uint8
        return y.to(device=x0.device, dtype=t.dtype) / 127.5 - 1
