"""Multi-stage models: an autoencoder opened as one object for latent diffusion (encode images to
scaled latents, decode them back), whether it is an unblur autoencoder run or a diffusers folder.

>>> ae = load_autoencoder("runs/ae")          # or a diffusers AutoencoderKL / AutoencoderTiny folder
>>> z = ae.encode(x)                          # x (B, C, H, W) in [-1, 1] -> (B, latent, H / f, W / f), unit scale
>>> x_hat = ae.decode(z)                      # (B, C, H, W) in [-1, 1]
"""

from .autoencoder import LoadedAutoencoder, load_autoencoder

__all__ = ["LoadedAutoencoder", "load_autoencoder"]
