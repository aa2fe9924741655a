"""Restoration metrics, PSNR and SSIM per image: ``unblur.quality``, named here for eval's callers."""

from ..quality import psnr, ssim

__all__ = ["psnr", "ssim"]
