"""unblur: diffusion models in PyTorch, Gaussian and cold, on a laptop CPU or many GPUs."""

__version__ = "0.1.0"
